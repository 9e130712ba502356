// bench measures a fresh local 3-node cluster of the compiled binary: acknowledged writes/s
// and latency at 1, 16 and 64 concurrent clients (to the leader, and 16 spread over every
// member so followers forward), linearizable reads/s, failover time (kill -9 or SIGSTOP the
// leader -> next acknowledged write), CPU use and RSS per node. Then, on a second fresh
// cluster whose members are named by DNS, host replacement: the DNS move time and the
// catch-up rate of an empty host for ~100 MB of state (scripts/bench_replacement.ts).
// Prints a table; writes JSON to bench-results/bench-<timestamp>.json. Timings are
// reported, never asserted. See docs/performance.md.
//
//   bun scripts/bench.ts [--duration=SECONDS] [--failovers=N] [--freezes=N]
//                        [--replacement-mb=N | --no-replacement] [--only=replacement] [--quick]

import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  statfsSync,
  writeFileSync,
} from "node:fs";
import { cpus, loadavg, platform, release, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Cluster, stopTimeoutMs, type UnexpectedExit } from "./bench_cluster.ts";
import {
  type BenchMember,
  benchMembers,
  clusterYaml,
  countInto,
  filesystemName,
  fixed,
  formatTable,
  httpUrl,
  type LatencySummary,
  type MachineCpuTicks,
  machineCpuTicks,
  median,
  sumCounts,
  summarize,
} from "./bench_lib.ts";
import { drive, get, put, type Request, requestTimeoutMs } from "./bench_load.ts";
import {
  replacementAddresses,
  replacementLines,
  replacementProblems,
  type ReplacementResult,
  runReplacement,
  stateValueBytes,
} from "./bench_replacement.ts";

const usage = `Usage: bun scripts/bench.ts [options]     (or: make bench BENCH_ARGS="...")

Starts a fresh 3-node keel cluster on 127.0.0.51-53 (peer port 7070, HTTP port 7080) in a
temp dir, with the default raft timings, and measures:
  write    PUT /v1/kv/bench-<client>-<i> (100-byte values) to the leader, 1/16/64 clients
  write    16 clients spread over all three members (followers forward to the leader)
  read     64 clients GET an acknowledged key on the leader (linearizable, ReadIndex)
  failover kill -9 (or SIGSTOP) the leader, time until a probe write is acknowledged;
           restart it and wait until it has caught up
  rss      VmRSS of every node at idle and right after the 64-client write phase
  cpu      cores used by the nodes, the load generator and the rest of the machine
Each load phase is a warm-up, then a measured run. Only 2xx answers count as acknowledged.
Then a second fresh cluster, members named by DNS (${replacementAddresses}), for
host replacement at keel's default resolver refresh:
  state    load N MB of state (10,000-byte values), snapshot it on every member
  steady   4 clients PUT 100-byte values to the leader: latency before the replacement
  replace  kill -9 a follower, wipe its data dir, start an empty host under its name at a
           new address and repoint its DNS record; time the DNS move (record change ->
           leader connected to the new address) and the catch-up (empty host start ->
           /readyz 200), with the same 4-client load running and measured meanwhile

Options:
  --duration=SECONDS   measured seconds per load phase, and of the steady load before a
                       replacement (default 5)
  --warmup=SECONDS     warm-up seconds before each load phase (default 1)
  --failovers=N        leader kills (kill -9) to time (default 5; 0 skips)
  --freezes=N          leader freezes (SIGSTOP: silent, connections left open, as a host
                       losing power) to time (default 5; 0 skips)
  --replacement-mb=N   MB (10^6 bytes) of state for the replacement (default 100; 0 skips)
  --no-replacement     skip the replacement (as --replacement-mb=0)
  --only=replacement   run the replacement alone (no load phases, failovers or freezes)
  --quick              CI smoke run: 1 s phases, 1 failover, 1 freeze, a 2 MB replacement;
                       exit 0 if it completed
  --binary=PATH        keel executable (default dist/keel)
  --phases=LIST        the load phases to run, of write-1,write-16,write-64,forwarded,read
                       (default all; read needs a write phase before it)
  --cpu-prof=DIR       run the first cluster's nodes from source under "bun --cpu-prof" and
                       write each node's profile to DIR/<member>/ when it stops; summarize one
                       with "bun scripts/profile_summary.ts FILE.cpuprofile". Killed nodes
                       write none: use with --failovers=0 --freezes=0 --no-replacement
  --tmp=DIR            parent of the temp dirs (default the OS temp dir); use a real disk:
                       on tmpfs an fsync costs nothing
  --out=DIR            where the JSON goes (default bench-results)
  --keep-logs          copy the node logs next to the JSON (always done after a problem)
  -h, --help           this text
`;

