// The benchmark's cluster: one process of the compiled binary per member, each with a log
// file and a data dir in a temp dir, and the /status questions scripts/bench.ts asks them.
// Every Cluster made is killed and its temp dir removed when the process exits, however
// it exits (an error, Ctrl-C, or the end of the run).

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { NodeStatusView } from "../src/http/api.ts";
import { type BenchMember, httpUrl, procCpuTicks, rssKb } from "./bench_lib.ts";

/** How long the cluster may take to elect its first leader, or a restarted node to catch up. */
export const settleTimeoutMs = 30_000;
/** How long a node gets to stop on SIGTERM at the end before it is killed. */
export const stopTimeoutMs = 5_000;

/** UnexpectedExit is a node that exited without the benchmark killing it: a bug signal. */
export interface UnexpectedExit {
  name: string;
  code: number | null;
  signal: string | null;
  atMs: number;
}

export interface ClusterOptions {
  binary: string;
  /**
   * Run each member as `bun --cpu-prof` of src/main.ts instead of the binary, writing its
   * profile under this dir (<dir>/<member>/) when it exits (not when killed).
   */
  cpuProfDir?: string | undefined;
  /** Parent of the temp dir. */
  tmpParent: string;
  /** Start of the temp dir's name, e.g. "keel-bench-". */
  prefix: string;
  members: readonly BenchMember[];
  /** The cluster file's text, given the storage dir (dir/data). */
  yaml: (storageDir: string) => string;
  /**
   * Pass --peer-listen and --http-listen with the member's current host: needed when the
   * cluster file names members by DNS, so each process knows its own address.
   */
  listenFlags?: boolean;
}

/** live are the clusters not removed yet; the exit hook below kills and removes them. */
const live = new Set<Cluster>();

process.on("exit", () => {
  for (const cluster of live) cluster.removeNow();
});

/** Cluster runs the member processes and knows how to ask them about their state. */
export class Cluster {
  readonly dir: string;
  readonly configPath: string;
  readonly unexpectedExits: UnexpectedExit[] = [];
  readonly #options: ClusterOptions;
  /** The members with their current hosts (moveTo changes one). */
  readonly #members: BenchMember[];
  readonly #processes = new Map<string, Subprocess>();
  readonly #killing = new Set<string>();
  readonly #startedAt = performance.now();

  constructor(options: ClusterOptions) {
    this.#options = options;
    this.#members = options.members.map((member) => ({ ...member }));
    this.dir = mkdtempSync(join(options.tmpParent, options.prefix));
    live.add(this);
    this.configPath = join(this.dir, "cluster.yaml");
    writeFileSync(this.configPath, options.yaml(join(this.dir, "data")));
  }

  get members(): readonly BenchMember[] {
    return this.#members;
  }

  member(name: string): BenchMember {
    const member = this.#members.find((m) => m.name === name);
    if (member === undefined) throw new RangeError(`No member "${name}"`);
    return member;
  }

