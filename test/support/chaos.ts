// The chaos runner: a real cluster of dist/keel addressed by DNS names (a TestDnsServer over
// UDP), concurrent clients recording a history, and a nemesis injecting faults on a seeded
// schedule; then the history is checked (linearizable per key, no acknowledged write lost,
// retries applied once) and summarized in one line. scripts/chaos.ts is its command line;
// test/e2e/chaos.test.ts runs a short version.
//
// History records are KvOperations (src/check/kv_model.ts) with a few extra fields. A write
// is one logical operation however many attempts it took: every attempt carries the same
// Idempotency-Key, so the write may take effect once, anywhere between the first attempt's
// call and the answer that settled it. A write no attempt settled has an unknown outcome
// (return null). Only answers that say what happened settle a write: 2xx, and 409 cas_failed
// (a cas that returned false). Every other error, 503 not_leader included, may come from a
// forwarded or proposed write, so it counts as unknown, which is always sound.
//
// Retries applied once: every value is unique, and keel reports the log index that last
// modified a key (keel-mod-index on reads, `index` on write answers; a retry answers the
// first attempt's index). A value seen with two different indexes was applied twice.
//
// Faults are injected one at a time; each is healed after a few seconds and the runner then
// waits (bounded) until a probe write is acknowledged, which is the recovery time.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { checkHistory, type HistoryReport } from "../../src/check/linearizability.ts";
import {
  checkAcknowledgedWritesPresent,
  type KvOperation,
  type KvValue,
  outcomeKnown,
} from "../../src/check/kv_model.ts";
import { Prng } from "../../src/lib/prng.ts";
import { type Member, TestCluster } from "./cluster.ts";
import { TestDnsServer } from "./dns_server.ts";
import { FaultProxy } from "./fault_proxy.ts";

/** FaultKind names each fault the nemesis injects. */
export type FaultKind =
  | "kill-leader"
  | "kill-random"
  | "pause"
  | "dns-flip"
  | "wipe-replace"
  | "partition";
export const faultKinds: readonly FaultKind[] = [
  "kill-leader",
  "kill-random",
  "pause",
  "dns-flip",
  "wipe-replace",
  "partition",
];

/** ChaosRecord is one history line: a kv operation and what the client saw. */
export type ChaosRecord = KvOperation & {
  /** node is the member the (first) request went to. */
  node: string;
  attempts: number;
  /** modIndex: keel-mod-index of a read, or the index a write was acknowledged at. */
  modIndex?: number | undefined;
  /** error is the last failure of an operation whose outcome is unknown. */
  error?: string | undefined;
  /** final marks the reads made after the run, with every client stopped. */
  final?: "linearizable" | undefined;
};

export interface ChaosOptions {
  durationMs: number;
  seed: number;
  nodes?: number;
  /** First octet of the members' addresses: 127.0.0.<ipBase + i>. */
  ipBase?: number;
  /** The DNS server's address. */
  dnsHost?: string;
  clientsPerNode?: number;
  keys?: number;
  resultsDir?: string;
  /** checkTimeoutMs bounds the linearizability check. */
  checkTimeoutMs?: number;
  /** recoveryBoundMs: a probe write must be acknowledged this long after a fault heals. */
  recoveryBoundMs?: number;
  log?: (line: string) => void;
}

export interface ChaosSummary {
  ok: boolean;
  seed: number;
  nodes: number;
  attempted: number;
  acknowledged: number;
  faults: Record<FaultKind, number>;
  linearizable: HistoryReport["result"];
  lostWrites: number;
  duplicates: number;
  recoveryMaxMs: number;
  unavailableMaxMs: number;
  anomalies: string[];
  historyPath: string;
  line: string;
}

const requestTimeoutMs = 2_000;
const writeAttemptsMax = 4;
const retryBackoffMs = [100, 250, 500, 1000];
const healthyWaitMs = 45_000;
const wrongAddress = "127.0.0.250";
const domain = "keel.test";
const probeKey = "probe";