// ---- Limits -------------------------------------------------------------------------------

/** Failover probes: an attempt per surviving node every probeIntervalMs, each bounded. */
const probeIntervalMs = 10;
const probeTimeoutMs = 500;
/** A failover not over by then is reported as failed (and the run goes on). */
const failoverTimeoutMs = 30_000;
/** Acknowledged keys kept for the read phase. */
const readKeysMax = 10_000;
const valueBytes = 100;
/** How long the idle cluster's CPU use is measured for. */
const idleCpuWindowMs = 2_000;

// ---- Arguments ----------------------------------------------------------------------------

const phaseNames = ["write-1", "write-16", "write-64", "forwarded", "read"] as const;
type PhaseName = typeof phaseNames[number];

interface Options {
  durationMs: number;
  warmupMs: number;
  failovers: number;
  freezes: number;
  /** The load phases, failovers and freezes on the first cluster (not with --only=replacement). */
  mainPhases: boolean;
  /** MB of state for the replacement; 0 skips it. */
  replacementMB: number;
  quick: boolean;
  binary: string;
  phases: ReadonlySet<PhaseName>;
  cpuProfDir: string | undefined;
  tmpParent: string;
  outDir: string;
  keepLogs: boolean;
}

function fail(message: string): never {
  console.error(`bench: ${message}`);
  console.error('Run "bun scripts/bench.ts --help" for usage.');
  process.exit(2);
}

