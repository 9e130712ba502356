// A real cluster for end-to-end tests: the compiled binary (dist/keel), one process per
// member on its own 127.0.0.x address, real data dirs in a temp folder, kill -9 and
// restart. Every test that makes one must call stop() (use afterAll / finally).

import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import type { NodeStatusView } from "../../src/http/api.ts";

export const binaryPath = resolve(import.meta.dir, "..", "..", "dist", "keel");

export function requireBinary(path = binaryPath): void {
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: run "make build" (make test does it first)`);
  }
}

export interface ClusterOptions {
  /** The executable to run (a binary built with keel as a library); dist/keel by default. */
  binary?: string;
  /** Member count (3 or 5). */
  size?: number;
  /** First IP's last octet: members get 127.0.0.<base>, <base+1>, ... */
  ipBase: number;
  peerPort?: number;
  httpPort?: number;
  name?: string;
  /** Extra YAML appended to the config (e.g. a raft: section). */
  extraYaml?: string;
  electionTimeout?: string;
  heartbeatInterval?: string;
  snapshotEntries?: number;
  /**
   * Address members by DNS names (node-a.<domain>) served by a test DNS server: the
   * config names them, resolver.servers points at the server, and each process binds
   * its member's current IP with --peer-listen / --http-listen.
   */
  dns?: { server: string; domain: string; refresh?: string };
}

export interface Member {
  name: string;
  ip: string;
  url: string;
  dataDir: string;
  process: Subprocess | undefined;
  /** Everything the process wrote on stderr (its log), across restarts. */
  log: string[];
}

/** StatusBody is a member's GET /status: the node's NodeStatusView. */
export type StatusBody = NodeStatusView;

export class TestCluster {
  readonly dir: string;
  readonly configPath: string;
  readonly members: Member[];

  constructor(readonly options: ClusterOptions) {
    requireBinary(options.binary);
    const size = options.size ?? 3;
    const peerPort = options.peerPort ?? 7070;
    const httpPort = options.httpPort ?? 7080;
    this.dir = mkdtempSync(join(tmpdir(), "keel-e2e-"));
    this.members = [];
    const lines = [`cluster_name: ${options.name ?? "e2e"}`, "members:"];
    for (let i = 0; i < size; i++) {
      const name = `node-${String.fromCharCode(97 + i)}`;
      const ip = `127.0.0.${options.ipBase + i}`;
      const host = options.dns ? `${name}.${options.dns.domain}` : ip;
      lines.push(
        `  - name: ${name}`,
        `    peer: ${host}:${peerPort}`,
        `    http: ${host}:${httpPort}`,
      );
      this.members.push({
        name,
        ip,
        url: `http://${ip}:${httpPort}`,
        dataDir: join(this.dir, name),
        process: undefined,
        log: [],
      });
    }
    lines.push(
      "raft:",
      `  election_timeout: ${options.electionTimeout ?? "600ms"}`,
      `  heartbeat_interval: ${options.heartbeatInterval ?? "60ms"}`,
      `  snapshot_entries: ${options.snapshotEntries ?? 10000}`,
      "log:",
      "  level: info",
    );
    if (options.dns) {
      lines.push(
        "resolver:",
        `  refresh: ${options.dns.refresh ?? "1s"}`,
        `  servers: ["${options.dns.server}"]`,
      );
    }
    if (options.extraYaml) lines.push(options.extraYaml);
    this.configPath = join(this.dir, "cluster.yaml");
    writeFileSync(this.configPath, lines.join("\n") + "\n");
  }

  member(name: string): Member {
    const member = this.members.find((m) => m.name === name);
    if (member === undefined) throw new RangeError(`No member "${name}"`);
    return member;
  }

  start(name: string, extraArgs: string[] = []): void {
    const member = this.member(name);
    if (member.process !== undefined && member.process.exitCode === null) {
      throw new Error(`${name} is already running`);
    }
    const child = Bun.spawn(
      [
        this.options.binary ?? binaryPath,
        "run",
        "--config",
        this.configPath,
        "--name",
        name,
        "--data-dir",
        member.dataDir,
        ...(this.options.dns
          ? [
            "--peer-listen",
            `${member.ip}:${this.options.peerPort ?? 7070}`,
            "--http-listen",
            `${member.ip}:${this.options.httpPort ?? 7080}`,
          ]
          : []),
        ...extraArgs,
      ],
      { stdout: "ignore", stderr: "pipe" },
    );
    member.process = child;
    void collectLines(child.stderr as ReadableStream<Uint8Array>, member.log);
  }

  /** moveTo gives a member a new host address (its replacement host), for DNS drills. */
  moveTo(name: string, ip: string): void {
    const member = this.member(name);
    member.ip = ip;
    member.url = `http://${ip}:${this.options.httpPort ?? 7080}`;
  }

  startAll(): void {
    for (const member of this.members) this.start(member.name);
  }

  /** kill sends SIGKILL (kill -9) and waits for the process to be gone. */
  async kill(name: string, signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    const member = this.member(name);
    const child = member.process;
    if (child === undefined) return;
    child.kill(signal);
    await child.exited;
    member.process = undefined;
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((member) => this.kill(member.name)));
    if (!process.env.KEEP_TEST_DATA) rmSync(this.dir, { recursive: true, force: true });
  }

  async status(name: string): Promise<StatusBody | undefined> {
    try {
      const response = await fetch(`${this.member(name).url}/status`, {
        signal: AbortSignal.timeout(1000),
      });
      if (!response.ok) return undefined;
      return await response.json() as StatusBody;
    } catch {
      return undefined;
    }
  }

  /** waitFor polls until check returns a value (not undefined), or throws after timeoutMs. */
  async waitFor<T>(
    what: string,
    check: () => Promise<T | undefined>,
    timeoutMs = 15_000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const value = await check();
      if (value !== undefined) return value;
      await Bun.sleep(50);
    }
    throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}\n${this.tails()}`);
  }

  /** waitForLeader resolves with the leader's name once every running member agrees. */
  async waitForLeader(exclude: string[] = [], timeoutMs = 15_000): Promise<string> {
    return await this.waitFor("a leader all running members agree on", async () => {
      const running = this.members.filter((m) =>
        m.process !== undefined && !exclude.includes(m.name)
      );
      const statuses = await Promise.all(running.map((m) => this.status(m.name)));
      const leader = statuses[0]?.leader;
      if (leader === null || leader === undefined || exclude.includes(leader)) return undefined;
      if (!statuses.every((s) => s !== undefined && s.leader === leader)) return undefined;
      const leaderStatus = statuses.find((s) => s?.name === leader);
      return leaderStatus?.role === "leader" ? leader : undefined;
    }, timeoutMs);
  }

  async put(
    name: string,
    key: string,
    value: string,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    return await fetch(`${this.member(name).url}/v1/kv/${encodeURIComponent(key)}`, {
      method: "PUT",
      body: value,
      headers,
      signal: AbortSignal.timeout(10_000),
    });
  }

  async get(
    name: string,
    key: string,
    consistency: "linearizable" | "stale" = "linearizable",
  ): Promise<Response> {
    const query = consistency === "stale" ? "?consistency=stale" : "";
    return await fetch(`${this.member(name).url}/v1/kv/${encodeURIComponent(key)}${query}`, {
      signal: AbortSignal.timeout(10_000),
    });
  }

  /** putWithRetry retries a write (same idempotency key) until it is acknowledged. */
  async putWithRetry(
    names: string[],
    key: string,
    value: string,
    idempotencyKey: string,
    timeoutMs = 15_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let attempt = 0;
    let last = "";
    while (Date.now() < deadline) {
      const name = names[attempt++ % names.length]!;
      try {
        const response = await this.put(name, key, value, { "Idempotency-Key": idempotencyKey });
        if (response.ok) return;
        last = `${response.status} ${await response.text()}`;
      } catch (error: unknown) {
        last = String(error);
      }
      await Bun.sleep(50);
    }
    throw new Error(
      `Write of ${key} not acknowledged within ${timeoutMs} ms: ${last}\n${this.tails()}`,
    );
  }

  tails(lines = 15): string {
    return this.members.map((m) =>
      `--- ${m.name} log (last ${lines} lines)\n${m.log.slice(-lines).join("\n")}`
    ).join("\n");
  }
}

/** collectLines appends the stream's lines to `into`, keeping the last 5,000. */
export async function collectLines(
  stream: ReadableStream<Uint8Array>,
  into: string[],
): Promise<void> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    into.push(...lines);
    if (into.length > 5000) into.splice(0, into.length - 5000);
  }
}
