// The replacement phase of scripts/bench.ts (DESIGN §1 journey 4), on its own fresh 3-node
// cluster of the compiled binary whose members are named by DNS (node-a.keel.bench, ...),
// served by a real DNS server over UDP (test/support/dns_server.ts) and re-resolved by
// keel every resolver.refresh (its default unless told otherwise):
//
// 1. load the state: `keys` PUTs of `valueBytes`-byte values (16 clients, to the leader),
//    then a snapshot on every member (POST /admin/snapshot, the leader last), so the state
//    is one snapshot, as after a long run, and no automatic snapshot (which pauses a node
//    for seconds at 100 MB) falls into a measured window;
// 2. steady: 4 closed-loop clients PUT 100-byte values to the leader for `steadyMs`;
// 3. snapshot every member again, so the catch-up ships the latest state;
// 4. kill -9 a follower, wipe its data dir, start an empty host under its name at a new
//    address (127.0.0.247), and once it listens repoint its DNS record there. Measured:
//    - DNS move: the record change -> the leader's /status shows the member resolved to the
//      new address and connected;
//    - catch-up: the empty host's start -> its first /readyz 200; the rate is the state's
//      bytes (keys x valueBytes, values only) / those seconds;
//    - the same 4-client load as in 2, from that start to that /readyz 200.
//
// Timings are reported, never asserted.

import { rmSync } from "node:fs";
import { configDefaults } from "../src/config/parse.ts";
import { TestDnsServer } from "../test/support/dns_server.ts";
import { Cluster, type UnexpectedExit } from "./bench_cluster.ts";
import {
  type BenchMember,
  clusterYaml,
  countInto,
  dnsName,
  fixed,
  httpUrl,
  type LatencySummary,
  sumCounts,
  summarize,
} from "./bench_lib.ts";
import { drive, type Driven, get, put, type Request } from "./bench_load.ts";

// ---- Addresses and sizes ------------------------------------------------------------------

const domain = "keel.bench";
const dnsHost = "127.0.0.251";
/** The three members at first; none of these addresses is used by the tests (test/e2e). */
export const replacementMembers: readonly BenchMember[] = [
  { name: "node-a", host: "127.0.0.244", peerPort: 7070, httpPort: 7080 },
  { name: "node-b", host: "127.0.0.245", peerPort: 7070, httpPort: 7080 },
  { name: "node-c", host: "127.0.0.246", peerPort: 7070, httpPort: 7080 },
];
/** The replacement host's address. */
const newHost = "127.0.0.247";
export const replacementAddresses = "127.0.0.244-246, the new host on .247, DNS on .251";

/** Size of each value of the state: 10,000 bytes, so 100 values are 1 MB. */
export const stateValueBytes = 10_000;
/** Concurrent writers of the state. */
const stateWriters = 16;
/** The light load measured before and during the catch-up. */
export const lightClients = 4;
const lightValueBytes = 100;
/** TTL of the DNS records: short, as docs/dns.md advises. */
const recordTtlSeconds = 1;
/** How often the DNS move and the newcomer's readiness are polled. */
const pollMs = 50;
/** Bounds: past them the figure is reported as missing (null) and the run goes on. */
const dnsMoveTimeoutMs = 60_000;
const readyTimeoutMs = 300_000;
/** One state key not acknowledged within this, retried, fails the phase. */
const stateKeyTimeoutMs = 60_000;
/** A snapshot of 100 MB takes seconds on a slow disk. */
const snapshotTimeoutMs = 120_000;

// ---- Results ------------------------------------------------------------------------------

export interface ReplacementOptions {
  binary: string;
  /** Parent of the cluster's temp dir. */
  tmpParent: string;
  /** Values in the state; the state is keys x valueBytes bytes. */
  keys: number;
  valueBytes: number;
  /** Measured time of the steady load; it is preceded by warmupMs of the same load. */
  steadyMs: number;
  warmupMs: number;
  /** resolver.refresh in ms; undefined leaves it out of the cluster file: keel's default. */
  refreshMs?: number;
  /** Told about the cluster as soon as it exists (to copy its logs after a problem). */
  onCluster?: (cluster: Cluster) => void;
}