function parseOptions(): Options {
  let parsed;
  try {
    parsed = parseArgs({
      args: Bun.argv.slice(2),
      options: {
        duration: { type: "string" },
        warmup: { type: "string" },
        failovers: { type: "string" },
        freezes: { type: "string" },
        "replacement-mb": { type: "string" },
        "no-replacement": { type: "boolean", default: false },
        only: { type: "string" },
        quick: { type: "boolean", default: false },
        binary: { type: "string", default: "dist/keel" },
        "cpu-prof": { type: "string" },
        phases: { type: "string" },
        tmp: { type: "string", default: tmpdir() },
        out: { type: "string", default: "bench-results" },
        "keep-logs": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    });
  } catch (error: unknown) {
    fail(error instanceof Error ? error.message : String(error));
  }
  const values = parsed.values;
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  const quick = values.quick === true;
  /** seconds reads a flag given in seconds and returns milliseconds. */
  const seconds = (name: string, text: string | undefined, fallbackMs: number): number => {
    if (text === undefined) return fallbackMs;
    const value = Number(text);
    if (!(value > 0 && value <= 3600)) {
      fail(`--${name} must be seconds in (0, 3600], got "${text}"`);
    }
    return value * 1000;
  };
  const rounds = (name: string, text: string | undefined): number => {
    if (text === undefined) return quick ? 1 : 5;
    const count = Number(text);
    if (!Number.isSafeInteger(count) || count < 0 || count > 100) {
      fail(`--${name} must be an integer from 0 to 100, got "${text}"`);
    }
    return count;
  };
  let replacementMB = quick ? 2 : 100;
  const mbText = values["replacement-mb"];
  if (mbText !== undefined) {
    replacementMB = Number(mbText);
    if (!(replacementMB >= 0 && replacementMB <= 10_000) || mbText.trim() === "") {
      fail(`--replacement-mb must be a number of MB from 0 to 10000, got "${mbText}"`);
    }
  }
  if (values["no-replacement"] === true) {
    if (mbText !== undefined && replacementMB > 0) {
      fail("--no-replacement and --replacement-mb contradict each other");
    }
    replacementMB = 0;
  }
  const only = values.only;
  if (only !== undefined && only !== "replacement") {
    fail(`--only takes "replacement", got "${only}"`);
  }
  if (only === "replacement" && replacementMB === 0) {
    fail("--only=replacement with the replacement skipped leaves nothing to run");
  }
  const binary = resolve(values.binary);
  if (!existsSync(binary)) fail(`No keel binary at "${binary}"; run "make build" first`);
  const phases = new Set<PhaseName>();
  for (const name of (values.phases ?? phaseNames.join(",")).split(",")) {
    if (!(phaseNames as readonly string[]).includes(name)) {
      fail(`--phases takes a list of ${phaseNames.join(", ")}; got "${name}"`);
    }
    phases.add(name as PhaseName);
  }
  if (phases.has("read") && phases.size === 1) {
    fail("--phases=read needs a write phase first: the reads read what it wrote");
  }
  return {
    durationMs: seconds("duration", values.duration, quick ? 1000 : 5000),
    warmupMs: seconds("warmup", values.warmup, 1000),
    failovers: rounds("failovers", values.failovers),
    freezes: rounds("freezes", values.freezes),
    mainPhases: only === undefined,
    replacementMB,
    quick,
    binary,
    phases,
    cpuProfDir: values["cpu-prof"] === undefined ? undefined : resolve(values["cpu-prof"]),
    tmpParent: resolve(values.tmp),
    outDir: resolve(values.out),
    keepLogs: values["keep-logs"] === true,
  };
}

// ---- Load ---------------------------------------------------------------------------------

/** Linux reports process and machine CPU time in USER_HZ ticks, 100 a second. */
const cpuTicksPerSecond = 100;

/** CpuSample is the CPU time used so far by the nodes, this process and the machine. */
interface CpuSample {
  at: number;
  nodeTicks: Map<number, { name: string; ticks: number }>;
  generatorUs: number;
  machine: MachineCpuTicks | undefined;
}

/** CpuUse is CPU used over a window, in cores (CPU-seconds per second). */
interface CpuUse {
  /** The three keel nodes together. */
  keel: number;
  /** Each node; one node is one event loop, so near 1 core means that node is saturated. */
  nodes: Record<string, number>;
  /** This process: the load generator. */
  generator: number;
  /** Everything else on the machine (other work sharing it makes the numbers noisy). */
  other: number | null;
  iowait: number | null;
  steal: number | null;
}

function sampleCpu(cluster: Cluster): CpuSample {
  let machine: MachineCpuTicks | undefined;
  try {
    machine = machineCpuTicks(readFileSync("/proc/stat", "utf8"));
  } catch {
    machine = undefined;
  }
  const usage = process.cpuUsage();
  return {
    at: performance.now(),
    nodeTicks: cluster.cpuTicks(),
    generatorUs: usage.user + usage.system,
    machine,
  };
}

function cpuBetween(before: CpuSample, after: CpuSample): CpuUse {
  const seconds = (after.at - before.at) / 1000;
  const cores = (value: number): number => Math.round(value / seconds * 100) / 100;
  let keelTicks = 0;
  const nodes: Record<string, number> = {};
  for (const [pid, { name, ticks }] of after.nodeTicks) {
    const used = ticks - (before.nodeTicks.get(pid)?.ticks ?? ticks);
    keelTicks += used;
    nodes[name] = cores(used / cpuTicksPerSecond);
  }
  const keel = keelTicks / cpuTicksPerSecond;
  const generator = (after.generatorUs - before.generatorUs) / 1e6;
  const machineBefore = before.machine;
  const machineAfter = after.machine;
  if (machineBefore === undefined || machineAfter === undefined) {
    return {
      keel: cores(keel),
      nodes,
      generator: cores(generator),
      other: null,
      iowait: null,
      steal: null,
    };
  }
  const busy = (machineAfter.busy - machineBefore.busy) / cpuTicksPerSecond;
  return {
    keel: cores(keel),
    nodes,
    generator: cores(generator),
    other: cores(Math.max(0, busy - keel - generator)),
    iowait: cores((machineAfter.iowait - machineBefore.iowait) / cpuTicksPerSecond),
    steal: cores((machineAfter.steal - machineBefore.steal) / cpuTicksPerSecond),
  };
}

/** PhaseResult is one measured load phase. */
interface PhaseResult extends LatencySummary {
  phase: string;
  clients: number;
  target: string;
  durationS: number;
  acknowledged: number;
  opsPerSec: number;
  errors: number;
  errorKinds: Record<string, number>;
  /** Longest time in which no request at all was acknowledged: a cluster-wide stall. */
  maxGapMs: number;
  cpu: CpuUse;
  /** Snapshots the leader took in the phase (warm-up included); each pauses its event loop. */
  leaderSnapshots: number | null;
  /** Term and leader on the leader-to-be before and after; a change under load is a signal. */
  leaderBefore: string | null;
  leaderAfter: string | null;
  termBefore: number | null;
  termAfter: number | null;
}

const value = new TextEncoder().encode("v".repeat(valueBytes - 10) + "0123456789");
/** Acknowledged write keys, for the read phase. */
const writtenKeys: string[] = [];
/** Next key number per client, so keys stay distinct across phases. */
const nextKeyNumber = new Map<number, number>();

function writeRequest(targetFor: (client: number) => string): Request {
  return async (client) => {
    const number = nextKeyNumber.get(client) ?? 0;
    nextKeyNumber.set(client, number + 1);
    const key = `bench-${client}-${number}`;
    const outcome = await put(targetFor(client), key, value, requestTimeoutMs);
    if (outcome.ok && writtenKeys.length < readKeysMax) writtenKeys.push(key);
    return outcome;
  };
}

function readRequest(base: string): Request {
  const counters = new Map<number, number>();
  return (client) => {
    const number = counters.get(client) ?? 0;
    counters.set(client, number + 1);
    const key = writtenKeys[(client * 7919 + number) % writtenKeys.length] as string;
    return get(base, key, valueBytes);
  };
}

async function phase(
  cluster: Cluster,
  options: Options,
  name: string,
  clients: number,
  target: string,
  request: Request,
): Promise<PhaseResult> {
  console.error(`bench: ${name}, ${clients} client(s), ${target}`);
  const leader = await cluster.settle();
  const before = await cluster.status(leader);
  await drive(clients, options.warmupMs, request);
  const cpuBefore = sampleCpu(cluster);
  const measured = await drive(clients, options.durationMs, request);
  const cpu = cpuBetween(cpuBefore, sampleCpu(cluster));
  const after = await cluster.status(leader);
  const summary = summarize(measured.latenciesMs);
  const errors = sumCounts(measured.errorKinds);
  const result: PhaseResult = {
    phase: name,
    clients,
    target,
    durationS: Math.round(measured.elapsedMs) / 1000,
    acknowledged: summary.count,
    opsPerSec: summary.count / (measured.elapsedMs / 1000),
    errors,
    errorKinds: measured.errorKinds,
    ...summary,
    maxGapMs: measured.maxGapMs,
    cpu,
    leaderSnapshots: before === undefined || after === undefined
      ? null
      : after.counters.snapshotsTaken - before.counters.snapshotsTaken,
    leaderBefore: before?.leader ?? null,
    leaderAfter: after?.leader ?? null,
    termBefore: before?.term ?? null,
    termAfter: after?.term ?? null,
  };
  if (errors > 0) console.error(`bench:   errors: ${JSON.stringify(measured.errorKinds)}`);
  if (result.leaderBefore !== result.leaderAfter || result.termBefore !== result.termAfter) {
    console.error(
      `bench:   leadership changed under load: ${result.leaderBefore} (term ${result.termBefore}) -> ` +
        `${result.leaderAfter} (term ${result.termAfter})`,
    );
  }
  return result;
}

// ---- Failover -----------------------------------------------------------------------------

/**
 * FailoverMode is how the leader is taken away. "kill" is kill -9: the kernel resets its
 * connections at once, and the followers take that as a hint to campaign early. "freeze"
 * is SIGSTOP: the connections stay open and silent, as when a host loses power or the
 * network splits, so the followers must wait out an election timeout.
 */
type FailoverMode = "kill" | "freeze";

/** FailoverResult is one leader taken away. */
interface FailoverResult {
  mode: FailoverMode;
  round: number;
  leader: string;
  /** Signal -> first acknowledged probe write, ms; null if none within failoverTimeoutMs. */
  ms: number | null;
  acknowledgedBy: string | null;
  newLeader: string | null;
  probes: number;
  probeErrors: Record<string, number>;
  /** Restart of the old leader -> cluster settled again with it caught up, ms. */
  rejoinMs: number | null;
}

/** Probes in flight to one node at most; probeTimeoutMs / probeIntervalMs is about 50. */
const probesInFlightMax = 64;

async function failover(
  cluster: Cluster,
  mode: FailoverMode,
  round: number,
): Promise<FailoverResult> {
  const leader = await cluster.settle();
  const survivors = benchMembers.filter((member) => member.name !== leader.name);
  const probeErrors: Record<string, number> = {};
  const inFlight = new Map<string, number>();
  let probes = 0;
  let acknowledgedAt: number | undefined;
  let acknowledgedBy: string | null = null;
  console.error(
    `bench: failover ${mode} ${round}: ${mode === "kill" ? "kill -9" : "SIGSTOP"} ${leader.name}`,
  );
  const signalledAt = performance.now();
  if (mode === "kill") {
    await cluster.kill(leader.name);
  } else {
    cluster.freeze(leader.name);
  }
  // A new probe to every survivor each interval, not waiting for the previous one: a probe
  // stuck on a follower that still forwards to the old leader must not delay the next.
  while (acknowledgedAt === undefined && performance.now() - signalledAt < failoverTimeoutMs) {
    for (const member of survivors) {
      const busy = inFlight.get(member.name) ?? 0;
      if (busy >= probesInFlightMax) continue;
      inFlight.set(member.name, busy + 1);
      const key = `failover-${mode}-${round}-${probes++}`;
      void put(httpUrl(member), key, value, probeTimeoutMs).then((outcome) => {
        inFlight.set(member.name, (inFlight.get(member.name) ?? 1) - 1);
        if (outcome.ok) {
          if (acknowledgedAt === undefined) {
            acknowledgedAt = performance.now();
            acknowledgedBy = member.name;
          }
        } else if (acknowledgedAt === undefined) {
          countInto(probeErrors, outcome.error);
        }
      });
    }
    await Bun.sleep(probeIntervalMs);
  }
  const ms = acknowledgedAt === undefined
    ? null
    : Math.round((acknowledgedAt - signalledAt) * 10) / 10;
  const statuses = await Promise.all(survivors.map((member) => cluster.status(member)));
  const newLeader = statuses.find((status) => status?.leader !== null)?.leader ?? null;
  console.error(
    ms === null
      ? `bench:   no write acknowledged within ${failoverTimeoutMs} ms`
      : `bench:   write acknowledged after ${ms} ms (new leader ${newLeader}); restarting ${leader.name}`,
  );
  if (mode === "freeze") await cluster.kill(leader.name);
  const restartedAt = performance.now();
  cluster.start(leader);
  let rejoinMs: number | null = null;
  try {
    await cluster.settle();
    rejoinMs = Math.round(performance.now() - restartedAt);
  } catch (error: unknown) {
    console.error(`bench:   ${error instanceof Error ? error.message : String(error)}`);
  }
  return {
    mode,
    round,
    leader: leader.name,
    ms,
    acknowledgedBy,
    newLeader,
    probes,
    probeErrors,
    rejoinMs,
  };
}

// ---- Report -------------------------------------------------------------------------------

function keelVersion(binary: string): string {
  const result = Bun.spawnSync([binary, "--version"], { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    throw new Error(`"${binary} --version" exited with code ${result.exitCode}`);
  }
  return result.stdout.toString().trim();
}

/**
 * sourceInfo is the binary, the commit of the git work tree around it (presumably what it
 * was built from) and whether that tree's src/ has uncommitted edits.
 */
function sourceInfo(
  binary: string,
): { binary: string; commit: string | null; srcModified: boolean | null } {
  const run = (args: string[]): string | null => {
    try {
      const result = Bun.spawnSync(["git", "-C", dirname(binary), ...args], {
        stdout: "pipe",
        stderr: "ignore",
      });
      return result.exitCode === 0 ? result.stdout.toString().trim() : null;
    } catch {
      return null;
    }
  };
  const status = run(["status", "--porcelain", "--", "../src"]);
  return {
    binary,
    commit: run(["rev-parse", "HEAD"]),
    srcModified: status === null ? null : status !== "",
  };
}

function machineInfo(binary: string, dir: string): Record<string, unknown> {
  const cpuList = cpus();
  return {
    os: `${platform()} ${release()}`,
    cpus: cpuList.length,
    cpuModel: cpuList[0]?.model ?? "unknown",
    totalMemoryMiB: Math.round(totalmem() / 1024 / 1024),
    bun: Bun.version,
    keel: keelVersion(binary),
    dataFilesystem: filesystemName(statfsSync(dir).type),
    /** Load average before the cluster starts: other work on the machine skews results. */
    loadAverage1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
  };
}

function phaseTable(phases: readonly PhaseResult[]): string {
  return formatTable(
    [
      "phase",
      "clients",
      "ops/s",
      "p50 ms",
      "p99 ms",
      "max ms",
      "max gap ms",
      "errors",
      "cpu keel/gen/other",
    ],
    phases.map((p) => [
      `${p.phase} (${p.target})`,
      String(p.clients),
      fixed(p.opsPerSec, 0),
      fixed(p.p50Ms, 2),
      fixed(p.p99Ms, 2),
      fixed(p.maxMs, 1),
      fixed(p.maxGapMs, 1),
      String(p.errors),
      `${fixed(p.cpu.keel, 2)}/${fixed(p.cpu.generator, 2)}/${fixed(p.cpu.other ?? NaN, 2)}`,
    ]),
  );
}

/** FailoverSummary is the median and range of the rounds of one mode. */
interface FailoverSummary {
  rounds: number;
  failed: number;
  medianMs: number | null;
  minMs: number | null;
  maxMs: number | null;
}

function failoverSummary(results: readonly FailoverResult[]): FailoverSummary {
  const times = results.flatMap((result) => result.ms === null ? [] : [result.ms]);
  return {
    rounds: results.length,
    failed: results.length - times.length,
    medianMs: times.length === 0 ? null : median(times),
    minMs: times.length === 0 ? null : Math.min(...times),
    maxMs: times.length === 0 ? null : Math.max(...times),
  };
}

const failoverLabels: Record<FailoverMode, string> = {
  kill: "failover, kill -9 leader -> next acknowledged write",
  freeze: "failover, SIGSTOP leader -> next acknowledged write",
};

function failoverLine(mode: FailoverMode, results: readonly FailoverResult[]): string {
  const summary = failoverSummary(results);
  const each = results.map((result) => result.ms === null ? "none" : `${result.ms}`).join(", ");
  return `${failoverLabels[mode]}: median ${fixed(summary.medianMs ?? NaN, 0)} ms, range ` +
    `${fixed(summary.minMs ?? NaN, 0)}-${fixed(summary.maxMs ?? NaN, 0)} ms (${each})`;
}

// ---- Main ---------------------------------------------------------------------------------

/** clusters are the clusters made so far, with a label for their copied logs. */
const clusters: { label: string; cluster: Cluster }[] = [];

// Each Cluster kills its nodes and removes its temp dir when the process exits.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    console.error(`bench: ${signal}; stopping the cluster`);
    process.exit(130);
  });
}

