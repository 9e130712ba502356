// Cluster timers across leader changes, in-process: three real KeelNodes (the real loop,
// SQLite storage, the real core) over an in-memory network, each with its own instance of
// a service that records where each onTimer ran. Reference: DESIGN §7 (timers are log
// entries, as in Aeron Cluster).

import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfigText } from "../../src/config/parse.ts";
import type { Config } from "../../src/config/types.ts";
import type { Message, NodeId, Sender } from "../../src/consensus/types.ts";
import { createLogger } from "../../src/lib/log.ts";
import { KeelNode, type RecoveryTransport } from "../../src/node/node.ts";
import {
  type ApplyContext,
  jsonService,
  type Service,
  type ServiceRole,
  type StartContext,
} from "../../src/service/service.ts";
import { SessionService } from "../../src/service/sessions.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import type { PeerLinkState } from "../../src/transport/transport.ts";

// ---- The service -------------------------------------------------------------------------

interface Firing {
  id: string;
  index: number;
  term: number;
  timeMs: number;
  deadlineMs: number;
}

/** Alarms schedules timers on command and records every firing in its replicated state. */
class Alarms {
  firings: Firing[] = [];
  deadlines = new Map<string, number>();
  applied = 0;
  /** Not replicated: what this member was told about itself. */
  roles: string[] = [];
  startedAt: number | undefined;

  start(context: StartContext): void {
    this.startedAt = context.appliedIndex;
  }

  onRoleChange(role: ServiceRole): void {
    this.roles.push(role);
  }

  apply(command: { schedule: Array<{ id: string; inMs: number }> }, context: ApplyContext) {
    this.applied++;
    for (const { id, inMs } of command.schedule) {
      const deadlineMs = context.timeMs + inMs;
      context.schedule(id, deadlineMs);
      this.deadlines.set(id, deadlineMs);
    }
    return { scheduled: command.schedule.length, timeMs: context.timeMs };
  }

  onTimer(id: string, context: ApplyContext): void {
    const deadlineMs = this.deadlines.get(id) ?? -1;
    this.deadlines.delete(id);
    this.firings.push({
      id,
      index: context.index,
      term: context.term,
      timeMs: context.timeMs,
      deadlineMs,
    });
  }

  snapshot() {
    return { firings: this.firings, deadlines: [...this.deadlines], applied: this.applied };
  }

  /** Set by a test: restore refuses every snapshot, as a buggy service would. */
  failRestore = false;

  restore(state: unknown): void {
    if (this.failRestore) throw new Error("this build cannot read its snapshots");
    const s = state as { firings: Firing[]; deadlines: [string, number][]; applied: number };
    this.firings = s.firings;
    this.deadlines = new Map(s.deadlines);
    this.applied = s.applied;
  }
}

// ---- An in-memory network ----------------------------------------------------------------

/** Network delivers messages between the live members, on a later turn of the event loop. */
class Network {
  readonly nodes = new Map<NodeId, InProcess>();
  /** Members cut off from everyone (both directions). */
  readonly isolated = new Set<NodeId>();
  /** Sees every message delivered, after its delivery. */
  tap: ((message: Message) => void) | undefined;

  reachable(from: NodeId, to: NodeId): boolean {
    return !this.isolated.has(from) && !this.isolated.has(to) &&
      this.nodes.get(from)?.up === true && this.nodes.get(to)?.up === true;
  }
}

class MemoryTransport implements RecoveryTransport {
  #handler: ((message: Message, sender: Sender) => void) | undefined;
  #peerDown: ((name: NodeId) => void) | undefined;

  constructor(readonly network: Network, readonly self: InProcess) {}

  start(): Promise<void> {
    return Promise.resolve();
  }

  send(message: Message): void {
    const network = this.network;
    const from = this.self;
    setTimeout(() => {
      const to = network.nodes.get(message.to);
      if (to === undefined || !network.reachable(message.from, message.to)) return;
      to.transport.#handler?.(message, from.sender());
      network.tap?.(message);
    }, 1);
  }

  onMessage(handler: (message: Message, sender: Sender) => void): void {
    this.#handler = handler;
  }

