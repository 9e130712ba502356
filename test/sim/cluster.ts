// The deterministic cluster simulator: the real consensus core (src/consensus/raft.ts) on a
// simulated disk, network and clock, with faults drawn from one seeded Prng.
//
// Determinism: nothing here reads a clock, Math.random or a timer; Maps and arrays are
// iterated in insertion order; every random choice comes from `Prng`s derived from the
// seed. The same options therefore replay the same run, event for event.
//
// The checks (each failure names the seed and how to reproduce it):
// 1. at most one leader per term, ever (Raft §5.2, Election Safety);
// 2. applied sequences agree: every node applies the same (index, term, kind, payload) at
//    each index, and a state machine restored from a snapshot equals the applied prefix
//    (§5.4.3, State Machine Safety);
// 3. no acknowledged write is lost: it stays at its index on every node that applied it;
// 4. liveness: once faults heal and every node is up, a leader is elected within a bound
//    and a new proposal is applied on every node;
// 5. ReadIndex is linearizable: a read position is at least the commit index any node
//    knew when the read was issued (so it covers every acknowledged write) (§6.4);
// plus: a new leader's log holds every committed entry (§5.4, Leader Completeness); a
// node's commit index never goes back; the durable term never goes back and a durable vote
// never changes within a term; committed entries arrive in order without gaps; the disk
// always ends where the core's log ends; snapshot chunks arrive contiguously.
//
// Contract notes the simulator encodes (see storage.ts and types.ts):
// - a Ready is persisted in the order: snapshot chunk, snapshot install (drops the whole
//   log), hard state, entries (truncating first); then messages are sent; then applied;
// - a leader may read chunks of a snapshot older than its latest one (a transfer started
//   before the latest snapshot), so a disk keeps replaced snapshots readable;
// - a duplicated readIndexResponse yields a second ReadState for the same request; the node
//   loop ignores answers to reads it no longer waits for.

import { Raft } from "../../src/consensus/raft.ts";
import { type RaftConfig, raftDefaults } from "../../src/consensus/config.ts";
import type {
  Entry,
  EntryKind,
  HardState,
  Message,
  NodeId,
  ProposeResult,
  Ready,
  RestoredState,
  Role,
  SnapshotMeta,
  SnapshotSource,
  TransferResult,
} from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";

// ---- Options -------------------------------------------------------------------------

/** FaultOptions is a fault profile: rates are probabilities per message or per tick. */
export interface FaultOptions {
  /** Probability that a message is lost. */
  dropRate: number;
  /** Probability that a message is delivered twice. */
  duplicateRate: number;
  /** Probability that a message is held back 1..delayTicksMax extra ticks (reordering it). */
  delayRate: number;
  delayTicksMax: number;
  /** Per-tick probability of a partition starting while none is active. */
  partitionRate: number;
  partitionTicksMin: number;
  partitionTicksMax: number;
  /** Per-tick probability that an up node crashes. */
  crashRate: number;
  /** A crashed node restarts after 1..downTicksMax ticks. */
  downTicksMax: number;
  /** Fraction of crashes that strike between persisting a Ready and sending its messages. */
  crashBeforeSendRate: number;
  /** Allow a majority of the nodes to be down at once (otherwise at most a minority). */
  crashMajority: boolean;
}

const quiet: FaultOptions = {
  dropRate: 0,
  duplicateRate: 0,
  delayRate: 0,
  delayTicksMax: 0,
  partitionRate: 0,
  partitionTicksMin: 0,
  partitionTicksMax: 0,
  crashRate: 0,
  downTicksMax: 0,
  crashBeforeSendRate: 0,
  crashMajority: false,
};

/** faultProfiles are the named profiles of scripts/sim.ts --profile and the tests. */
export const faultProfiles = {
  none: quiet,
  lossy: { ...quiet, dropRate: 0.1, duplicateRate: 0.05, delayRate: 0.2, delayTicksMax: 8 },
  partitions: {
    ...quiet,
    dropRate: 0.02,
    delayRate: 0.05,
    delayTicksMax: 4,
    partitionRate: 0.02,
    partitionTicksMin: 10,
    partitionTicksMax: 150,
  },
  crashes: {
    ...quiet,
    crashRate: 0.01,
    downTicksMax: 120,
    crashBeforeSendRate: 0.3,
    crashMajority: true,
  },
  /** Elections all the time: short crashes (often between persist and send) and loss. */
  churn: {
    ...quiet,
    dropRate: 0.1,
    duplicateRate: 0.05,
    delayRate: 0.15,
    delayTicksMax: 10,
    crashRate: 0.05,
    downTicksMax: 8,
    crashBeforeSendRate: 0.3,
    crashMajority: true,
  },
  chaos: {
    dropRate: 0.05,
    duplicateRate: 0.03,
    delayRate: 0.1,
    delayTicksMax: 6,
    partitionRate: 0.01,
    partitionTicksMin: 10,
    partitionTicksMax: 120,
    crashRate: 0.006,
    downTicksMax: 100,
    crashBeforeSendRate: 0.3,
    crashMajority: true,
  },
} satisfies Record<string, FaultOptions>;

export type ProfileName = keyof typeof faultProfiles;
export const defaultProfile: ProfileName = "chaos";
export const defaultTicks = 2000;

/**
 * HarnessBugs are deliberate defects in the simulated node, used only to prove that the
 * checks catch real violations. A correct run sets none of them.
 */
export interface HarnessBugs {
  /** Acknowledge a proposal as soon as the leader accepts it, before it commits. */
  ackBeforeCommit?: boolean;
  /** The disk loses votedFor across a restart. */
  forgetVoteOnRestart?: boolean;
  /** Send a Ready's messages before persisting it (and crash in between sometimes). */
  sendBeforePersist?: boolean;
  /** Snapshots miss the last command they claim to include. */
  staleSnapshot?: boolean;
}

export type BugName = keyof HarnessBugs;

export interface SimOptions {
  seed: number;
  nodes: 3 | 5;
  ticks: number;
  faults: FaultOptions;
  /** The profile's name, for the reproduce line (omit for a custom FaultOptions). */
  profile?: string;
  bugs?: HarnessBugs;
  /** Receives a line per notable event (role changes, faults, snapshots). */
  log?: (line: string) => void;
}