function keepLogs(options: Options, stamp: string): string | undefined {
  if (clusters.length === 0) return undefined;
  const dir = join(options.outDir, `bench-${stamp}-logs`);
  mkdirSync(dir, { recursive: true });
  for (const { label, cluster } of clusters) {
    for (const member of cluster.members) {
      try {
        copyFileSync(cluster.logPath(member.name), join(dir, `${label}${member.name}.log`));
      } catch {
        // never started
      }
    }
  }
  return dir;
}

/** MainResult is what the first cluster measured. */
interface MainResult {
  phases: PhaseResult[];
  failovers: FailoverResult[];
  freezes: FailoverResult[];
  rssIdle: Record<string, number | null>;
  rssAfterLoad: Record<string, number | null>;
  cpuIdle: CpuUse;
  unexpectedExits: UnexpectedExit[];
  slowToStop: string[];
}

/** runMain runs the load phases, failovers and freezes on a fresh cluster, and stops it. */
async function runMain(options: Options): Promise<MainResult> {
  const cluster = new Cluster({
    binary: options.binary,
    cpuProfDir: options.cpuProfDir,
    tmpParent: options.tmpParent,
    prefix: "keel-bench-",
    members: benchMembers,
    yaml: (storageDir) => clusterYaml(benchMembers, storageDir),
  });
  clusters.push({ label: "", cluster });
  console.error(`bench: temp dir ${cluster.dir}`);
  for (const member of benchMembers) cluster.start(member);
  const firstLeader = await cluster.settle();
  console.error(`bench: cluster up, leader ${firstLeader.name}`);
  await Bun.sleep(500);
  const rssIdle = cluster.rss();
  // CPU of an idle cluster: heartbeats and ticks only; much more would mean a busy loop.
  const idleBefore = sampleCpu(cluster);
  await Bun.sleep(idleCpuWindowMs);
  const cpuIdle = cpuBetween(idleBefore, sampleCpu(cluster));

  const phases: PhaseResult[] = [];
  let rssAfterLoad: Record<string, number | null> = {};
  for (const clients of [1, 16, 64]) {
    if (!options.phases.has(`write-${clients}` as PhaseName)) continue;
    const leader = await cluster.settle();
    phases.push(
      await phase(
        cluster,
        options,
        "write",
        clients,
        "leader",
        writeRequest(() => httpUrl(leader)),
      ),
    );
    if (clients === 64) rssAfterLoad = cluster.rss();
  }
  if (options.phases.has("forwarded")) {
    phases.push(
      await phase(
        cluster,
        options,
        "write",
        16,
        "all nodes, forwarded",
        writeRequest((client) =>
          httpUrl(benchMembers[client % benchMembers.length] as BenchMember)
        ),
      ),
    );
  }
  if (options.phases.has("read")) {
    if (writtenKeys.length === 0) throw new Error("No write was acknowledged; nothing to read");
    const readLeader = await cluster.settle();
    phases.push(
      await phase(cluster, options, "read", 64, "leader", readRequest(httpUrl(readLeader))),
    );
  }

  const failovers: FailoverResult[] = [];
  for (let round = 1; round <= options.failovers; round++) {
    failovers.push(await failover(cluster, "kill", round));
  }
  const freezes: FailoverResult[] = [];
  for (let round = 1; round <= options.freezes; round++) {
    freezes.push(await failover(cluster, "freeze", round));
  }

  const slowToStop = await cluster.stop();
  return {
    phases,
    failovers,
    freezes,
    rssIdle,
    rssAfterLoad,
    cpuIdle,
    unexpectedExits: cluster.unexpectedExits,
    slowToStop,
  };
}