  onPeerDown(handler: (name: NodeId) => void): void {
    this.#peerDown = handler;
  }

  peerDown(name: NodeId): void {
    this.#peerDown?.(name);
  }

  links(): PeerLinkState[] {
    return [...this.network.nodes.values()].filter((n) => n.name !== this.self.name).map((n) => ({
      name: n.name,
      address: "memory",
      connected: this.network.reachable(this.self.name, n.name),
      incarnation: n.identity,
      lastError: null,
      queuedMessages: 0,
      droppedMessages: 0,
    }));
  }

  handshakes() {
    return [...this.network.nodes.values()]
      .filter((n) => n.name !== this.self.name && this.network.reachable(this.self.name, n.name))
      .map((n) => ({ name: n.name, ...n.state(), incarnation: n.identity, at: 0 }));
  }

  onRefused(): void {}
  closeInbound(): void {}
  rehandshake(): void {}

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** InProcess is one member: its data dir outlives restarts of its node. */
class InProcess {
  node: KeelNode | undefined;
  storage: SqliteStorage | undefined;
  service: Alarms | undefined;
  transport!: MemoryTransport;
  identity = "";
  up = false;

  constructor(
    readonly name: NodeId,
    readonly dataDir: string,
    readonly config: Config,
    readonly network: Network,
  ) {}

  sender(): Sender {
    return { incarnation: this.identity, recovering: this.node?.raft.recovering ?? true };
  }

  state(): { hasState: boolean; recovering: boolean } {
    const raft = this.node?.raft;
    return {
      hasState: raft !== undefined && (raft.term > 0 || raft.lastIndex > 0),
      recovering: raft?.recovering ?? true,
    };
  }

  /** Messages the node gave onFatal: it stopped itself. */
  fatal: string[] = [];

  async start(options: { failRestore?: boolean } = {}): Promise<void> {
    const storage = SqliteStorage.open(this.dataDir);
    let identity = storage.identity(this.name);
    if (storage.isEmpty() && identity.status !== "recovering") {
      storage.setStatus("recovering");
      identity = storage.identity(this.name);
    }
    this.identity = identity.incarnation;
    this.storage = storage;
    const alarms = new Alarms();
    alarms.failRestore = options.failRestore ?? false;
    this.service = alarms;
    const service: Service = jsonService(alarms);
    this.transport = new MemoryTransport(this.network, this);
    this.network.nodes.set(this.name, this);
    this.node = new KeelNode({
      config: this.config,
      name: this.name,
      identity,
      storage,
      transport: this.transport,
      service: new SessionService(service),
      log: createLogger({ level: "error", format: "json", write: () => {} }),
      version: "test",
      onFatal: (message) => void this.fatal.push(message),
    });
    this.up = true;
    await this.node.start();
  }

