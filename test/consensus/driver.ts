// A small in-memory cluster for consensus interaction tests: Raft nodes with memory
// disks, a message queue delivered on demand, and helpers to elect and replicate.

import { type RaftConfig, raftDefaults } from "../../src/consensus/config.ts";
import { Raft } from "../../src/consensus/raft.ts";
import type {
  Entry,
  HardState,
  Message,
  NodeId,
  Ready,
  SnapshotMeta,
} from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";

export interface MemoryDisk {
  hardState: HardState;
  entries: Entry[];
  snapshot: { meta: SnapshotMeta; data: Uint8Array } | undefined;
  staged: Uint8Array;
}

export class TestNode {
  raft: Raft;
  disk: MemoryDisk = {
    hardState: { term: 0, votedFor: null, commitIndex: 0 },
    entries: [],
    snapshot: undefined,
    staged: new Uint8Array(0),
  };
  applied: Entry[] = [];
  readStates: { requestId: number; index: number }[] = [];
  /** State machine: the data of applied commands, as strings. */
  state: string[] = [];
  /** Messages this host sent while it was a zombie (to tell them apart). */
  outbox: Message[] = [];

  /** This host's incarnation (R0); a wiped node gets a new one. */
  incarnation: string;

  constructor(
    readonly id: NodeId,
    readonly members: NodeId[],
    readonly overrides: Partial<RaftConfig>,
    seed: number,
    incarnation = `${id}-1`,
    recovering = false,
  ) {
    this.incarnation = incarnation;
    this.raft = this.#build(seed, recovering);
  }

  #build(seed: number, recovering: boolean): Raft {
    const prng = new Prng(seed);
    const disk = this.disk;
    const config: RaftConfig = {
      ...raftDefaults,
      id: this.id,
      members: this.members,
      electionTicks: 10,
      heartbeatTicks: 1,
      random: () => prng.next(),
      incarnation: this.incarnation,
      recovering,
      snapshots: {
        latest: () => disk.snapshot?.meta,
        readChunk: (_index, offset, length) => disk.snapshot!.data.slice(offset, offset + length),
      },
      ...this.overrides,
    };
    const snapshotIndex = disk.snapshot?.meta.index ?? 0;
    return new Raft(config, {
      hardState: { ...disk.hardState },
      snapshot: disk.snapshot?.meta,
      entries: disk.entries.filter((entry) => entry.index > snapshotIndex),
      fences: disk.snapshot
        ? JSON.parse(new TextDecoder().decode(disk.snapshot.data)).fences
        : undefined,
    });
  }

  /** restart simulates a crash: memory is lost, the disk is kept. */
  restart(seed: number): void {
    const snapshot = this.disk.snapshot;
    this.state = snapshot ? JSON.parse(new TextDecoder().decode(snapshot.data)).state : [];
    this.raft = this.#build(seed, this.raft.recovering);
  }

  /** process runs the node loop until there is no Ready; returns the messages to send. */
  process(): Message[] {
    const out: Message[] = [];
    while (this.raft.hasReady()) {
      const ready: Ready = this.raft.ready();
      this.#persist(ready);
      out.push(...ready.messages);
      for (const entry of ready.committedEntries) {
        this.applied.push(entry);
        if (entry.kind === "command") this.state.push(new TextDecoder().decode(entry.data));
      }
      this.readStates.push(...ready.readStates);
      this.raft.advance(ready);
    }
    return out;
  }

  #persist(ready: Ready): void {
    const disk = this.disk;
    const chunk = ready.snapshotChunk;
    if (chunk !== undefined) {
      if (chunk.offset === 0) disk.staged = new Uint8Array(0);
      const merged = new Uint8Array(disk.staged.byteLength + chunk.data.byteLength);
      merged.set(disk.staged);
      merged.set(chunk.data, disk.staged.byteLength);
      disk.staged = merged;
    }
    if (ready.installSnapshot !== undefined) {
      disk.snapshot = { meta: ready.installSnapshot, data: disk.staged };
      disk.entries = [];
      const decoded = JSON.parse(new TextDecoder().decode(disk.staged));
      this.state = decoded.state;
      this.raft.restoreFences(decoded.fences);
    }
    if (ready.hardState !== undefined) disk.hardState = { ...ready.hardState };
    const first = ready.entries[0];
    if (first !== undefined) {
      disk.entries = disk.entries.filter((entry) => entry.index < first.index);
      disk.entries.push(...ready.entries);
    }
  }

  /** takeSnapshot snapshots applied state and compacts the log. */
  takeSnapshot(trailing = 0): void {
    const last = this.applied[this.applied.length - 1];
    if (last === undefined) return;
    const data = new TextEncoder().encode(
      JSON.stringify({ state: this.state, fences: this.raft.fenceTableAt(last.index) }),
    );
    const meta = { index: last.index, term: last.term, bytes: data.byteLength };
    this.disk.snapshot = { meta, data };
    const point = this.raft.compact(meta, trailing);
    this.disk.entries = this.disk.entries.filter((entry) => entry.index >= point);
  }
}

export class TestCluster {
  nodes = new Map<NodeId, TestNode>();
  queue: Message[] = [];
  /** Pairs "a->b" whose messages are dropped. */
  cut = new Set<string>();
  log: string[] = [];