function rssLine(label: string, rss: Record<string, number | null>): string {
  return `rss ${label}: ${
    Object.entries(rss).map(([name, mib]) => `${name} ${mib ?? "?"} MiB`).join(", ")
  }`;
}

/** mainLines are the terminal lines of the first cluster, and its problems. */
function mainLines(options: Options, result: MainResult): { lines: string[]; problems: string[] } {
  const { phases, failovers, freezes, rssIdle, rssAfterLoad, cpuIdle } = result;
  const lines: string[] = [];
  lines.push(
    `3 nodes + load generator on one machine; ${options.durationMs / 1000} s per phase ` +
      `after ${options.warmupMs / 1000} s warm-up; ${valueBytes}-byte values`,
  );
  lines.push("", phaseTable(phases));
  lines.push(
    "max gap: longest time with no request acknowledged; cpu: cores used by the 3 keel " +
      "nodes / the load generator / everything else",
    "",
  );
  if (failovers.length > 0) lines.push(failoverLine("kill", failovers));
  if (freezes.length > 0) lines.push(failoverLine("freeze", freezes));
  lines.push(rssLine("idle", rssIdle), rssLine("after 64-client writes", rssAfterLoad));
  lines.push(
    `cpu idle (${idleCpuWindowMs / 1000} s, no load): keel nodes ${fixed(cpuIdle.keel, 2)} ` +
      `cores, other ${fixed(cpuIdle.other ?? NaN, 2)} cores`,
  );
  const problems: string[] = [];
  const failed = [...failovers, ...freezes].filter((failover) =>
    failover.ms === null || failover.rejoinMs === null
  );
  if (failed.length > 0) {
    problems.push(`failovers without a write or a rejoin: ${JSON.stringify(failed)}`);
  }
  if (result.unexpectedExits.length > 0) {
    problems.push(`nodes exited unexpectedly: ${JSON.stringify(result.unexpectedExits)}`);
  }
  if (result.slowToStop.length > 0) {
    problems.push(
      `did not stop within ${stopTimeoutMs} ms of SIGTERM: ${result.slowToStop.join(", ")}`,
    );
  }
  return { lines, problems };
}