  async stop(): Promise<void> {
    this.up = false;
    for (const other of this.network.nodes.values()) {
      if (other !== this && other.up) other.transport.peerDown(this.name);
    }
    await this.node?.stop();
    this.storage?.close();
    this.node = undefined;
  }
}

// ---- The cluster -------------------------------------------------------------------------

const dirs: string[] = [];
const clusters: InProcess[][] = [];

afterEach(async () => {
  for (const members of clusters.splice(0)) {
    for (const member of members) if (member.up) await member.stop();
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function makeCluster(snapshotEntries = 10_000): { members: InProcess[]; network: Network } {
  const names = ["node-a", "node-b", "node-c"];
  const text = [
    "cluster_name: timers",
    "members:",
    ...names.flatMap((name, i) => [
      `  - name: ${name}`,
      `    peer: 127.0.0.${174 + i}:7070`,
      `    http: 127.0.0.${174 + i}:7080`,
    ]),
    "raft:",
    "  tick: 10ms",
    "  heartbeat_interval: 30ms",
    "  election_timeout: 300ms",
    `  snapshot_entries: ${snapshotEntries}`,
  ].join("\n");
  const parsed = parseConfigText(text, "timers.yaml");
  if (parsed.config === undefined) throw new Error(JSON.stringify(parsed.problems));
  const dir = mkdtempSync(join(tmpdir(), "keel-timers-"));
  dirs.push(dir);
  const network = new Network();
  const members = names.map((name) =>
    new InProcess(name, join(dir, name), parsed.config!, network)
  );
  clusters.push(members);
  return { members, network };
}

async function waitFor<T>(
  what: string,
  check: () => T | undefined,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = check();
    if (value !== undefined) return value;
    await Bun.sleep(10);
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
}

function leaderOf(members: InProcess[]): InProcess | undefined {
  const up = members.filter((m) => m.up);
  const leader = up.find((m) => m.node?.raft.role === "leader");
  if (leader === undefined) return undefined;
  return up.every((m) => m.node?.raft.leader === leader.name) ? leader : undefined;
}

/** schedule submits a command through the leader, retrying with its key until it is applied. */
async function schedule(
  members: InProcess[],
  timers: Array<{ id: string; inMs: number }>,
  key: { clientId: string; seq: number },
): Promise<void> {
  const command = new TextEncoder().encode(JSON.stringify({ schedule: timers }));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const leader = leaderOf(members);
    const result = leader === undefined ? undefined : await leader.node!.submit(command, key);
    if (result?.ok) {
      const index = result.index;
      await waitFor(
        "every live member to apply it",
        () => members.every((m) => !m.up || m.node!.appliedIndex >= index) ? true : undefined,
      );
      return;
    }
    await Bun.sleep(20);
  }
  throw new Error(`Command ${key.clientId}:${key.seq} not acknowledged within 10 s`);
}

/** positions maps each timer id to the indexes it fired at on one member. */
function positions(member: InProcess): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const firing of member.service!.firings) (out[firing.id] ??= []).push(firing.index);
  return out;
}

describe("cluster timers", () => {
  test(
    "fire exactly once cluster-wide across a leader change, at the same log position everywhere",
    async () => {
      const { members, network } = makeCluster(20);
      await Promise.all(members.map((m) => m.start()));
      const first = await waitFor("a leader", () => leaderOf(members));
      const ids = Array.from({ length: 40 }, (_, i) => `t${i}`);
      // Deadlines spread over 1.2 s: some fire before the leader is cut off, some while no
      // leader is known, the rest under the new leader.
      await schedule(
        members,
        ids.map((id, i) => ({ id, inMs: 100 + i * 30 })),
        { clientId: "alarms", seq: 1 },
      );
      // The old leader is cut off just after its third batch of timer-fired entries
      // reached a follower: those are in the followers' logs but not known committed, so
      // the new leader may propose them again (no-ops when applied), and every timer not
      // yet due is the new leader's to fire.
      let batches = 0;
      network.tap = (message) => {
        if (
          message.from === first.name && message.type === "appendEntries" &&
          message.entries.some((entry) => entry.data[0] === 0x11) && ++batches === 3
        ) {
          network.isolated.add(first.name);
        }
      };
      await waitFor(
        "the leader to be cut off",
        () => network.isolated.has(first.name) ? true : undefined,
      );
      const others = members.filter((m) => m !== first);
      const second = await waitFor("a new leader", () => leaderOf(others));
      expect(second.name).not.toBe(first.name);
      expect(second.service!.roles).toContain("leader");
      expect(second.service!.startedAt).toBe(0);
      await waitFor(
        "every timer to fire on the majority",
        () => others.every((m) => m.service!.firings.length >= ids.length) ? true : undefined,
      );
      // Then the old leader stops for good (kill) and comes back from its data dir.
      await first.stop();
      network.isolated.delete(first.name);
      await first.start();
      const target = Math.max(...others.map((m) => m.node!.appliedIndex));
      await waitFor(
        "the old leader to catch up",
        () => first.node!.appliedIndex >= target ? true : undefined,
      );

      const expected = positions(others[0]!);
      expect(Object.keys(expected).sort()).toEqual([...ids].sort());
      for (const [id, at] of Object.entries(expected)) {
        expect({ id, fired: at.length }).toEqual({ id, fired: 1 });
      }
      for (const member of members) expect(positions(member)).toEqual(expected);
      // Both leaders fired timers.
      const terms = new Set(others[0]!.service!.firings.map((firing) => firing.term));
      expect(terms.size).toBeGreaterThanOrEqual(2);
      // Timer-fired entries in the log beyond the firings are duplicates, applied as no-ops.
      const log = others[0]!.node!.raft.log;
      let fired = 0;
      for (let index = log.firstIndex; index <= log.lastIndex; index++) {
        if (log.entry(index)?.data[0] === 0x11) fired++;
      }
      expect(fired).toBeGreaterThanOrEqual(ids.length);
      // Every firing saw the log's time at or after its deadline.
      for (const firing of others[0]!.service!.firings) {
        expect(firing.timeMs).toBeGreaterThanOrEqual(firing.deadlineMs);
      }
      for (const member of members) {
        expect(member.node!.serviceStatus().timers).toBe(0);
        expect(member.node!.counters.serviceErrors).toBe(0);
      }
    },
    30_000,
  );

  test("timers still scheduled travel in snapshots to a member that restarts", async () => {
    const { members } = makeCluster(10);
    await Promise.all(members.map((m) => m.start()));
    await waitFor("a leader", () => leaderOf(members));
    const ids = Array.from({ length: 5 }, (_, i) => `late${i}`);
    await schedule(members, ids.map((id) => ({ id, inMs: 1500 })), { clientId: "c", seq: 1 });
    // Enough entries to snapshot on every member: the timers are then only in snapshots.
    for (let seq = 2; seq <= 15; seq++) {
      await schedule(members, [{ id: `filler${seq}`, inMs: 60_000 }], { clientId: "c", seq });
    }
    const follower = members.find((m) => m.node?.raft.role !== "leader")!;
    await waitFor(
      "a snapshot on the follower",
      () => (follower.node!.status().snapshotIndex > 0) ? true : undefined,
    );
    await follower.stop();
    await follower.start();
    expect(follower.node!.serviceStatus().timers).toBeGreaterThanOrEqual(ids.length);
    await waitFor(
      "the late timers to fire everywhere",
      () =>
        members.every((m) => ids.every((id) => positions(m)[id]?.length === 1)) ? true : undefined,
    );
    const expected = positions(members[0]!);
    for (const member of members) expect(positions(member)).toEqual(expected);
  }, 30_000);

  test(
    "a replacement gets the timers in the leader's snapshot; one that cannot restore it stops",
    async () => {
      const { members } = makeCluster(100);
      await Promise.all(members.map((m) => m.start()));
      const leader = await waitFor("a leader", () => leaderOf(members));
      await schedule(members, [{ id: "far", inMs: 600_000 }], { clientId: "c", seq: 1 });
      // More entries than a snapshot keeps behind it (5000): a wiped member can then only
      // catch up from the leader's snapshot.
      const filler = new TextEncoder().encode('{"schedule":[]}');
      for (let batch = 0; batch < 27; batch++) {
        await Promise.all(
          Array.from({ length: 200 }, () => leader.node!.submit(filler, undefined)),
        );
      }
      await waitFor(
        "the leader to compact its log",
        () => leader.node!.status().firstIndex > 1 ? true : undefined,
      );
      const victim = members.find((m) => m !== leader)!;
      await victim.stop();
      rmSync(victim.dataDir, { recursive: true, force: true });
      await victim.start({ failRestore: true });
      const message = await waitFor(
        "the replacement to stop itself",
        () => victim.fatal[0],
        20_000,
      );
      expect(message).toContain("Cannot restore the leader's snapshot at index");
      expect(message).toContain("this build cannot read its snapshots");
      expect(victim.node!.status().appliedIndex).toBe(0);
      await victim.stop();

      rmSync(victim.dataDir, { recursive: true, force: true });
      await victim.start();
      await waitFor(
        "the replacement to install the snapshot",
        () => victim.node!.counters.snapshotsInstalled > 0 ? true : undefined,
        20_000,
      );
      expect(victim.node!.serviceStatus().timers).toBe(1);
      expect(victim.node!.serviceStatus().timeMs).toBeGreaterThan(0);
      expect(victim.service!.deadlines.get("far")).toBe(leader.service!.deadlines.get("far"));
    },
    60_000,
  );
});