/** ChaosCheck is the verdict on a recorded history. */
export interface ChaosCheck {
  linearizability: HistoryReport;
  lostWrites: string[];
  duplicates: string[];
}

/**
 * checkChaosHistory checks a recorded history: linearizable per key (the final reads are
 * ordinary gets in it), no acknowledged write missing from the final state (the last final
 * linearizable read of each key), and no value applied twice.
 */
export function checkChaosHistory(records: readonly ChaosRecord[], timeoutMs: number): ChaosCheck {
  const linearizability = checkHistory(records, { timeoutMs });
  const finalState = new Map<string, KvValue>();
  for (const record of records) {
    if (record.final === "linearizable" && record.op === "get" && outcomeKnown(record)) {
      finalState.set(record.key, record.output ?? null);
    }
  }
  const acknowledged = checkAcknowledgedWritesPresent(records, finalState);
  const lostWrites = acknowledged.lost.map((lost) =>
    `key ${lost.key}: final ${JSON.stringify(lost.final)}, possible ${
      JSON.stringify(lost.possible)
    }`
  );
  const indexes = new Map<string, Set<number>>();
  for (const record of records) {
    if (!outcomeKnown(record) || record.modIndex === undefined) continue;
    let value: KvValue | undefined;
    if (record.op === "get") value = record.output ?? null;
    else if (record.op === "put") value = record.input;
    else if (record.op === "cas" && record.output === true) value = record.input.value;
    if (value === null || value === undefined) continue;
    const seen = indexes.get(`${record.key}=${value}`) ?? new Set<number>();
    seen.add(record.modIndex);
    indexes.set(`${record.key}=${value}`, seen);
  }
  const duplicates = [...indexes].filter(([, seen]) => seen.size > 1)
    .map(([value, seen]) => `${value} at indexes ${[...seen].join(",")}`);
  return { linearizability, lostWrites, duplicates };
}

/** unavailableMaxMs is the longest time in [start, end] with no acknowledged operation. */
export function unavailableMaxMs(records: readonly ChaosRecord[], start: number, end: number) {
  const acks = records.filter((r) => outcomeKnown(r) && r.final === undefined)
    .map((r) => r.return!).sort((a, b) => a - b);
  let longest = 0;
  let last = start;
  for (const at of [...acks, end]) {
    longest = Math.max(longest, at - last);
    last = Math.max(last, at);
  }
  return longest;
}

interface Answer {
  status: number;
  code?: string;
  text: string;
  modIndex?: number;
}

async function request(url: string, init: RequestInit): Promise<Answer> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(requestTimeoutMs) });
  const text = await response.text();
  const answer: Answer = { status: response.status, text };
  const header = response.headers.get("keel-mod-index");
  if (header !== null) answer.modIndex = Number(header);
  if (!response.ok) {
    try {
      const body = JSON.parse(text) as { error?: { code?: string }; index?: number };
      if (body.error?.code !== undefined) answer.code = body.error.code;
    } catch {
      // Not JSON: no code.
    }
  }
  return answer;
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * partitionGroups picks a partition: the leader isolated, a random minority against the
 * rest, or (with 5 members) a bridge: two groups that only one member connects. Each group
 * lists member names; a member in several groups (the bridge) reaches all of them.
 */