/** LoadWindow is the light load over one window. */
export interface LoadWindow extends LatencySummary {
  clients: number;
  valueBytes: number;
  durationS: number;
  opsPerSec: number;
  errors: number;
  errorKinds: Record<string, number>;
  /** Longest time with no request acknowledged, ms. */
  maxGapMs: number;
  /**
   * Snapshots taken in the window by the members that serve the load (all three when
   * steady, the two old ones during the catch-up); each pauses its node's event loop.
   */
  snapshotsTaken: number | null;
  /** The leader(s) the load went to; more than one means leadership changed under it. */
  leaders: string[];
}

/** ForcedSnapshot is one POST /admin/snapshot. */
interface ForcedSnapshot {
  member: string;
  index: number | null;
  bytes: number | null;
  ms: number;
  error: string | null;
}

export interface ReplacementResult {
  keys: number;
  valueBytes: number;
  /** keys x valueBytes: the values alone, without keys or encoding. */
  stateBytes: number;
  /** Seconds to write the state (16 clients). */
  loadSeconds: number;
  /** The leader's latest snapshot when the follower is killed (keys and encoding included). */
  leaderSnapshotBytes: number | null;
  forcedSnapshots: ForcedSnapshot[];
  resolverRefreshMs: number;
  resolverRefreshDefault: boolean;
  leader: string;
  replaced: string;
  oldHost: string;
  newHost: string;
  /** DNS record changed -> the leader connected to the new address, ms. */
  dnsMoveMs: number | null;
  /** Empty host started -> its first /readyz 200, ms. */
  readyMs: number | null;
  /**
   * DNS move seen -> /readyz 200, ms: the catch-up after the leader reached the new address
   * (negative if the newcomer was ready first, having caught up over its own connections).
   */
  readyAfterMoveMs: number | null;
  /** stateBytes / 1e6 / (readyMs / 1000): MB (10^6 bytes) of state a second. */
  catchUpMBps: number | null;
  /**
   * stateBytes / 1e6 / (readyAfterMoveMs / 1000): the rate once the leader reaches the
   * newcomer, without the process start and the DNS refresh draw (0 to ~6 s).
   */
  reachableMBps: number | null;
  /** The newcomer's /status once ready. */
  newcomer: { appliedIndex: number; snapshotsInstalled: number } | null;
  /** The leader's commit index when the follower was killed. */
  leaderCommitAtKill: number | null;
  /** State keys read back from the newcomer (stale reads: its own state), and failures. */
  verifiedKeys: number;
  verifyErrors: Record<string, number>;
  steady: LoadWindow;
  duringCatchUp: LoadWindow;
  /** duringCatchUp.p99Ms / steady.p99Ms. */
  p99Ratio: number | null;
  rssMiB: { loaded: Record<string, number | null>; afterCatchUp: Record<string, number | null> };
  unexpectedExits: UnexpectedExit[];
  slowToStop: string[];
}

// ---- Steps --------------------------------------------------------------------------------

/** randomValue is `bytes` random bytes; the state's values are copies with a number in front. */
function randomValue(bytes: number): Uint8Array {
  const value = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += 65_536) {
    crypto.getRandomValues(value.subarray(offset, Math.min(bytes, offset + 65_536)));
  }
  return value;
}

/** leaderNow is the member that says it leads, if one answers so. */
async function leaderNow(cluster: Cluster): Promise<BenchMember | undefined> {
  const statuses = await Promise.all(cluster.running().map((member) => cluster.status(member)));
  const name = statuses.find((status) => status?.role === "leader")?.name;
  return name === undefined ? undefined : cluster.member(name);
}

/** loadState writes keys state-0 .. state-<keys-1>, each retried until acknowledged. */
async function loadState(
  cluster: Cluster,
  keys: number,
  valueBytes: number,
): Promise<void> {
  const template = randomValue(valueBytes);
  let leader = await cluster.settle();
  let next = 0;
  const writer = async (): Promise<void> => {
    const value = template.slice();
    const view = new DataView(value.buffer);
    while (next < keys) {
      const i = next++;
      if (valueBytes >= 4) view.setUint32(0, i);
      const deadline = performance.now() + stateKeyTimeoutMs;
      const errors: Record<string, number> = {};
      for (;;) {
        const outcome = await put(httpUrl(leader), `state-${i}`, value);
        if (outcome.ok) break;
        countInto(errors, outcome.error);
        if (performance.now() > deadline) {
          throw new Error(
            `state-${i} not acknowledged within ${stateKeyTimeoutMs} ms: ${JSON.stringify(errors)}`,
          );
        }
        await Bun.sleep(50);
        leader = await leaderNow(cluster) ?? leader;
      }
    }
  };
  await Promise.all(Array.from({ length: stateWriters }, writer));
}