/** SimStats counts what a run did, for the summary line. */
export interface SimStats {
  ticks: number;
  leadersElected: number;
  maxTerm: number;
  proposed: number;
  proposalsRejected: number;
  acknowledged: number;
  readsIssued: number;
  readsServed: number;
  readsRefused: number;
  /** ReadStates for reads already answered (duplicated responses). */
  readStatesIgnored: number;
  transfersRequested: number;
  transfersAccepted: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  crashes: number;
  crashesBeforeSend: number;
  partitions: number;
  messagesSent: number;
  messagesDelivered: number;
  messagesDropped: number;
  messagesDuplicated: number;
  messagesDelayed: number;
}

export interface SimResult {
  ok: boolean;
  /** The violation (or crash of the core), with the reproduce line; undefined when ok. */
  failure: string | undefined;
  stats: SimStats;
}

/** SimViolation is a broken check. Its message says what broke, when, and where. */
export class SimViolation extends Error {
  override name = "SimViolation";
}

// ---- Per-seed Raft settings ------------------------------------------------------------

/**
 * SimSettings are the knobs a seed varies so that batching, pipelining, backtracking and
 * chunked snapshots all get exercised.
 */
export interface SimSettings {
  electionTicks: number;
  heartbeatTicks: number;
  entriesPerMessageMax: number;
  inflightMessagesMax: number;
  messageBytesMax: number;
  snapshotChunkBytes: number;
  pendingProposalsMax: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Take a snapshot every this many applied entries. */
  snapshotEveryEntries: number;
  /** Entries kept behind a snapshot for slow followers (compact's trailingEntries). */
  trailingEntries: number;
  /** Base network latency is drawn from [0, latencyTicksMax]. */
  latencyTicksMax: number;
  /** Per-tick client rates. */
  proposeRate: number;
  readRate: number;
  transferRate: number;
}

/** settingsForSeed draws the Raft and workload knobs of a run from its own stream. */
export function settingsForSeed(seed: number): SimSettings {
  const prng = new Prng(mix(seed, 0x5e771265));
  return {
    electionTicks: prng.int(8, 13),
    heartbeatTicks: prng.int(1, 3),
    entriesPerMessageMax: prng.pick([1, 2, 3, 4, 8, 64]),
    inflightMessagesMax: prng.pick([1, 2, 3, 4, 16]),
    messageBytesMax: prng.pick([64, 256, 1024 * 1024]),
    snapshotChunkBytes: prng.pick([16, 32, 64, 256, 4096]),
    pendingProposalsMax: prng.pick([4, 64, 1024]),
    preVote: prng.chance(0.85),
    checkQuorum: prng.chance(0.85),
    snapshotEveryEntries: prng.int(20, 51),
    trailingEntries: prng.pick([0, 0, 3, 10]),
    latencyTicksMax: prng.int(0, 3),
    proposeRate: 0.2 + prng.next() * 0.4,
    readRate: 0.05 + prng.next() * 0.1,
    transferRate: 0.004 + prng.next() * 0.01,
  };
}