  /** moveTo gives a stopped member a new host address: its replacement host. */
  moveTo(name: string, host: string): void {
    if (this.#processes.has(name)) throw new Error(`Node "${name}" is running`);
    const index = this.#members.findIndex((m) => m.name === name);
    const member = this.#members[index];
    if (member === undefined) throw new RangeError(`No member "${name}"`);
    this.#members[index] = { ...member, host };
  }

  logPath(name: string): string {
    return join(this.dir, `${name}.log`);
  }

  dataDir(name: string): string {
    return join(this.dir, "data", name);
  }

  pid(name: string): number | undefined {
    return this.#processes.get(name)?.pid;
  }

  start(member: BenchMember): void {
    if (this.#processes.has(member.name)) {
      throw new Error(`Node "${member.name}" is already running`);
    }
    const at = this.member(member.name);
    const listen = this.#options.listenFlags === true
      ? [
        "--peer-listen",
        `${at.host}:${at.peerPort}`,
        "--http-listen",
        `${at.host}:${at.httpPort}`,
      ]
      : [];
    const log = openSync(this.logPath(member.name), "a");
    try {
      const profDir = this.#options.cpuProfDir;
      const command = profDir === undefined ? [this.#options.binary] : [
        process.execPath,
        "--cpu-prof",
        "--cpu-prof-md",
        `--cpu-prof-dir=${join(profDir, member.name)}`,
        "--cpu-prof-interval=250",
        join(import.meta.dir, "..", "src", "main.ts"),
      ];
      const child = Bun.spawn([
        ...command,
        "run",
        "--config",
        this.configPath,
        "--name",
        member.name,
        "--data-dir",
        this.dataDir(member.name),
        ...listen,
      ], { stdin: "ignore", stdout: log, stderr: log });
      this.#processes.set(member.name, child);
      void child.exited.then(() => {
        if (this.#processes.get(member.name) !== child) return;
        this.#processes.delete(member.name);
        if (this.#killing.delete(member.name)) return;
        const exit: UnexpectedExit = {
          name: member.name,
          code: child.exitCode,
          signal: child.signalCode === null ? null : String(child.signalCode),
          atMs: Math.round(performance.now() - this.#startedAt),
        };
        this.unexpectedExits.push(exit);
        console.error(
          `bench: ${member.name} exited unexpectedly (code ${exit.code}, signal ${exit.signal}); ` +
            `see ${this.logPath(member.name)}`,
        );
      });
    } finally {
      closeSync(log);
    }
  }

  /** kill sends SIGKILL to one node and waits for it to be gone. */
  async kill(name: string): Promise<void> {
    const child = this.#processes.get(name);
    if (child === undefined) return;
    this.#killing.add(name);
    child.kill("SIGKILL");
    await child.exited;
  }

  /** stop asks every node to stop (SIGTERM) and kills those that do not in time. */
  async stop(): Promise<string[]> {
    const slow: string[] = [];
    const stopping = [...this.#processes].map(async ([name, child]) => {
      this.#killing.add(name);
      child.kill("SIGTERM");
      const stopped = await Promise.race([
        child.exited.then(() => true),
        Bun.sleep(stopTimeoutMs).then(() => false),
      ]);
      if (!stopped) {
        slow.push(name);
        child.kill("SIGKILL");
        await child.exited;
      }
    });
    await Promise.all(stopping);
    return slow;
  }

  /** freeze stops a node with SIGSTOP: alive, connections open, silent. kill ends it. */
  freeze(name: string): void {
    this.#processes.get(name)?.kill("SIGSTOP");
  }

  /** removeNow kills every node at once and removes the temp dir (logs included). */
  removeNow(): void {
    for (const [name, child] of this.#processes) {
      this.#killing.add(name);
      child.kill("SIGKILL");
    }
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  running(): BenchMember[] {
    return this.#members.filter((member) => this.#processes.has(member.name));
  }

  async status(member: BenchMember): Promise<NodeStatusView | undefined> {
    try {
      const response = await fetch(`${httpUrl(this.member(member.name))}/status`, {
        signal: AbortSignal.timeout(1000),
      });
      if (!response.ok) return undefined;
      return await response.json() as NodeStatusView;
    } catch {
      return undefined;
    }
  }

  /**
   * settle waits until every running node reports the same non-null leader, and that
   * leader sees every running follower connected with no lag. Returns the leader.
   */
  async settle(): Promise<BenchMember> {
    const deadline = performance.now() + settleTimeoutMs;
    let last = "no answer yet";
    while (performance.now() < deadline) {
      // Numbers from a cluster that lost a member on its own would mean nothing.
      const exited = this.unexpectedExits[0];
      if (exited !== undefined) {
        throw new Error(
          `Node "${exited.name}" exited unexpectedly (code ${exited.code}, signal ${exited.signal})`,
        );
      }
      const running = this.running();
      const statuses = await Promise.all(running.map((member) => this.status(member)));
      const leaders = new Set(statuses.map((status) => status?.leader ?? null));
      const name = leaders.size === 1 ? [...leaders][0] : null;
      const leader = this.#members.find((member) => member.name === name);
      const leaderStatus = statuses.find((status) => status?.name === name);
      if (leader !== undefined && leaderStatus !== undefined) {
        const behind = leaderStatus.members.filter((member) =>
          running.some((r) => r.name === member.name) && (!member.connected || member.lag !== 0)
        );
        if (behind.length === 0) return leader;
        last = `leader ${name}; not caught up: ${behind.map((b) => b.name).join(", ")}`;
      } else {
        last = `leaders seen: ${JSON.stringify(statuses.map((status) => status?.leader ?? "?"))}`;
      }
      await Bun.sleep(50);
    }
    throw new Error(`Cluster did not settle within ${settleTimeoutMs} ms (${last})`);
  }

  /** cpuTicks is each running node's CPU time so far, by pid. */
  cpuTicks(): Map<number, { name: string; ticks: number }> {
    const ticks = new Map<number, { name: string; ticks: number }>();
    for (const [name, child] of this.#processes) {
      try {
        const value = procCpuTicks(readFileSync(`/proc/${child.pid}/stat`, "utf8"));
        if (value !== undefined) ticks.set(child.pid, { name, ticks: value });
      } catch {
        // exited meanwhile
      }
    }
    return ticks;
  }

  /** rss is each member's VmRSS in MiB (null when not running). */
  rss(): Record<string, number | null> {
    const result: Record<string, number | null> = {};
    for (const member of this.#members) {
      const pid = this.pid(member.name);
      let kb: number | undefined;
      if (pid !== undefined) {
        try {
          kb = rssKb(readFileSync(`/proc/${pid}/status`, "utf8"));
        } catch {
          kb = undefined;
        }
      }
      result[member.name] = kb === undefined ? null : Math.round(kb / 1024 * 10) / 10;
    }
    return result;
  }
}