export function partitionGroups(
  prng: Prng,
  names: readonly string[],
  leader: string | undefined,
): string[][] {
  const shape = prng.int(0, names.length >= 5 ? 3 : 2);
  if (shape === 0 && leader !== undefined) {
    return [[leader], names.filter((name) => name !== leader)];
  }
  const shuffled = [...names];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = prng.int(0, i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  if (shape === 2) {
    const bridge = shuffled[0]!;
    const half = Math.floor((shuffled.length - 1) / 2);
    return [[bridge, ...shuffled.slice(1, 1 + half)], [bridge, ...shuffled.slice(1 + half)]];
  }
  const minority = Math.floor((names.length - 1) / 2);
  return [shuffled.slice(0, minority), shuffled.slice(minority)];
}

/** separatedPairs lists the member index pairs no group holds together. */
export function separatedPairs(names: readonly string[], groups: string[][]): [number, number][] {
  const pairs: [number, number][] = [];
  for (let a = 0; a < names.length; a++) {
    for (let b = a + 1; b < names.length; b++) {
      if (!groups.some((g) => g.includes(names[a]!) && g.includes(names[b]!))) pairs.push([a, b]);
    }
  }
  return pairs;
}

/** runChaos runs one chaos run and returns its summary; it always stops every process. */
export async function runChaos(options: ChaosOptions): Promise<ChaosSummary> {
  const nodes = options.nodes ?? 3;
  const prng = new Prng(options.seed);
  const log = options.log ?? ((line: string) => console.error(line));
  const resultsDir = options.resultsDir ?? "chaos-results";
  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const historyPath = join(resultsDir, `chaos-seed${options.seed}-${stamp}.jsonl`);
  const keyCount = options.keys ?? 8;
  const keys = Array.from({ length: keyCount }, (_, i) => `k${i}`);
  const recoveryBoundMs = options.recoveryBoundMs ?? 30_000;
  const anomalies: string[] = [];
  const faults = Object.fromEntries(faultKinds.map((kind) => [kind, 0])) as Record<
    FaultKind,
    number
  >;
  const records: ChaosRecord[] = [];

  // Partitions: each member has its own DNS server (resolver.servers is not part of the
  // config fingerprint, so each gets its own config file differing only there), which
  // answers every other member's name with the address of a FaultProxy for that directed
  // link; cutting both directions of a pair drops its traffic, peer and forwarded HTTP.
  const ipBase = options.ipBase ?? 201;
  const dnsHost = options.dnsHost ?? "127.0.0.200";
  const names = Array.from({ length: nodes }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
  const ipOf = (i: number) => `127.0.0.${ipBase + i}`;
  const linkIp = (from: number, to: number) => `127.0.0.${ipBase + nodes + from * nodes + to}`;
  const dnsServers: TestDnsServer[] = [];
  const proxies = new Map<string, FaultProxy>();
  /** addressIn is what member `from`'s DNS answers for member `to`. */
  const addressIn = (from: number, to: number) => from === to ? ipOf(to) : linkIp(from, to);
  for (let from = 0; from < nodes; from++) {
    const server = await TestDnsServer.start({ hostname: dnsHost });
    dnsServers.push(server);
    for (let to = 0; to < nodes; to++) {
      server.setRecord(`${names[to]}.${domain}`, [addressIn(from, to)], 1);
      if (from !== to) {
        proxies.set(`${from}>${to}`, FaultProxy.start(linkIp(from, to), ipOf(to), [7070, 7080]));
      }
    }
  }
  const cluster = new TestCluster({
    size: nodes,
    ipBase,
    name: `chaos${options.seed}`,
    dns: { server: dnsServers[0]!.endpoint, domain, refresh: "1s" },
    snapshotEntries: 2000,
  });
  const configPaths = dnsServers.map((server, i) => {
    const path = join(cluster.dir, `cluster-${names[i]}.yaml`);
    const text = readFileSync(cluster.configPath, "utf8");
    const line = `  servers: ["${dnsServers[0]!.endpoint}"]`;
    if (!text.includes(line)) throw new Error(`No resolver.servers line in ${cluster.configPath}`);
    writeFileSync(path, text.replace(line, `  servers: ["${server.endpoint}"]`));
    return path;
  });

  // Processes we did not kill must not exit: that is a crash, reported and restarted.
  const expectedExit = new Set<unknown>();
  const start = (name: string) => {
    // The last --config wins: the member's own copy, which names its own DNS server.
    cluster.start(name, ["--config", configPaths[names.indexOf(name)]!]);
    const child = cluster.member(name).process!;
    void child.exited.then((code) => {
      if (expectedExit.has(child)) return;
      const last = cluster.member(name).log.findLast((line) => line.includes('"level":"error"'));
      anomalies.push(`${name} exited by itself with code ${code}: ${last?.slice(0, 300) ?? ""}`);
      log(`chaos: ${name} exited by itself with code ${code}`);
      if (cluster.member(name).process === child) cluster.member(name).process = undefined;
    });
  };
  const kill = async (name: string) => {
    const child = cluster.member(name).process;
    if (child === undefined) return;
    expectedExit.add(child);
    child.kill("SIGCONT");
    await cluster.kill(name);
  };
  const paused = new Set<string>();
  let stopped = false;
  const cleanup = async () => {
    if (stopped) return;
    stopped = true;
    for (const member of cluster.members) {
      if (member.process !== undefined) expectedExit.add(member.process);
    }
    for (const name of paused) cluster.member(name).process?.kill("SIGCONT");
    await cluster.stop();
    for (const proxy of proxies.values()) proxy.stop();
    for (const server of dnsServers) server.stop();
  };
  const onSignal = () => {
    void cleanup().then(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let running = true;
  let seq = 0;
  const nemesisClient = "chaos-nemesis";
  let nemesisSeq = 0;

  /** write performs one logical write with retries under one Idempotency-Key. */
  const write = async (
    client: string,
    clientSeq: number,
    firstNode: number,
    op: ChaosRecord,
    path: string,
    init: RequestInit,
    attemptsMax: number,
  ) => {
    records.push(op);
    const idempotency = { "Idempotency-Key": `${client}:${clientSeq}` };
    for (let attempt = 0; attempt < attemptsMax; attempt++) {
      if (attempt > 0) await Bun.sleep(retryBackoffMs[Math.min(attempt - 1, 3)]!);
      op.attempts = attempt + 1;
      const member = cluster.members[(firstNode + attempt) % nodes]!;
      try {
        const answer = await request(`${member.url}${path}`, {
          ...init,
          headers: { ...init.headers as Record<string, string>, ...idempotency },
        });
        if (answer.status === 200) {
          const body = JSON.parse(answer.text) as { index: number; deleted?: boolean };
          op.modIndex = body.index;
          if (op.op === "put") op.output = "ok";
          if (op.op === "delete") op.output = body.deleted ?? null;
          if (op.op === "cas") op.output = true;
          op.return = performance.now();
          delete op.error;
          return;
        }
        if (answer.status === 409 && answer.code === "cas_failed" && op.op === "cas") {
          const body = JSON.parse(answer.text) as { current?: KvValue };
          op.output = {
            ok: false,
            ...(body.current === undefined ? {} : { current: body.current }),
          };
          op.return = performance.now();
          delete op.error;
          return;
        }
        op.error = `${answer.status} ${answer.code ?? answer.text.slice(0, 80)}`;
      } catch (error: unknown) {
        op.error = describeError(error);
      }
    }
  };

  const read = async (member: Member, key: string, node: string): Promise<ChaosRecord> => {
    const op: ChaosRecord = {
      op: "get",
      clientId: "reader",
      key,
      call: performance.now(),
      return: null,
      node,
      attempts: 1,
    };
    try {
      const answer = await request(`${member.url}/v1/kv/${key}`, {});
      if (answer.status === 200) {
        op.output = answer.text;
        op.modIndex = answer.modIndex;
        op.return = performance.now();
      } else if (answer.status === 404 && answer.code === "not_found") {
        op.output = null;
        op.return = performance.now();
      } else {
        op.error = `${answer.status} ${answer.code ?? answer.text.slice(0, 80)}`;
      }
    } catch (error: unknown) {
      op.error = describeError(error);
    }
    return op;
  };

  const client = async (index: number) => {
    const id = `chaos-c${index}`;
    const home = index % nodes;
    const clientPrng = new Prng(options.seed * 1000 + index + 1);
    const lastSeen = new Map<string, KvValue>();
    while (running) {
      const key = clientPrng.pick(keys);
      const roll = clientPrng.next();
      const member = cluster.members[home]!;
      if (roll < 0.45) {
        const op = await read(member, key, member.name);
        op.clientId = id;
        records.push(op);
        if (outcomeKnown(op)) lastSeen.set(key, (op as { output?: KvValue }).output ?? null);
        if (!outcomeKnown(op)) await Bun.sleep(100);
        continue;
      }
      const clientSeq = ++seq;
      const value = `${id}.${clientSeq}`;
      const base = { clientId: id, key, call: performance.now(), return: null, node: member.name };
      let op: ChaosRecord;
      if (roll < 0.75) {
        op = { ...base, op: "put", input: value, attempts: 0 };
        await write(id, clientSeq, home, op, `/v1/kv/${key}`, { method: "PUT", body: value }, 4);
      } else if (roll < 0.95) {
        const expected = lastSeen.get(key) ?? null;
        op = { ...base, op: "cas", input: { expected, value }, attempts: 0 };
        await write(id, clientSeq, home, op, `/v1/kv/${key}/cas`, {
          method: "POST",
          body: JSON.stringify({ expected, value }),
          headers: { "content-type": "application/json" },
        }, writeAttemptsMax);
      } else {
        op = { ...base, op: "delete", attempts: 0 };
        await write(id, clientSeq, home, op, `/v1/kv/${key}`, { method: "DELETE" }, 4);
      }
      if (outcomeKnown(op)) {
        if (op.op === "put") lastSeen.set(key, value);
        else if (op.op === "delete") lastSeen.set(key, null);
        else if (op.op === "cas") {
          const output = op.output;
          if (output === true) lastSeen.set(key, value);
          else if (typeof output === "object" && output !== null && output.current !== undefined) {
            lastSeen.set(key, output.current);
          }
        }
      } else {
        await Bun.sleep(100);
      }
    }
  };

  const statuses = async () =>
    await Promise.all(cluster.members.map((m) => cluster.status(m.name)));

  const leaderNow = async (): Promise<string | undefined> => {
    const all = await statuses();
    return all.find((s) => s?.role === "leader")?.name;
  };

  /** healthy waits until every member runs, agrees on a leader and reports status normal. */
  const waitHealthy = async (what: string) => {
    const deadline = performance.now() + healthyWaitMs;
    while (performance.now() < deadline) {
      const all = await statuses();
      const leader = all[0]?.leader;
      if (
        leader !== null && leader !== undefined &&
        all.every((s) => s !== undefined && s.leader === leader && s.status === "normal")
      ) {
        return true;
      }
      await Bun.sleep(200);
    }
    anomalies.push(`the cluster was not healthy within ${healthyWaitMs} ms after ${what}`);
    return false;
  };

  let recoveryMaxMs = 0;
  /** probe writes until acknowledged (recorded in the history); returns the time it took. */
  const probe = async (what: string) => {
    const began = performance.now();
    while (performance.now() - began < recoveryBoundMs + 5_000) {
      const clientSeq = ++nemesisSeq;
      const value = `${nemesisClient}.${clientSeq}`;
      const op: ChaosRecord = {
        op: "put",
        clientId: nemesisClient,
        key: probeKey,
        input: value,
        call: performance.now(),
        return: null,
        node: "",
        attempts: 0,
      };
      const first = prng.int(0, nodes);
      op.node = cluster.members[first]!.name;
      await write(nemesisClient, clientSeq, first, op, `/v1/kv/${probeKey}`, {
        method: "PUT",
        body: value,
      }, 1);
      if (outcomeKnown(op)) {
        const took = op.return! - began;
        recoveryMaxMs = Math.max(recoveryMaxMs, took);
        if (took > recoveryBoundMs) {
          anomalies.push(`no write acknowledged within ${recoveryBoundMs} ms after ${what}`);
        }
        return;
      }
      await Bun.sleep(100);
    }
    anomalies.push(`no write acknowledged within ${recoveryBoundMs} ms after ${what}`);
  };

  const inject = async (kind: FaultKind) => {
    const leader = await leaderNow();
    const victim = kind === "kill-leader" && leader !== undefined ? leader : prng.pick(names);
    const holdMs = prng.int(1_000, 4_000);
    faults[kind]++;
    if (kind === "partition") {
      const groups = partitionGroups(prng, names, leader);
      log(
        `chaos: partition ${groups.map((g) => g.join("+")).join(" | ")} for ${holdMs + 2_000} ms`,
      );
      const cut: FaultProxy[] = [];
      for (const [a, b] of separatedPairs(names, groups)) {
        cut.push(proxies.get(`${a}>${b}`)!, proxies.get(`${b}>${a}`)!);
      }
      for (const proxy of cut) proxy.cut();
      await Bun.sleep(holdMs + 2_000);
      for (const proxy of cut) proxy.heal();
      await probe(`partition ${groups.map((g) => g.join("+")).join(" | ")}`);
      await waitHealthy("partition");
      return;
    }
    log(`chaos: ${kind} ${victim} for ${holdMs} ms`);
    switch (kind) {
      case "kill-leader":
      case "kill-random":
        await kill(victim);
        await Bun.sleep(holdMs);
        start(victim);
        break;
      case "pause": {
        const child = cluster.member(victim).process;
        paused.add(victim);
        child?.kill("SIGSTOP");
        await Bun.sleep(holdMs);
        child?.kill("SIGCONT");
        paused.delete(victim);
        break;
      }
      case "dns-flip": {
        const to = names.indexOf(victim);
        for (const server of dnsServers) server.setRecord(`${victim}.${domain}`, [wrongAddress], 1);
        await Bun.sleep(holdMs + 2_000);
        dnsServers.forEach((server, from) =>
          server.setRecord(`${victim}.${domain}`, [addressIn(from, to)], 1)
        );
        break;
      }
      case "wipe-replace": {
        await kill(victim);
        rmSync(cluster.member(victim).dataDir, { recursive: true, force: true });
        await Bun.sleep(holdMs);
        start(victim);
        break;
      }
    }
    await probe(`${kind} of ${victim}`);
    await waitHealthy(`${kind} of ${victim}`);
  };

  let workloadStart = 0;
  let workloadEnd = 0;
  try {
    for (const name of names) start(name);
    if (!await waitHealthy("start")) {
      throw new Error(`The cluster did not form\n${cluster.tails()}`);
    }
    log(`chaos: cluster of ${nodes} formed; running for ${options.durationMs} ms`);
    workloadStart = performance.now();
    const clients = Array.from(
      { length: nodes * (options.clientsPerNode ?? 4) },
      (_, i) => client(i),
    );
    // The nemesis: quiet for a while, then one fault, healed, until the time is up. The kinds
    // come in seeded shuffled rounds so that a short run sees every kind.
    const deadline = workloadStart + options.durationMs;
    let round: FaultKind[] = [];
    while (performance.now() < deadline - 2_000) {
      await Bun.sleep(Math.min(prng.int(1_000, 3_000), Math.max(0, deadline - performance.now())));
      if (performance.now() >= deadline - 2_000) break;
      if (round.length === 0) {
        round = [...faultKinds];
        for (let i = round.length - 1; i > 0; i--) {
          const j = prng.int(0, i + 1);
          [round[i], round[j]] = [round[j]!, round[i]!];
        }
      }
      await inject(round.pop()!);
    }
    while (performance.now() < deadline) await Bun.sleep(100);
    running = false;
    await Promise.all(clients);
    workloadEnd = performance.now();

    // Final state: every member healthy, a linearizable read of every key from each member
    // (ops of the history), then stale reads once every member has applied everything.
    await waitHealthy("the run");
    const allKeys = [...keys, probeKey];
    for (const member of cluster.members) {
      for (const key of allKeys) {
        const op = await read(member, key, member.name);
        op.final = "linearizable";
        op.clientId = "final";
        records.push(op);
        if (!outcomeKnown(op)) anomalies.push(`final read of ${key} on ${member.name} failed`);
      }
    }
    const leaderName = await leaderNow();
    const leaderStatus = leaderName === undefined ? undefined : await cluster.status(leaderName);
    const commitIndex = leaderStatus?.commitIndex ?? 0;
    const applied = await cluster.waitFor("every member to apply everything", async () => {
      const all = await statuses();
      return all.every((s) => s !== undefined && s.appliedIndex >= commitIndex) ? true : undefined;
    }, 20_000).catch(() => false);
    if (!applied) anomalies.push(`not every member applied index ${commitIndex}`);
    const finalValues = new Map<string, KvValue>();
    for (const record of records) {
      if (record.final === "linearizable" && outcomeKnown(record)) {
        finalValues.set(record.key, (record as { output?: KvValue }).output ?? null);
      }
    }
    for (const member of cluster.members) {
      for (const key of allKeys) {
        const response = await cluster.get(member.name, key, "stale");
        const value = response.status === 404 ? null : await response.text();
        if (finalValues.has(key) && value !== finalValues.get(key)) {
          anomalies.push(
            `stale read of ${key} on ${member.name} after apply: ${JSON.stringify(value)}, ` +
              `expected ${JSON.stringify(finalValues.get(key))}`,
          );
        }
      }
    }
  } catch (error: unknown) {
    anomalies.push(`runner failed: ${describeError(error)}`);
  } finally {
    running = false;
    writeFileSync(historyPath, records.map((r) => JSON.stringify(r)).join("\n") + "\n");
    writeFileSync(historyPath.replace(/\.jsonl$/, ".logs.txt"), cluster.tails(400));
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  const check = checkChaosHistory(records, options.checkTimeoutMs ?? 60_000);
  for (const report of check.linearizability.perKey.values()) {
    if (report.result === "illegal") {
      anomalies.push(report.counterexample?.explanation.split("\n").slice(0, 6).join(" | ") ?? "");
    }
  }
  anomalies.push(...check.lostWrites.map((text) => `lost write: ${text}`));
  anomalies.push(...check.duplicates.map((text) => `applied twice: ${text}`));
  const attempted = records.filter((r) => r.final === undefined).length;
  const acknowledged = records.filter((r) => r.final === undefined && outcomeKnown(r)).length;
  const unavailable = unavailableMaxMs(records, workloadStart, workloadEnd || performance.now());
  const result = check.linearizability.result;
  const ok = anomalies.length === 0 && result === "ok";
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
  const line = [
    `chaos ${ok ? "ok" : result === "unknown" && anomalies.length === 0 ? "UNKNOWN" : "FAIL"}`,
    `seed=${options.seed}`,
    `nodes=${nodes}`,
    `duration=${seconds(options.durationMs)}`,
    `ops=${attempted}`,
    `acked=${acknowledged}`,
    `faults=${faultKinds.map((kind) => `${kind}:${faults[kind]}`).join(",")}`,
    `linearizable=${result}`,
    `lost=${check.lostWrites.length}`,
    `duplicates=${check.duplicates.length}`,
    `anomalies=${anomalies.length}`,
    `recovery-max=${seconds(recoveryMaxMs)}`,
    `unavailable-max=${seconds(unavailable)}`,
    `history=${historyPath}`,
  ].join(" ");
  return {
    ok,
    seed: options.seed,
    nodes,
    attempted,
    acknowledged,
    faults,
    linearizable: result,
    lostWrites: check.lostWrites.length,
    duplicates: check.duplicates.length,
    recoveryMaxMs,
    unavailableMaxMs: unavailable,
    anomalies,
    historyPath,
    line,
  };
}