/** mix derives an independent 32-bit seed from a seed and a salt (a murmur3 finalizer). */
export function mix(seed: number, salt: number): number {
  let h = (seed ^ Math.imul(salt, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

// ---- The simulated disk and node ---------------------------------------------------------

/** StoredSnapshot is a complete snapshot on a simulated disk. */
interface StoredSnapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

/**
 * Disk is what survives a crash. Invariant: entries are contiguous and reach the snapshot;
 * entries at or before the snapshot index are trailing entries kept for slow followers
 * (the first of them is only the compaction boundary, see RaftLog.restore).
 */
export interface Disk {
  hardState: HardState;
  entries: Entry[];
  snapshot: StoredSnapshot | undefined;
  /** Earlier snapshots still readable by an ongoing transfer, oldest first. */
  older: StoredSnapshot[];
  /** An incoming snapshot being received chunk by chunk. */
  staged: { meta: SnapshotMeta; parts: Uint8Array[]; bytes: number } | undefined;
}

/** AppliedRecord is what the harness saw a node apply at one index. */
interface AppliedRecord {
  term: number;
  kind: EntryKind;
  payload: string;
}

interface PendingProposal {
  term: number;
  payload: string;
}

interface PendingRead {
  /** The highest commit index any node knew when the read was issued. */
  requiredIndex: number;
  issuedTick: number;
}

/** SimNode is one member: its disk always, its Raft and memory only while up. */
export class SimNode {
  readonly id: NodeId;
  readonly disk: Disk = {
    hardState: { term: 0, votedFor: null, commitIndex: 0 },
    entries: [],
    snapshot: undefined,
    older: [],
    staged: undefined,
  };
  raft: Raft | undefined;
  /** The toy state machine: command payloads in applied order. */
  stateMachine: string[] = [];
  appliedIndex = 0;
  appliedTerm = 0;
  appliedSinceSnapshot = 0;
  /** Restarts so far; each incarnation of the Raft gets its own random stream. */
  restarts = 0;
  /** Crash right after persisting the next Ready, before sending its messages. */
  crashAfterPersist = false;
  pendingProposals = new Map<number, PendingProposal>();
  pendingReads = new Map<number, PendingRead>();
  /** Everything this node applied, across restarts (the harness's observation). */
  readonly applied = new Map<number, AppliedRecord>();
  lastRole: Role | undefined;
  lastTerm = 0;
  /** The core's commit index as last observed in this incarnation. */
  commitIndex = 0;

  constructor(id: NodeId) {
    this.id = id;
  }

  get up(): boolean {
    return this.raft !== undefined;
  }
}

// ---- The network -----------------------------------------------------------------------

interface InFlight {
  deliverAt: number;
  seq: number;
  message: Message;
}

/** MessageQueue is a binary min-heap of in-flight messages by (deliverAt, seq). */
class MessageQueue {
  #heap: InFlight[] = [];

  get size(): number {
    return this.#heap.length;
  }

  peek(): InFlight | undefined {
    return this.#heap[0];
  }

  push(item: InFlight): void {
    const heap = this.#heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  pop(): InFlight | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
      if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
      if (smallest === i) break;
      [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
      i = smallest;
    }
    return top;
  }
}

function before(a: InFlight, b: InFlight): boolean {
  return a.deliverAt < b.deliverAt || (a.deliverAt === b.deliverAt && a.seq < b.seq);
}

// ---- The cluster -------------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Deliveries within one tick are bounded; more means a message storm (a bug). */
const deliveriesPerTickMax = 200_000;
/** Ready rounds per drain are bounded; more means the core never settles (a bug). */
const readyRoundsMax = 10_000;
const traceLinesMax = 40;
/** Replaced snapshots a disk keeps readable for transfers still under way. */
const olderSnapshotsMax = 64;

export interface ClusterOptions {
  seed: number;
  nodes: 3 | 5;
  settings?: Partial<SimSettings>;
  faults?: FaultOptions;
  bugs?: HarnessBugs;
  log?: (line: string) => void;
}

/**
 * Cluster is a simulated cluster: nodes, network, clock and the checks that run as it
 * goes. Fixed-scenario tests drive it directly; runSimulation drives it with seeded
 * clients and faults.
 */
export class Cluster {
  readonly seed: number;
  readonly settings: SimSettings;
  readonly ids: NodeId[];
  readonly nodes: SimNode[];
  readonly stats: SimStats = {
    ticks: 0,
    leadersElected: 0,
    maxTerm: 0,
    proposed: 0,
    proposalsRejected: 0,
    acknowledged: 0,
    readsIssued: 0,
    readsServed: 0,
    readsRefused: 0,
    readStatesIgnored: 0,
    transfersRequested: 0,
    transfersAccepted: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    crashes: 0,
    crashesBeforeSend: 0,
    partitions: 0,
    messagesSent: 0,
    messagesDelivered: 0,
    messagesDropped: 0,
    messagesDuplicated: 0,
    messagesDelayed: 0,
  };
  /** Network faults apply while this is set. */
  faults: FaultOptions;
  now = 0;

  readonly #bugs: HarnessBugs;
  readonly #log: ((line: string) => void) | undefined;
  /** The harness's own stream: network latency and faults. */
  readonly #prng: Prng;
  readonly #queue = new MessageQueue();
  #seq = 0;
  /** Group number per node while partitioned; undefined when the network is whole. */
  #groups: Map<NodeId, number> | undefined;
  /** The partition cuts only messages from group 0 to the others. */
  #oneWay = false;
  /** The one leader seen for each term. */
  readonly #leaders = new Map<number, NodeId>();
  /** Applied history agreed by all nodes so far: index i at position i - 1. */
  readonly #canonical: AppliedRecord[] = [];
  /** Command entries through index i at position i - 1 (the state machine's length). */
  readonly #commandCounts: number[] = [];
  readonly #acks = new Map<number, { term: number; payload: string; node: NodeId; tick: number }>();
  readonly #trace: string[] = [];
  #nextRequestId = 1;
  /** Answered reads: request id -> read index (0 when refused). */
  readonly #readResults = new Map<number, number>();

  constructor(options: ClusterOptions) {
    this.seed = options.seed;
    this.settings = { ...settingsForSeed(options.seed), ...options.settings };
    this.faults = options.faults ?? quiet;
    this.#bugs = options.bugs ?? {};
    this.#log = options.log;
    this.#prng = new Prng(mix(options.seed, 0x00c1a55e));
    this.ids = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    this.nodes = this.ids.map((id) => new SimNode(id));
    for (const node of this.nodes) this.#start(node);
  }

  // ---- Queries ----

  node(id: NodeId): SimNode {
    const node = this.nodes.find((n) => n.id === id);
    if (node === undefined) throw new RangeError(`Unknown node "${id}"`);
    return node;
  }

  /** leader returns the up node that believes it leads in the highest term, if any. */
  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const node of this.nodes) {
      if (node.raft?.role !== "leader") continue;
      if (best === undefined || node.raft.term > best.raft!.term) best = node;
    }
    return best;
  }

  /** leaderOfTerm is the node seen leading term, if any was. */
  leaderOfTerm(term: number): NodeId | undefined {
    return this.#leaders.get(term);
  }

  /** committedIndex is the highest index some node has applied (so it is committed). */
  get appliedIndexMax(): number {
    return this.#canonical.length;
  }

  /** knownCommitIndex is the highest commit index any up node knows, or any node applied. */
  knownCommitIndex(): number {
    let index = this.#canonical.length;
    for (const node of this.nodes) {
      if (node.raft !== undefined) index = Math.max(index, node.raft.commitIndex);
    }
    return index;
  }

  get partitioned(): boolean {
    return this.#groups !== undefined;
  }

  get messagesInFlight(): number {
    return this.#queue.size;
  }

  trace(): string[] {
    return this.#trace.slice();
  }

  /** connected says whether a message from `from` reaches `to` now. */
  connected(from: NodeId, to: NodeId): boolean {
    if (this.#groups === undefined) return true;
    const a = this.#groups.get(from);
    const b = this.#groups.get(to);
    if (a === b) return true;
    // A one-way cut only stops traffic leaving group 0.
    return this.#oneWay && a !== 0;
  }

  // ---- Time ----

  /** tick advances the clock by one: deliver what is due, then tick every up node. */
  tick(): void {
    this.now++;
    this.stats.ticks = this.now;
    this.deliverDue();
    for (const node of this.nodes) {
      if (node.raft === undefined) continue;
      node.raft.tick();
      this.#drain(node);
    }
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.tick();
  }

  /** runUntil ticks until predicate holds (true) or ticksMax pass (false). */
  runUntil(predicate: () => boolean, ticksMax: number): boolean {
    for (let i = 0; i < ticksMax; i++) {
      if (predicate()) return true;
      this.tick();
    }
    return predicate();
  }

  /** deliverDue delivers every message due by now, including replies sent meanwhile. */
  deliverDue(): void {
    let deliveries = 0;
    for (;;) {
      const top = this.#queue.peek();
      if (top === undefined || top.deliverAt > this.now) return;
      this.#queue.pop();
      if (++deliveries > deliveriesPerTickMax) {
        this.#fail(`more than ${deliveriesPerTickMax} deliveries in one tick: a message storm`);
      }
      this.#deliver(top.message);
    }
  }

  // ---- Faults ----

  /** partition splits the network: nodes in different groups cannot exchange messages. */
  partition(groups: NodeId[][], hintRate = 0.5, oneWay = false): void {
    this.#groups = new Map();
    this.#oneWay = oneWay;
    groups.forEach((group, i) => {
      for (const id of group) this.#groups!.set(id, i);
    });
    for (const id of this.ids) {
      if (!this.#groups.has(id)) this.#groups.set(id, groups.length);
    }
    this.stats.partitions++;
    const shape = groups.map((g) => `[${g.join(",")}]`).join(oneWay ? " -/-> " : " ");
    this.#event(`partition ${shape}`);
    // A transport may or may not notice a cut link; tell the core sometimes.
    for (const node of this.nodes) {
      for (const peer of this.ids) {
        if (peer === node.id || this.connected(peer, node.id)) continue;
        if (node.raft !== undefined && this.#prng.chance(hintRate)) {
          node.raft.peerDown(peer);
          this.#drain(node);
        }
      }
    }
  }

  heal(): void {
    if (this.#groups === undefined) return;
    this.#groups = undefined;
    this.#event("heal");
  }

  /** crash drops a node's Raft and memory; only its disk survives. */
  crash(id: NodeId): void {
    const node = this.node(id);
    if (node.raft === undefined) return;
    node.raft = undefined;
    node.crashAfterPersist = false;
    node.stateMachine = [];
    node.pendingProposals.clear();
    node.pendingReads.clear();
    node.lastRole = undefined;
    node.commitIndex = 0;
    this.stats.crashes++;
    this.#event(`${id} crashes`);
    for (const other of this.nodes) {
      if (other.raft !== undefined && this.connected(id, other.id) && this.#prng.chance(0.5)) {
        other.raft.peerDown(id);
        this.#drain(other);
      }
    }
  }

  restart(id: NodeId): void {
    const node = this.node(id);
    if (node.raft !== undefined) return;
    node.restarts++;
    if (this.#bugs.forgetVoteOnRestart) node.disk.hardState.votedFor = null;
    this.#event(`${id} restarts`);
    this.#start(node);
  }

  // ---- Clients ----

  /** propose submits a command to a node; the node acknowledges it once it applies it. */
  propose(id: NodeId, payload: string): ProposeResult {
    const node = this.node(id);
    if (node.raft === undefined) return { ok: false, reason: "not-leader", leader: null };
    const result = node.raft.propose(encoder.encode(payload));
    if (result.ok) {
      this.stats.proposed++;
      node.pendingProposals.set(result.index, { term: result.term, payload });
      if (this.#bugs.ackBeforeCommit) this.#acknowledge(node, result.index, result.term, payload);
    } else {
      this.stats.proposalsRejected++;
    }
    this.#drain(node);
    return result;
  }

  /** read issues a ReadIndex request on a node; returns its request id. */
  read(id: NodeId): number | undefined {
    const node = this.node(id);
    if (node.raft === undefined) return undefined;
    const requestId = this.#nextRequestId++;
    node.pendingReads.set(requestId, {
      requiredIndex: this.knownCommitIndex(),
      issuedTick: this.now,
    });
    this.stats.readsIssued++;
    node.raft.readIndex(requestId);
    this.#drain(node);
    return requestId;
  }

  transfer(from: NodeId, to: NodeId): TransferResult {
    const node = this.node(from);
    if (node.raft === undefined) return { ok: false, reason: "not-leader", leader: null };
    this.stats.transfersRequested++;
    const result = node.raft.transferLeadership(to);
    if (result.ok) {
      this.stats.transfersAccepted++;
      this.#event(`${from} transfers leadership to ${to}`);
    }
    this.#drain(node);
    return result;
  }

  /** readResult is the answer to a read: its index (0 if refused), undefined while pending. */
  readResult(requestId: number): number | undefined {
    return this.#readResults.get(requestId);
  }

  isAcknowledged(index: number, payload: string): boolean {
    return this.#acks.get(index)?.payload === payload;
  }

  // ---- Final checks ----

  /** checkFinal runs the whole-history checks (2) and (3) across every node. */
  checkFinal(): void {
    const payloads = this.#canonical.filter((r) => r.kind === "command").map((r) => r.payload);
    for (const node of this.nodes) {
      if (node.raft === undefined) continue;
      const expected = this.#commandCounts[node.appliedIndex - 1] ?? 0;
      if (node.stateMachine.length !== expected) {
        this.#fail(
          `${node.id} state machine holds ${node.stateMachine.length} commands at applied index ` +
            `${node.appliedIndex}; the agreed log has ${expected}`,
        );
      }
      for (let i = 0; i < node.stateMachine.length; i++) {
        if (node.stateMachine[i] !== payloads[i]) {
          this.#fail(
            `${node.id} state machine differs at command ${i}: "${node.stateMachine[i]}" vs "${
              payloads[i]
            }"`,
          );
        }
      }
    }
    for (const [index, ack] of this.#acks) {
      const agreed = this.#canonical[index - 1];
      if (agreed !== undefined && (agreed.term !== ack.term || agreed.payload !== ack.payload)) {
        this.#fail(`acknowledged write "${ack.payload}" at index ${index} was lost`);
      }
      for (const node of this.nodes) {
        const record = node.applied.get(index);
        if (record !== undefined && (record.term !== ack.term || record.payload !== ack.payload)) {
          this.#fail(
            `acknowledged write "${ack.payload}" (term ${ack.term}) at index ${index} was lost on ` +
              `${node.id}, which applied "${record.payload}" (term ${record.term})`,
          );
        }
        if (node.raft === undefined || node.appliedIndex < index) continue;
        const position = this.#commandCounts[index - 1]! - 1;
        if (node.stateMachine[position] !== ack.payload) {
          this.#fail(
            `acknowledged write "${ack.payload}" at index ${index} is missing from ${node.id}'s ` +
              `state machine`,
          );
        }
      }
    }
  }

  // ---- Node loop ----

  #start(node: SimNode): void {
    const disk = node.disk;
    const snapshots: SnapshotSource = {
      latest: () => disk.snapshot?.meta,
      readChunk: (index, offset, length) => {
        const snapshot = disk.snapshot?.meta.index === index
          ? disk.snapshot
          : disk.older.find((older) => older.meta.index === index);
        if (snapshot === undefined) {
          this.#fail(
            `${node.id} was asked for a chunk of snapshot ${index} but holds ` +
              `${
                [...disk.older, ...(disk.snapshot ? [disk.snapshot] : [])].map((x) => x.meta.index)
                  .join(", ")
              }`,
          );
        }
        if (offset < 0 || length <= 0 || offset > snapshot.data.length) {
          this.#fail(
            `${node.id} was asked for chunk [${offset}, +${length}) of ${snapshot.data.length} bytes`,
          );
        }
        return snapshot.data.slice(offset, offset + length);
      },
    };
    const s = this.settings;
    const random = new Prng(mix(mix(this.seed, this.ids.indexOf(node.id) + 1), node.restarts));
    const config: RaftConfig = {
      ...raftDefaults,
      id: node.id,
      members: this.ids.slice(),
      electionTicks: s.electionTicks,
      heartbeatTicks: s.heartbeatTicks,
      inflightMessagesMax: s.inflightMessagesMax,
      entriesPerMessageMax: s.entriesPerMessageMax,
      messageBytesMax: s.messageBytesMax,
      snapshotChunkBytes: s.snapshotChunkBytes,
      pendingProposalsMax: s.pendingProposalsMax,
      preVote: s.preVote,
      checkQuorum: s.checkQuorum,
      random: () => random.next(),
      snapshots,
    };
    const restored: RestoredState = {
      hardState: { ...disk.hardState },
      snapshot: disk.snapshot === undefined ? undefined : { ...disk.snapshot.meta },
      entries: disk.entries.map(cloneEntry),
    };
    node.stateMachine = [];
    node.appliedIndex = 0;
    node.appliedTerm = 0;
    if (disk.snapshot !== undefined) this.#restoreStateMachine(node, disk.snapshot);
    node.appliedSinceSnapshot = 0;
    node.raft = new Raft(config, restored);
    this.#drain(node);
  }

  /** drain runs the node loop until the core has nothing more to do. */
  #drain(node: SimNode): void {
    for (let round = 0;; round++) {
      const raft = node.raft;
      if (raft === undefined || !raft.hasReady()) break;
      if (round >= readyRoundsMax) {
        this.#fail(`${node.id} produced more than ${readyRoundsMax} Ready batches in a row`);
      }
      const ready = raft.ready();
      if (this.#bugs.sendBeforePersist) {
        for (const message of ready.messages) this.#send(node, message);
        if (node.crashAfterPersist) {
          this.stats.crashesBeforeSend++;
          this.crash(node.id);
          return;
        }
        this.#persist(node, ready, raft);
      } else {
        this.#persist(node, ready, raft);
        if (node.crashAfterPersist) {
          // The Ready is durable but its messages never leave: the window between fsync
          // and send.
          this.stats.crashesBeforeSend++;
          this.crash(node.id);
          return;
        }
        for (const message of ready.messages) this.#send(node, message);
      }
      this.#apply(node, ready);
      raft.advance(ready);
      this.#maybeSnapshot(node, raft);
    }
    this.#observe(node);
  }

  /** persist is step 1 of the Ready contract, on the simulated disk. */
  #persist(node: SimNode, ready: Ready, raft: Raft): void {
    const disk = node.disk;
    const chunk = ready.snapshotChunk;
    if (chunk !== undefined) {
      if (chunk.offset === 0) {
        disk.staged = { meta: { ...chunk.snapshot }, parts: [], bytes: 0 };
      } else if (
        disk.staged === undefined || disk.staged.meta.index !== chunk.snapshot.index ||
        disk.staged.meta.term !== chunk.snapshot.term || disk.staged.bytes !== chunk.offset
      ) {
        this.#fail(
          `${node.id} was given snapshot chunk at offset ${chunk.offset} of snapshot ` +
            `${chunk.snapshot.index} but has ${disk.staged?.bytes ?? 0} bytes of snapshot ` +
            `${disk.staged?.meta.index ?? "none"} staged`,
        );
      }
      disk.staged!.parts.push(chunk.data.slice());
      disk.staged!.bytes += chunk.data.length;
    }
    const install = ready.installSnapshot;
    if (install !== undefined) {
      const staged = disk.staged;
      if (
        staged === undefined || staged.meta.index !== install.index ||
        staged.meta.term !== install.term
      ) {
        this.#fail(
          `${node.id} was told to install snapshot ${install.index} but has not staged it`,
        );
      }
      if (staged.bytes !== install.bytes) {
        this.#fail(
          `${node.id} staged ${staged.bytes} bytes of snapshot ${install.index}, expected ${install.bytes}`,
        );
      }
      const data = concat(staged.parts, staged.bytes);
      const snapshot = { meta: { ...install }, data };
      // The staged snapshot replaces the whole log and the service state (storage.ts:
      // installStagedSnapshot).
      retire(disk);
      disk.snapshot = snapshot;
      disk.staged = undefined;
      disk.entries = [];
      this.#restoreStateMachine(node, snapshot);
      this.stats.snapshotsInstalled++;
      this.#event(`${node.id} installs snapshot at ${install.index} (term ${install.term})`);
    }
    if (ready.hardState !== undefined) {
      const before = disk.hardState;
      const after = ready.hardState;
      if (after.term < before.term) {
        this.#fail(`${node.id} persisted term ${after.term} after term ${before.term}`);
      }
      if (
        after.term === before.term && before.votedFor !== null && after.votedFor !== before.votedFor
      ) {
        this.#fail(
          `${node.id} changed its durable vote in term ${after.term} from ${before.votedFor} to ${after.votedFor}`,
        );
      }
      if (after.commitIndex < before.commitIndex) {
        this.#fail(
          `${node.id} persisted commit index ${after.commitIndex} after ${before.commitIndex}`,
        );
      }
      disk.hardState = { ...after };
    }
    if (ready.entries.length > 0) {
      const first = ready.entries[0]!.index;
      const snapshotIndex = disk.snapshot?.meta.index ?? 0;
      const lastIndex = diskLastIndex(disk);
      if (first > lastIndex + 1 || first <= snapshotIndex) {
        this.#fail(
          `${node.id} was given entries from ${first} to persist after a log of ` +
            `(${snapshotIndex}, ${lastIndex}]`,
        );
      }
      const firstStored = disk.entries[0]?.index ?? snapshotIndex + 1;
      disk.entries.length = Math.max(0, first - firstStored);
      for (const entry of ready.entries) {
        if (entry.index !== diskLastIndex(disk) + 1) {
          this.#fail(`${node.id} was given a non-contiguous batch`);
        }
        disk.entries.push(cloneEntry(entry));
      }
    }
    // The disk now holds everything the core has handed out.
    if (diskLastIndex(disk) !== raft.lastIndex) {
      this.#fail(
        `${node.id} disk ends at ${
          diskLastIndex(disk)
        } but the core's log ends at ${raft.lastIndex}`,
      );
    }
  }

  /** apply is step 3: committed entries to the state machine, and read states. */
  #apply(node: SimNode, ready: Ready): void {
    for (const entry of ready.committedEntries) {
      if (entry.index !== node.appliedIndex + 1) {
        this.#fail(
          `${node.id} was given entry ${entry.index} to apply after applying ${node.appliedIndex}`,
        );
      }
      const payload = entry.kind === "command" ? decoder.decode(entry.data) : "";
      const record: AppliedRecord = { term: entry.term, kind: entry.kind, payload };
      this.#agree(node, entry.index, record);
      node.applied.set(entry.index, record);
      node.appliedIndex = entry.index;
      node.appliedTerm = entry.term;
      node.appliedSinceSnapshot++;
      if (entry.kind === "command") node.stateMachine.push(payload);

      const pending = node.pendingProposals.get(entry.index);
      if (pending !== undefined) {
        node.pendingProposals.delete(entry.index);
        if (
          pending.term === entry.term && pending.payload === payload && !this.#bugs.ackBeforeCommit
        ) {
          this.#acknowledge(node, entry.index, entry.term, payload);
        }
      }
    }
    for (const state of ready.readStates) {
      const pending = node.pendingReads.get(state.requestId);
      if (pending === undefined) {
        // A duplicated readIndexResponse answers a read twice; the node loop ignores
        // answers to reads it no longer waits for.
        this.stats.readStatesIgnored++;
        continue;
      }
      node.pendingReads.delete(state.requestId);
      this.#readResults.set(state.requestId, state.index);
      if (state.index === 0) {
        this.stats.readsRefused++;
        continue;
      }
      this.stats.readsServed++;
      if (state.index < pending.requiredIndex) {
        this.#fail(
          `ReadIndex is not linearizable: read ${state.requestId} on ${node.id}, issued at tick ` +
            `${pending.issuedTick} when index ${pending.requiredIndex} was known committed, got read ` +
            `index ${state.index}`,
        );
      }
    }
  }

  /** agree checks an applied entry against what every other node applied at its index. */
  #agree(node: SimNode, index: number, record: AppliedRecord): void {
    const agreed = this.#canonical[index - 1];
    if (agreed === undefined) {
      if (index !== this.#canonical.length + 1) {
        this.#fail(`${node.id} applied index ${index} but no node ever applied ${index - 1}`);
      }
      this.#canonical.push(record);
      const commands = (this.#commandCounts[index - 2] ?? 0) + (record.kind === "command" ? 1 : 0);
      this.#commandCounts.push(commands);
    } else if (
      agreed.term !== record.term || agreed.kind !== record.kind ||
      agreed.payload !== record.payload
    ) {
      this.#fail(
        `${node.id} applied ${describe(record)} at index ${index}, where another node applied ` +
          `${describe(agreed)}`,
      );
    }
    const ack = this.#acks.get(index);
    if (ack !== undefined && (ack.term !== record.term || ack.payload !== record.payload)) {
      this.#fail(
        `acknowledged write "${ack.payload}" (term ${ack.term}, acknowledged by ${ack.node} at tick ` +
          `${ack.tick}) was lost: ${node.id} applied ${describe(record)} at index ${index}`,
      );
    }
  }

  #acknowledge(node: SimNode, index: number, term: number, payload: string): void {
    this.#acks.set(index, { term, payload, node: node.id, tick: this.now });
    this.stats.acknowledged++;
  }

  #restoreStateMachine(node: SimNode, snapshot: StoredSnapshot): void {
    const list: unknown = JSON.parse(decoder.decode(snapshot.data));
    if (!Array.isArray(list) || !list.every((item) => typeof item === "string")) {
      this.#fail(
        `${node.id} snapshot ${snapshot.meta.index} does not decode to a list of commands`,
      );
    }
    const index = snapshot.meta.index;
    const agreed = this.#canonical[index - 1];
    const expected = this.#commandCounts[index - 1] ?? 0;
    if (index > 0 && agreed === undefined) {
      this.#fail(`${node.id} restored snapshot ${index}, but no node ever applied that index`);
    }
    if (agreed !== undefined && agreed.term !== snapshot.meta.term) {
      this.#fail(
        `${node.id} restored snapshot ${index} of term ${snapshot.meta.term}; index ${index} has term ${agreed.term}`,
      );
    }
    if (list.length !== expected) {
      this.#fail(
        `${node.id} restored snapshot ${index} with ${list.length} commands; the agreed log has ${expected}`,
      );
    }
    let position = 0;
    for (let i = 0; i < index; i++) {
      const record = this.#canonical[i]!;
      if (record.kind !== "command") continue;
      if (list[position] !== record.payload) {
        this.#fail(
          `${node.id} restored snapshot ${index} holding "${list[position]}" where index ${
            i + 1
          } is "${record.payload}"`,
        );
      }
      position++;
    }
    node.stateMachine = list as string[];
    node.appliedIndex = index;
    node.appliedTerm = snapshot.meta.term;
    node.appliedSinceSnapshot = 0;
  }

  #maybeSnapshot(node: SimNode, raft: Raft): void {
    if (node.appliedSinceSnapshot < this.settings.snapshotEveryEntries) return;
    const disk = node.disk;
    const index = node.appliedIndex;
    if (index <= (disk.snapshot?.meta.index ?? 0)) return;
    const commands = this.#bugs.staleSnapshot ? node.stateMachine.slice(0, -1) : node.stateMachine;
    const data = encoder.encode(JSON.stringify(commands));
    const meta: SnapshotMeta = { index, term: node.appliedTerm, bytes: data.length };
    retire(disk);
    disk.snapshot = { meta, data };
    node.appliedSinceSnapshot = 0;
    this.stats.snapshotsTaken++;
    const point = raft.compact({ ...meta }, this.settings.trailingEntries);
    // Keep the compaction boundary entry when trailing entries stay behind the snapshot.
    disk.entries = disk.entries.filter((entry) =>
      point < index ? entry.index >= point : entry.index > index
    );
  }

  // ---- Network ----

  #send(node: SimNode, message: Message): void {
    if (message.from !== node.id) {
      this.#fail(`${node.id} sent a ${message.type} from ${message.from}`);
    }
    if (message.to === node.id || !this.ids.includes(message.to)) {
      this.#fail(`${node.id} sent a ${message.type} to ${message.to}`);
    }
    this.stats.messagesSent++;
    const faults = this.faults;
    if (!this.connected(message.from, message.to) || this.#prng.chance(faults.dropRate)) {
      this.stats.messagesDropped++;
      return;
    }
    const copies = this.#prng.chance(faults.duplicateRate) ? 2 : 1;
    if (copies === 2) this.stats.messagesDuplicated++;
    for (let i = 0; i < copies; i++) {
      let latency = this.#prng.int(0, this.settings.latencyTicksMax + 1);
      if (faults.delayTicksMax > 0 && this.#prng.chance(faults.delayRate)) {
        latency += this.#prng.int(1, faults.delayTicksMax + 1);
        this.stats.messagesDelayed++;
      }
      // A wire copy: sender and receiver never share objects.
      this.#queue.push({
        deliverAt: this.now + latency,
        seq: this.#seq++,
        message: wireCopy(message),
      });
    }
  }

  #deliver(message: Message): void {
    const node = this.node(message.to);
    if (node.raft === undefined || !this.connected(message.from, message.to)) {
      this.stats.messagesDropped++;
      return;
    }
    this.stats.messagesDelivered++;
    node.raft.step(message);
    this.#drain(node);
  }

  // ---- Observation ----

  /** observe records roles after each step: check (1), one leader per term. */
  #observe(node: SimNode): void {
    const raft = node.raft;
    if (raft === undefined) return;
    const role = raft.role;
    const term = raft.term;
    if (term > this.stats.maxTerm) this.stats.maxTerm = term;
    if (raft.commitIndex < node.commitIndex) {
      this.#fail(
        `${node.id} moved its commit index back from ${node.commitIndex} to ${raft.commitIndex}`,
      );
    }
    node.commitIndex = raft.commitIndex;
    if (role === node.lastRole && term === node.lastTerm) return;
    node.lastRole = role;
    node.lastTerm = term;
    if (role === "leader") {
      this.#checkLeaderCompleteness(node, raft);
      const known = this.#leaders.get(term);
      if (known === undefined) {
        this.#leaders.set(term, node.id);
        this.stats.leadersElected++;
      } else if (known !== node.id) {
        this.#fail(`two leaders in term ${term}: ${known} and ${node.id}`);
      }
    }
    this.#event(`${node.id} is ${role} in term ${term}`);
  }

  /**
   * checkLeaderCompleteness: a new leader's log holds every entry any node applied
   * (Raft §5.4, Leader Completeness), as far as its log is not compacted.
   */
  #checkLeaderCompleteness(node: SimNode, raft: Raft): void {
    const applied = this.#canonical.length;
    if (raft.lastIndex < applied) {
      this.#fail(
        `${node.id} became leader in term ${raft.term} with log ending at ${raft.lastIndex}, but index ${applied} is committed`,
      );
    }
    for (let index = Math.max(1, raft.log.firstIndex); index <= applied; index++) {
      const term = raft.log.termAt(index);
      if (term !== this.#canonical[index - 1]!.term) {
        this.#fail(
          `${node.id} became leader in term ${raft.term} holding term ${term} at index ${index}, ` +
            `where term ${this.#canonical[index - 1]!.term} is committed`,
        );
      }
    }
  }

  #event(text: string): void {
    const line = `[t=${this.now}] ${text}`;
    this.#trace.push(line);
    if (this.#trace.length > traceLinesMax) this.#trace.shift();
    this.#log?.(line);
  }

  #fail(text: string): never {
    throw new SimViolation(`tick ${this.now}: ${text}`);
  }
}