/** snapshot asks one member to take a snapshot now (POST /admin/snapshot). */
async function snapshot(
  cluster: Cluster,
  member: BenchMember,
  token: string,
): Promise<ForcedSnapshot> {
  const started = performance.now();
  const done = (
    index: number | null,
    bytes: number | null,
    error: string | null,
  ): ForcedSnapshot => ({
    member: member.name,
    index,
    bytes,
    ms: Math.round(performance.now() - started),
    error,
  });
  try {
    const response = await fetch(`${httpUrl(cluster.member(member.name))}/admin/snapshot`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(snapshotTimeoutMs),
    });
    const text = await response.text();
    if (!response.ok) return done(null, null, `${response.status} ${text.slice(0, 200)}`);
    const body = JSON.parse(text) as { index?: number; bytes?: number };
    return done(body.index ?? null, body.bytes ?? null, null);
  } catch (error: unknown) {
    return done(null, null, error instanceof Error ? error.message : String(error));
  }
}

/**
 * snapshotAll snapshots every running member, one after the other, the leader last. A
 * snapshot of a large state pauses its node for longer than an election timeout, so the
 * leader's usually costs an election: the cluster is settled again before returning.
 */
async function snapshotAll(
  cluster: Cluster,
  token: string,
): Promise<{ results: ForcedSnapshot[]; leader: BenchMember }> {
  const before = await cluster.settle();
  const order = [
    ...cluster.running().filter((member) => member.name !== before.name),
    before,
  ];
  const results: ForcedSnapshot[] = [];
  for (const member of order) {
    const result = await snapshot(cluster, member, token);
    if (result.error !== null) {
      console.error(`bench:   snapshot of ${member.name} failed: ${result.error}`);
    }
    results.push(result);
  }
  return { results, leader: await cluster.settle() };
}

/**
 * LeaderTarget is where the light load goes: the leader, looked up again after a failed
 * request (at most one lookup at a time), so a change of leader costs a few errors only.
 */
class LeaderTarget {
  readonly seen: string[];
  #current: BenchMember;
  #looking = false;

  constructor(readonly cluster: Cluster, leader: BenchMember) {
    this.#current = leader;
    this.seen = [leader.name];
  }