async function main(): Promise<number> {
  const options = parseOptions();
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const startedAt = new Date().toISOString();
  const version = keelVersion(options.binary);
  const machine = machineInfo(options.binary, options.tmpParent);
  console.error(`bench: ${version}, ${machine.cpus} CPU(s)`);
  let first: MainResult | null = null;
  try {
    if (options.mainPhases) first = await runMain(options);
  } catch (error: unknown) {
    console.error(
      `bench: failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`,
    );
    console.error(`bench: node logs kept in ${keepLogs(options, stamp)}`);
    return 1;
  }

  // The replacement runs on its own cluster, so the first one's figures are not affected.
  let replacement: ReplacementResult | null = null;
  let replacementError: string | null = null;
  if (options.replacementMB > 0) {
    try {
      replacement = await runReplacement({
        binary: options.binary,
        tmpParent: options.tmpParent,
        keys: Math.max(1, Math.round(options.replacementMB * 1e6 / stateValueBytes)),
        valueBytes: stateValueBytes,
        steadyMs: options.durationMs,
        warmupMs: options.warmupMs,
        onCluster: (cluster) => clusters.push({ label: "replacement-", cluster }),
      });
    } catch (error: unknown) {
      replacementError = error instanceof Error ? error.stack ?? error.message : String(error);
      console.error(`bench: replacement failed: ${replacementError}`);
    }
  }

  const report = {
    startedAt,
    options: {
      durationS: options.durationMs / 1000,
      warmupS: options.warmupMs / 1000,
      failovers: options.failovers,
      freezes: options.freezes,
      mainPhases: options.mainPhases,
      replacementMB: options.replacementMB,
      quick: options.quick,
      valueBytes,
      raft: "defaults (tick 10ms, heartbeat 100ms, election 1s, snapshot every 10,000 entries)",
    },
    machine,
    source: sourceInfo(options.binary),
    phases: first?.phases ?? [],
    failover: first === null ? null : {
      kill: { ...failoverSummary(first.failovers), results: first.failovers },
      freeze: { ...failoverSummary(first.freezes), results: first.freezes },
    },
    rssMiB: first === null ? null : { idle: first.rssIdle, afterWrite64: first.rssAfterLoad },
    cpuIdle: first?.cpuIdle ?? null,
    replacement,
    problems: {
      unexpectedExits: first?.unexpectedExits ?? [],
      slowToStop: first?.slowToStop ?? [],
      replacement: replacementError ??
        (replacement === null ? [] : replacementProblems(replacement)),
    },
  };

  mkdirSync(options.outDir, { recursive: true });
  const jsonPath = join(options.outDir, `bench-${stamp}.json`);
  writeFileSync(jsonPath, JSON.stringify(report, null, 2) + "\n");

  const out: string[] = [];
  out.push(
    `keel benchmark: ${version}, ${machine.cpus} x ${machine.cpuModel}, ` +
      `${machine.totalMemoryMiB} MiB, bun ${machine.bun}, data on ${machine.dataFilesystem}`,
  );
  const problems: string[] = [];
  if (first !== null) {
    const { lines, problems: mainProblems } = mainLines(options, first);
    out.push(...lines);
    problems.push(...mainProblems);
  }
  if (replacement !== null) {
    if (first !== null) out.push("");
    out.push(...replacementLines(replacement));
    problems.push(...replacementProblems(replacement).map((problem) => `replacement: ${problem}`));
  }
  if (replacementError !== null) {
    problems.push(`replacement failed: ${replacementError.split("\n")[0]}`);
  }
  for (const problem of problems) out.push(`PROBLEM: ${problem}`);
  out.push("", `results: ${jsonPath}`);
  if (options.keepLogs || problems.length > 0) out.push(`logs: ${keepLogs(options, stamp)}`);
  console.log(out.join("\n"));
  return replacementError === null ? 0 : 1;
}

process.exit(await main());