/**
 * retire keeps the current snapshot readable after a newer one replaces it: the core goes
 * on reading chunks of the snapshot a transfer started with (Progress.pendingSnapshot).
 */
function retire(disk: Disk): void {
  if (disk.snapshot !== undefined) disk.older.push(disk.snapshot);
  while (disk.older.length > olderSnapshotsMax) disk.older.shift();
}

function diskLastIndex(disk: Disk): number {
  return disk.entries[disk.entries.length - 1]?.index ?? disk.snapshot?.meta.index ?? 0;
}

function cloneEntry(entry: Entry): Entry {
  return { index: entry.index, term: entry.term, kind: entry.kind, data: entry.data.slice() };
}

/** wireCopy copies a message as a network would: nothing is shared with the sender. */
function wireCopy(message: Message): Message {
  switch (message.type) {
    case "appendEntries":
      return { ...message, entries: message.entries.map(cloneEntry) };
    case "installSnapshot":
      return { ...message, snapshot: { ...message.snapshot }, data: message.data.slice() };
    default:
      return { ...message };
  }
}

function concat(parts: Uint8Array[], bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function describe(record: AppliedRecord): string {
  return record.kind === "command"
    ? `"${record.payload}" (term ${record.term})`
    : `a ${record.kind} (term ${record.term})`;
}

// ---- The seeded run ------------------------------------------------------------------------

/** reproduceLine is the command that replays a run. */
export function reproduceLine(options: SimOptions): string {
  let line = `reproduce: bun scripts/sim.ts --seed=${options.seed}`;
  if (options.nodes !== 3) line += ` --nodes=${options.nodes}`;
  if (options.ticks !== defaultTicks) line += ` --ticks=${options.ticks}`;
  const profile = options.profile ?? "custom";
  if (profile !== defaultProfile) line += ` --profile=${profile}`;
  for (const [bug, on] of Object.entries(options.bugs ?? {})) {
    if (on) line += ` --bug=${bug}`;
  }
  return line;
}

/**
 * runSimulation runs one seeded cluster: faults during the first ~75% of the ticks, then
 * all nodes up on a whole network until the liveness check passes (or the ticks run out).
 * Every safety check runs as the cluster goes; the first violation ends the run.
 */
export function runSimulation(options: SimOptions): SimResult {
  const cluster = new Cluster({
    seed: options.seed,
    nodes: options.nodes,
    faults: options.faults,
    ...(options.bugs === undefined ? {} : { bugs: options.bugs }),
    ...(options.log === undefined ? {} : { log: options.log }),
  });
  try {
    drive(cluster, options);
    cluster.checkFinal();
    return { ok: true, failure: undefined, stats: cluster.stats };
  } catch (error: unknown) {
    const what = error instanceof SimViolation
      ? error.message
      : `tick ${cluster.now}: the core threw ${
        error instanceof Error ? (error.stack ?? error.message) : String(error)
      }`;
    const failure = [
      `simulation failed (seed ${options.seed}, ${options.nodes} nodes, profile ${
        options.profile ?? "custom"
      }): ${what}`,
      `settings: ${JSON.stringify(cluster.settings)}`,
      "last events:",
      ...cluster.trace().map((line) => `  ${line}`),
      reproduceLine(options),
    ].join("\n");
    return { ok: false, failure, stats: cluster.stats };
  }
}

/** drive runs the seeded clients and faults of a simulation on a cluster. */
export function drive(cluster: Cluster, options: SimOptions): void {
  const prng = new Prng(mix(options.seed, 0xc11e4750));
  const faults = options.faults;
  const s = cluster.settings;
  const n = cluster.ids.length;
  // The last ~25% of the run is fault-free, and long enough for the liveness bound.
  const quietTicksMin = 10 * s.electionTicks + 200;
  const faultEnd = Math.max(
    0,
    Math.min(Math.floor(options.ticks * 0.75), options.ticks - quietTicksMin),
  );
  const electionBound = 10 * s.electionTicks;
  const restartAt = new Map<NodeId, number>();
  let healAt = 0;
  let commandCount = 0;
  let probeCount = 0;
  let probe: { node: NodeId; payload: string; tick: number; index: number } | undefined;
  let leaderAfterHeal = false;
  let probeIndex = 0;
  // The run goes on past options.ticks when catching up after the faults needs longer.
  let deadline = options.ticks;

  while (cluster.now < deadline) {
    const now = cluster.now + 1;
    const faulty = now <= faultEnd;
    if (now === faultEnd + 1) {
      cluster.faults = quiet;
      cluster.heal();
      for (const node of cluster.nodes) {
        node.crashAfterPersist = false;
        cluster.restart(node.id);
      }
      restartAt.clear();
      deadline = Math.max(options.ticks, now + catchUpTicks(cluster));
    }

    // Faults.
    if (faulty) {
      cluster.faults = faults;
      for (const [id, at] of restartAt) {
        if (at > now) continue;
        restartAt.delete(id);
        // A crash scheduled between persist and send that never struck is called off.
        cluster.node(id).crashAfterPersist = false;
        cluster.restart(id);
      }
      if (cluster.partitioned && now >= healAt) cluster.heal();
      if (!cluster.partitioned && prng.chance(faults.partitionRate)) {
        const oneWay = prng.chance(0.2);
        cluster.partition(choosePartition(cluster, prng), 0.5, oneWay);
        healAt = now + prng.int(faults.partitionTicksMin, faults.partitionTicksMax + 1);
      }
      if (prng.chance(faults.crashRate)) {
        const down = cluster.nodes.filter((node) => !node.up).length;
        const downMax = faults.crashMajority ? n : Math.floor((n - 1) / 2);
        const candidates = cluster.nodes.filter((node) => node.up && !node.crashAfterPersist);
        if (down < downMax && candidates.length > 0) {
          const victim = prng.pick(candidates);
          if (prng.chance(faults.crashBeforeSendRate)) {
            victim.crashAfterPersist = true;
          } else {
            cluster.crash(victim.id);
          }
          restartAt.set(victim.id, now + prng.int(1, faults.downTicksMax + 1));
        }
      }
    }

    cluster.tick();

    // Clients. Once faults heal only reads go on, besides the liveness probe: a lagging
    // node must be able to catch up, and under steady load a snapshot transfer with tiny
    // chunks can fall behind the leader's compaction for ever (a throughput limit, not a
    // liveness bug).
    const up = cluster.nodes.filter((node) => node.up);
    if (faulty && up.length > 0 && prng.chance(s.proposeRate)) {
      const leader = cluster.leader();
      const target = leader !== undefined && prng.chance(0.85) ? leader : prng.pick(up);
      cluster.propose(target.id, `${target.id}-${++commandCount}`);
    }
    if (up.length > 0 && prng.chance(s.readRate)) cluster.read(prng.pick(up).id);
    if (faulty && prng.chance(s.transferRate)) {
      const leader = cluster.leader();
      if (leader !== undefined) cluster.transfer(leader.id, prng.pick(cluster.ids));
    }

    // Liveness (check 4), once faults are over.
    if (!faulty) {
      const sinceHeal = now - faultEnd;
      const leader = cluster.leader();
      if (!leaderAfterHeal) {
        if (leader !== undefined) {
          leaderAfterHeal = true;
        } else if (sinceHeal > electionBound) {
          throw new SimViolation(
            `tick ${now}: no leader within ${electionBound} ticks after faults healed at tick ${faultEnd}`,
          );
        }
      }
      if (probeIndex === 0 && leader !== undefined) {
        if (probe !== undefined && cluster.isAcknowledged(probe.index, probe.payload)) {
          probeIndex = probe.index;
        } else if (
          probe === undefined || probe.node !== leader.id || now - probe.tick > 4 * s.electionTicks
        ) {
          const payload = `probe-${++probeCount}`;
          const result = cluster.propose(leader.id, payload);
          if (result.ok) probe = { node: leader.id, payload, tick: now, index: result.index };
        }
      }
      if (probeIndex > 0 && cluster.nodes.every((node) => node.appliedIndex >= probeIndex)) return;
    }
  }
  if (faultEnd >= deadline) return;
  if (probeIndex === 0) {
    throw new SimViolation(
      `tick ${cluster.now}: no proposal was acknowledged in the ${deadline - faultEnd} ticks ` +
        `after faults healed at tick ${faultEnd}`,
    );
  }
  const behind = cluster.nodes.filter((node) => node.appliedIndex < probeIndex).map((node) =>
    `${node.id} (applied ${node.appliedIndex})`
  );
  throw new SimViolation(
    `tick ${cluster.now}: proposal at index ${probeIndex} was not applied on every node within ` +
      `${deadline - faultEnd} ticks after faults healed: ${behind.join(", ")}`,
  );
}

/**
 * catchUpTicks bounds how long the cluster may take, once faults heal, to elect a leader
 * and bring every node up to date: the largest snapshot chunk by chunk and the log gap
 * batch by batch, one round trip each, twice over (a transfer may restart once on a newer
 * snapshot), plus elections.
 */
function catchUpTicks(cluster: Cluster): number {
  const s = cluster.settings;
  const roundTrip = 2 * (s.latencyTicksMax + 1) + s.heartbeatTicks;
  let snapshotBytes = 0;
  let appliedMin = cluster.appliedIndexMax;
  for (const node of cluster.nodes) {
    snapshotBytes = Math.max(snapshotBytes, node.disk.snapshot?.meta.bytes ?? 0);
    appliedMin = Math.min(appliedMin, node.appliedIndex);
  }
  const chunks = Math.ceil(snapshotBytes / s.snapshotChunkBytes);
  const batches = Math.ceil((cluster.appliedIndexMax - appliedMin) / s.entriesPerMessageMax);
  return 20 * s.electionTicks + 2 * (chunks + batches) * roundTrip;
}

/** choosePartition picks a random split, an isolated leader, or a minority/majority cut. */
function choosePartition(cluster: Cluster, prng: Prng): NodeId[][] {
  const ids = cluster.ids;
  const kind = prng.int(0, 3);
  const leader = cluster.leader();
  if (kind === 0 && leader !== undefined) {
    return [[leader.id], ids.filter((id) => id !== leader.id)];
  }
  if (kind === 1) {
    // Minority with the leader (when there is one), majority without it.
    const shuffled = shuffle(ids, prng);
    const minoritySize = Math.floor((ids.length - 1) / 2);
    const minority = leader === undefined
      ? shuffled.slice(0, minoritySize)
      : [leader.id, ...shuffled.filter((id) => id !== leader.id).slice(0, minoritySize - 1)];
    return [minority, ids.filter((id) => !minority.includes(id))];
  }
  const group = ids.filter(() => prng.chance(0.5));
  return [group, ids.filter((id) => !group.includes(id))];
}

function shuffle<T>(items: readonly T[], prng: Prng): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = prng.int(0, i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