  get url(): string {
    return httpUrl(this.cluster.member(this.#current.name));
  }

  failed(): void {
    if (this.#looking) return;
    this.#looking = true;
    void leaderNow(this.cluster).then((leader) => {
      this.#looking = false;
      if (leader === undefined || leader.name === this.#current.name) return;
      this.#current = leader;
      if (!this.seen.includes(leader.name)) this.seen.push(leader.name);
    });
  }
}

function lightRequest(target: LeaderTarget, window: string): Request {
  const value = new Uint8Array(lightValueBytes).fill(0x6c);
  const counters = new Map<number, number>();
  return async (client) => {
    const number = counters.get(client) ?? 0;
    counters.set(client, number + 1);
    const outcome = await put(target.url, `light-${window}-${client}-${number}`, value);
    if (!outcome.ok) target.failed();
    return outcome;
  };
}

/** snapshotsTaken is the members' snapshots so far, summed; undefined if one did not answer. */
async function snapshotsTaken(
  cluster: Cluster,
  members: readonly BenchMember[],
): Promise<number | undefined> {
  const statuses = await Promise.all(members.map((member) => cluster.status(member)));
  let total = 0;
  for (const status of statuses) {
    if (status === undefined) return undefined;
    total += status.counters.snapshotsTaken;
  }
  return total;
}

const difference = (before: number | undefined, after: number | undefined): number | null =>
  before === undefined || after === undefined ? null : after - before;

function loadWindow(
  driven: Driven,
  snapshots: number | null,
  leaders: readonly string[],
): LoadWindow {
  const summary = summarize(driven.latenciesMs);
  return {
    clients: lightClients,
    valueBytes: lightValueBytes,
    durationS: Math.round(driven.elapsedMs) / 1000,
    opsPerSec: summary.count / (driven.elapsedMs / 1000),
    errors: sumCounts(driven.errorKinds),
    errorKinds: driven.errorKinds,
    maxGapMs: driven.maxGapMs,
    snapshotsTaken: snapshots,
    leaders: [...leaders],
    ...summary,
  };
}

/** pollUntil calls check every pollMs until it returns true; false after timeoutMs. */
async function pollUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await Bun.sleep(pollMs);
  }
  return false;
}

async function httpStatus(url: string): Promise<number> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

// ---- The phase ----------------------------------------------------------------------------

/** runReplacement runs the whole phase on its own cluster and DNS server, and stops both. */
export async function runReplacement(options: ReplacementOptions): Promise<ReplacementResult> {
  const stateBytes = options.keys * options.valueBytes;
  const token = `bench-${crypto.randomUUID()}`;
  const refreshMs = options.refreshMs ?? configDefaults.resolverRefreshMs;
  const dns = await TestDnsServer.start({ hostname: dnsHost });
  try {
    for (const member of replacementMembers) {
      dns.setRecord(dnsName(member, domain), [member.host], recordTtlSeconds);
    }
    const cluster = new Cluster({
      binary: options.binary,
      tmpParent: options.tmpParent,
      prefix: "keel-bench-replacement-",
      members: replacementMembers,
      yaml: (storageDir) =>
        clusterYaml(replacementMembers, storageDir, {
          dns: {
            domain,
            server: dns.endpoint,
            ...(options.refreshMs === undefined ? {} : { refresh: `${options.refreshMs}ms` }),
          },
          adminToken: token,
        }),
      listenFlags: true,
    });
    options.onCluster?.(cluster);
    console.error(`bench: replacement: temp dir ${cluster.dir}, DNS server ${dns.endpoint}`);
    for (const member of cluster.members) cluster.start(member);
    const first = await cluster.settle();
    console.error(
      `bench: replacement: cluster up (leader ${first.name}); writing ${options.keys} values ` +
        `of ${options.valueBytes} bytes (${fixed(stateBytes / 1e6, 1)} MB)`,
    );

    const loadStarted = performance.now();
    await loadState(cluster, options.keys, options.valueBytes);
    const loadSeconds = Math.round((performance.now() - loadStarted) / 10) / 100;
    console.error(`bench: replacement: state written in ${loadSeconds} s; snapshotting`);
    const loaded = await snapshotAll(cluster, token);
    const forcedSnapshots = loaded.results;
    const rssLoaded = cluster.rss();

    // Steady: the light load on the whole cluster, just before the replacement.
    const steadyTarget = new LeaderTarget(cluster, loaded.leader);
    const steadyRequest = lightRequest(steadyTarget, "steady");
    console.error(
      `bench: replacement: steady load, ${lightClients} clients to the leader ` +
        `${loaded.leader.name}`,
    );
    await drive(lightClients, options.warmupMs, steadyRequest);
    const steadyBefore = await snapshotsTaken(cluster, cluster.members);
    const steadyDriven = await drive(lightClients, options.steadyMs, steadyRequest);
    const steadyAfter = await snapshotsTaken(cluster, cluster.members);
    const steady = loadWindow(
      steadyDriven,
      difference(steadyBefore, steadyAfter),
      steadyTarget.seen,
    );

    // A fresh snapshot everywhere, so the catch-up ships the latest state and no member's
    // next automatic snapshot comes soon; then a follower of the leader after that.
    const fresh = await snapshotAll(cluster, token);
    forcedSnapshots.push(...fresh.results);
    const leader = fresh.leader;
    const leaderStatus = await cluster.status(leader);
    const victim = cluster.members.find((member) => member.name !== leader.name) as BenchMember;
    const survivors = cluster.members.filter((member) => member.name !== victim.name);
    const oldHost = victim.host;

    console.error(
      `bench: replacement: kill -9 ${victim.name} (${oldHost}), a follower of ${leader.name}; ` +
        `wipe its data dir, start an empty host at ${newHost}`,
    );
    await cluster.kill(victim.name);
    rmSync(cluster.dataDir(victim.name), { recursive: true, force: true });
    cluster.moveTo(victim.name, newHost);
    const newcomerUrl = httpUrl(cluster.member(victim.name));
    const catchUpBefore = await snapshotsTaken(cluster, survivors);
    const catchUpTarget = new LeaderTarget(cluster, leader);
    const catchUpRequest = lightRequest(catchUpTarget, "catchup");
    const startedAt = performance.now();
    cluster.start(victim);

    let readyAt: number | undefined;
    const ready = pollUntil(async () => {
      if (await httpStatus(`${newcomerUrl}/readyz`) !== 200) return false;
      readyAt = performance.now();
      return true;
    }, readyTimeoutMs);
    const driving = drive(lightClients, ready, catchUpRequest);

    // Once the new host listens, its name moves to it, as an operator would do. The move
    // is over when the leader (whichever survivor leads then) uses the new address.
    let dnsChangedAt: number | undefined;
    let movedAt: number | undefined;
    const moving = (async (): Promise<void> => {
      await pollUntil(async () => await httpStatus(`${newcomerUrl}/healthz`) !== 0, 60_000);
      dns.setRecord(dnsName(victim, domain), [newHost], recordTtlSeconds);
      dnsChangedAt = performance.now();
      await pollUntil(async () => {
        const statuses = await Promise.all(survivors.map((member) => cluster.status(member)));
        const leading = statuses.find((status) => status?.role === "leader");
        const seen = leading?.members.find((member) => member.name === victim.name);
        if (seen?.resolution?.address !== newHost || !seen.connected) return false;
        movedAt = performance.now();
        return true;
      }, dnsMoveTimeoutMs);
    })();

    const [, catchUpDriven] = await Promise.all([moving, driving, ready]);
    const catchUpAfter = await snapshotsTaken(cluster, survivors);
    const duringCatchUp = loadWindow(
      catchUpDriven,
      difference(catchUpBefore, catchUpAfter),
      catchUpTarget.seen,
    );
    const readyMs = readyAt === undefined ? null : Math.round(readyAt - startedAt);
    const dnsMoveMs = movedAt === undefined || dnsChangedAt === undefined
      ? null
      : Math.round(movedAt - dnsChangedAt);
    console.error(
      `bench: replacement: DNS move ${dnsMoveMs ?? "not seen"} ms; /readyz 200 ` +
        (readyMs === null ? `not seen within ${readyTimeoutMs} ms` : `after ${readyMs} ms`),
    );

    const newcomerStatus = await cluster.status(victim);
    // Read a few state keys back from the newcomer's own state.
    const verifyErrors: Record<string, number> = {};
    let verifiedKeys = 0;
    if (readyMs !== null) {
      const sample = new Set([0, Math.floor(options.keys / 2), options.keys - 1]);
      for (const i of sample) {
        const outcome = await get(newcomerUrl, `state-${i}`, options.valueBytes, true);
        if (outcome.ok) verifiedKeys++;
        else countInto(verifyErrors, outcome.error);
      }
    }
    const rssAfterCatchUp = cluster.rss();
    const unexpectedExits = [...cluster.unexpectedExits];
    const slowToStop = await cluster.stop();
    return {
      keys: options.keys,
      valueBytes: options.valueBytes,
      stateBytes,
      loadSeconds,
      leaderSnapshotBytes: leaderStatus?.snapshotBytes ?? null,
      forcedSnapshots,
      resolverRefreshMs: refreshMs,
      resolverRefreshDefault: options.refreshMs === undefined,
      leader: leader.name,
      replaced: victim.name,
      oldHost,
      newHost,
      dnsMoveMs,
      readyMs,
      readyAfterMoveMs: readyAt === undefined || movedAt === undefined
        ? null
        : Math.round(readyAt - movedAt),
      catchUpMBps: readyMs === null || readyMs === 0
        ? null
        : Math.round(stateBytes / 1e6 / (readyMs / 1000) * 10) / 10,
      reachableMBps: readyAt === undefined || movedAt === undefined || readyAt <= movedAt
        ? null
        : Math.round(stateBytes / 1e6 / ((readyAt - movedAt) / 1000) * 10) / 10,
      newcomer: newcomerStatus === undefined ? null : {
        appliedIndex: newcomerStatus.appliedIndex,
        snapshotsInstalled: newcomerStatus.counters.snapshotsInstalled,
      },
      leaderCommitAtKill: leaderStatus?.commitIndex ?? null,
      verifiedKeys,
      verifyErrors,
      steady,
      duringCatchUp,
      p99Ratio: steady.p99Ms > 0 && Number.isFinite(duringCatchUp.p99Ms)
        ? Math.round(duringCatchUp.p99Ms / steady.p99Ms * 100) / 100
        : null,
      rssMiB: { loaded: rssLoaded, afterCatchUp: rssAfterCatchUp },
      unexpectedExits,
      slowToStop,
    };
  } finally {
    dns.stop();
  }
}

// ---- Report -------------------------------------------------------------------------------

/** seconds formats ms as seconds with one decimal ("-" when missing). */
const seconds = (ms: number | null): string => ms === null ? "-" : fixed(ms / 1000, 1);

/** replacementLines are the terminal lines of a result. */
export function replacementLines(result: ReplacementResult): string[] {
  const refresh = `refresh ${fixed(result.resolverRefreshMs / 1000, 1).replace(/\.0$/, "")} s` +
    (result.resolverRefreshDefault ? "" : ", not the default");
  const mb = fixed(result.stateBytes / 1e6, 1);
  const steady = result.steady;
  const during = result.duringCatchUp;
  const window = (w: LoadWindow): string =>
    `p50 ${fixed(w.p50Ms, 1)} ms, p99 ${fixed(w.p99Ms, 1)} ms, max ${fixed(w.maxMs, 0)} ms, ` +
    `${fixed(w.opsPerSec, 0)} ops/s, ${w.errors} errors, snapshots ${w.snapshotsTaken ?? "?"}` +
    (w.leaders.length > 1 ? `, leaders ${w.leaders.join(" -> ")}` : "");
  const rss = (values: Record<string, number | null>): string =>
    Object.entries(values).map(([name, mib]) => `${name} ${mib ?? "-"} MiB`).join(", ");
  return [
    `dns move (${refresh}): ${seconds(result.dnsMoveMs)} s`,
    `replacement catch-up: ${mb} MB in ${seconds(result.readyMs)} s = ` +
    `${fixed(result.catchUpMBps ?? NaN, 1)} MB/s (empty host start -> /readyz 200); ` +
    `client p99 ${fixed(during.p99Ms, 1)} ms during vs ${fixed(steady.p99Ms, 1)} ms steady`,
    `replacement catch-up once reachable: ${mb} MB in ${seconds(result.readyAfterMoveMs)} s = ` +
    `${fixed(result.reachableMBps ?? NaN, 1)} MB/s (DNS move seen -> /readyz 200)`,
    `  state: ${result.keys} values of ${result.valueBytes} bytes (MB = 10^6 bytes of values), ` +
    `leader snapshot ${fixed((result.leaderSnapshotBytes ?? NaN) / 1e6, 1)} MB; ` +
    `${result.replaced} replaced (${result.oldHost} -> ${result.newHost}), leader ${result.leader}; ` +
    `the newcomer installed ${result.newcomer?.snapshotsInstalled ?? "?"} snapshot(s) and ` +
    `was ready ${seconds(result.readyAfterMoveMs)} s after the DNS move`,
    `  ${lightClients} clients, ${steady.valueBytes}-byte PUTs to the leader: ` +
    `steady (${fixed(steady.durationS, 1)} s) ${window(steady)}`,
    `  during catch-up (${fixed(during.durationS, 1)} s) ${window(during)}`,
    `  rss with the state loaded: ${rss(result.rssMiB.loaded)}`,
    `  rss after the catch-up: ${rss(result.rssMiB.afterCatchUp)}`,
  ];
}

/** replacementProblems lists what went wrong in a result (empty when nothing did). */
export function replacementProblems(result: ReplacementResult): string[] {
  const problems: string[] = [];
  if (result.dnsMoveMs === null) problems.push("the DNS move was not seen");
  if (result.readyMs === null) problems.push("the replacement never answered /readyz 200");
  if (result.readyMs !== null && result.verifiedKeys === 0) {
    problems.push(
      `no state read back from the replacement: ${JSON.stringify(result.verifyErrors)}`,
    );
  } else if (sumCounts(result.verifyErrors) > 0) {
    problems.push(
      `state reads from the replacement failed: ${JSON.stringify(result.verifyErrors)}`,
    );
  }
  const failedSnapshots = result.forcedSnapshots.filter((s) => s.error !== null);
  if (failedSnapshots.length > 0) {
    problems.push(`forced snapshots failed: ${JSON.stringify(failedSnapshots)}`);
  }
  if (result.unexpectedExits.length > 0) {
    problems.push(`nodes exited unexpectedly: ${JSON.stringify(result.unexpectedExits)}`);
  }
  if (result.slowToStop.length > 0) {
    problems.push(`did not stop in time on SIGTERM: ${result.slowToStop.join(", ")}`);
  }
  return problems;
}