  constructor(names: NodeId[], overrides: Partial<RaftConfig> = {}, seed = 1) {
    names.forEach((name, i) =>
      this.nodes.set(name, new TestNode(name, names, overrides, seed * 100 + i))
    );
  }

  node(name: NodeId): TestNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new RangeError(`No node "${name}"`);
    return node;
  }

  raft(name: NodeId): Raft {
    return this.node(name).raft;
  }

  /** flush processes every node's Ready and queues their messages. */
  flush(): void {
    for (const node of this.nodes.values()) this.queue.push(...node.process());
  }

  /** deliver delivers queued messages (and their consequences) until quiet. */
  deliver(limit = 10_000): void {
    this.flush();
    for (let i = 0; i < limit && this.queue.length > 0; i++) {
      const message = this.queue.shift()!;
      if (this.cut.has(`${message.from}->${message.to}`)) continue;
      this.log.push(describe(message));
      const sender = this.senderOf(message);
      this.node(message.to).raft.step(message, sender);
      this.flush();
    }
  }

  /** Zombie hosts: old incarnations still running (keyed by incarnation). */
  zombies = new Map<string, TestNode>();
  #wipes = 0;

  /** senderOf finds the host that sent a message: the live node or a zombie. */
  senderOf(message: Message): { incarnation: string; recovering: boolean } {
    const zombie = [...this.zombies.values()].find((z) =>
      z.id === message.from && z.outbox.includes(message)
    );
    const host = zombie ?? this.node(message.from);
    return { incarnation: host.incarnation, recovering: host.raft.recovering };
  }

  /**
   * wipe replaces a member's host with an empty one under the same name (a new
   * incarnation that starts recovering). With keepZombie the old host stays alive.
   */
  wipe(name: NodeId, keepZombie = false): TestNode {
    const old = this.node(name);
    if (keepZombie) this.zombies.set(old.incarnation, old);
    this.#wipes++;
    const fresh = new TestNode(
      name,
      old.members,
      old.overrides,
      7000 + this.#wipes,
      `${name}-${this.#wipes + 1}`,
      true,
    );
    this.nodes.set(name, fresh);
    return fresh;
  }

  /** zombieSend lets a zombie host run: its messages go out tagged with its incarnation. */
  zombieTick(incarnation: string, times = 1): void {
    const zombie = this.zombies.get(incarnation)!;
    for (let i = 0; i < times; i++) zombie.raft.tick();
    const out = zombie.process();
    zombie.outbox.push(...out);
    this.queue.push(...out);
  }

  tick(name: NodeId, times = 1): void {
    for (let i = 0; i < times; i++) this.node(name).raft.tick();
    this.flush();
  }

  /** tickAll ticks every node `times` times, delivering after each round. */
  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const node of this.nodes.values()) node.raft.tick();
      this.deliver();
    }
  }

  /** elect makes `name` leader by ticking only it until it campaigns. */
  elect(name: NodeId): void {
    for (let i = 0; i < 100 && this.raft(name).role !== "leader"; i++) {
      this.tick(name);
      this.deliver();
    }
    if (this.raft(name).role !== "leader") throw new Error(`${name} failed to become leader`);
  }

  isolate(name: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === name) continue;
      this.cut.add(`${name}->${other}`);
      this.cut.add(`${other}->${name}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  propose(name: NodeId, text: string): ReturnType<Raft["propose"]> {
    const result = this.raft(name).propose(new TextEncoder().encode(text));
    this.flush();
    return result;
  }
}

/** describe renders a message as one transcript line. */
export function describe(message: Message): string {
  const head = `${message.from}->${message.to} ${message.type} term=${message.term}`;
  switch (message.type) {
    case "preVote":
    case "requestVote":
      return `${head} last=${message.lastLogIndex}/${message.lastLogTerm}${
        message.transfer ? " transfer" : ""
      }`;
    case "preVoteResponse":
    case "requestVoteResponse":
      return `${head} granted=${message.granted}`;
    case "appendEntries":
      return `${head} prev=${message.prevLogIndex}/${message.prevLogTerm} commit=${message.commitIndex} entries=[${
        message.entries.map((e) => `${e.index}/${e.term}${e.kind === "noop" ? ":noop" : ""}`).join(
          " ",
        )
      }]`;
    case "appendEntriesResponse":
      return `${head} success=${message.success} match=${message.matchIndex}` +
        (message.success ? "" : ` hint=${message.rejectHintIndex}/${message.rejectHintTerm}`);
    case "heartbeat":
      return `${head} commit=${message.commitIndex} context=${message.context}`;
    case "heartbeatResponse":
      return `${head} context=${message.context} last=${message.lastIndex}`;
    case "installSnapshot":
      return `${head} snapshot=${message.snapshot.index}/${message.snapshot.term} offset=${message.offset} bytes=${message.data.byteLength} done=${message.done}`;
    case "installSnapshotResponse":
      return `${head} snapshot=${message.snapshotIndex} offset=${message.offset} success=${message.success} done=${message.done}`;
    case "timeoutNow":
      return head;
    case "readIndex":
      return `${head} request=${message.requestId}`;
    case "readIndexResponse":
      return `${head} request=${message.requestId} index=${message.index}`;
  }
}
