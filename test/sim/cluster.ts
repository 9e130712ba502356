// The deterministic cluster simulator: the real consensus core (src/consensus/raft.ts) on a
// simulated disk, network and clock, with faults drawn from one seeded Prng.
//
// Determinism: nothing here reads a clock, Math.random or a timer; Maps and arrays are
// iterated in insertion order; every random choice comes from `Prng`s derived from the
// seed. The same options therefore replay the same run, event for event.
//
// Hosts and incarnations (DESIGN §3, R0): a member is a name; the host serving it has an
// incarnation. A reformat wipes the host's disk and starts a replacement host under the
// same name, a new incarnation that starts recovering. The old host may live on (a
// zombie): messages to the name go to the replacement (the address moved), except from
// peers whose view of the address is stale for a while; the zombie still sends to
// everyone. Every delivery carries `sender` = the sending host's {incarnation, recovering},
// and a receiver's `fencedOut` refusal tells the sending host it is fenced, as the real
// transport's handshake does.
//
// The checks (each failure names the seed and how to reproduce it):
// 1. at most one leader per term, ever, across all hosts (Raft §5.2, Election Safety);
// 2. applied sequences agree: every host applies the same (index, term, kind, payload) at
//    each index, and a state machine restored from a snapshot equals the applied prefix
//    (§5.4.3, State Machine Safety); this holds across incarnations: a replacement's
//    applied log is its own, from its start;
// 3. no acknowledged write is lost: it stays at its index on every host that applied it;
// 4. liveness: once faults heal and every host is up, a leader is elected within a bound,
//    a new proposal is applied on every member, every replacement turns normal, and every
//    zombie that speaks is refused and fenced;
// 5. ReadIndex is linearizable: a read position is at least the commit index any host
//    knew when the read was issued (so it covers every acknowledged write) (§6.4);
// 6. a fenced incarnation never has a vote counted: a leader's election must hold with
//    the granted votes delivered to it, leaving out every vote from an incarnation that a
//    fence committed before the campaign began had superseded (R4-R7);
// 7. a recovering host never grants a vote or a pre-vote (R3);
// 8. a replacement turns normal only after its fence committed, in one write with a vote
//    in a term at least the fence's (R6); the current incarnation of a member is never
//    refused or fenced (a fenced host never acts again: the member is lost for good);
//    fences of a member commit in the order its hosts were created (a name is never
//    handed back to a replaced host);
// plus: a new leader's log holds every entry committed in an earlier term (§5.4, Leader
// Completeness); a
// node's commit index never goes back; the durable term never goes back and a durable vote
// never changes within a term; committed entries arrive in order without gaps; the disk
// always ends where the core's log ends; snapshot chunks arrive contiguously.
//
// Contract notes the simulator encodes (see storage.ts and types.ts):
// - a Ready is persisted in the order: snapshot chunk, snapshot install (drops the whole
//   log, then restoreFences with the snapshot's table), hard state with status, entries
//   (truncating first); then messages are sent; then applied;
// - a snapshot holds {fences, state}: the incarnation table at its index (fenceTableAt)
//   and the service state; a restart passes the table back in RestoredState.fences;
// - a leader may read chunks of a snapshot older than its latest one (a transfer started
//   before the latest snapshot), so a disk keeps replaced snapshots readable;
// - a duplicated readIndexResponse yields a second ReadState for the same request; the node
//   loop ignores answers to reads it no longer waits for.

import { decideBootstrap, type PeerHandshake } from "../../src/consensus/incarnations.ts";
import { Raft } from "../../src/consensus/raft.ts";
import { type RaftConfig, raftDefaults } from "../../src/consensus/config.ts";
import type { FenceTable } from "../../src/consensus/fences.ts";
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
  Sender,
  SnapshotMeta,
  SnapshotSource,
  TransferResult,
} from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";
import { TraceDigest } from "./digest.ts";

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
  /** Per-tick probability of a reformat: a member's disk is wiped, a replacement starts. */
  wipeRate: number;
  /**
   * Members lost at once, capped at f = floor((n - 1) / 2). A member is lost from the
   * wipe (or backup restore) until its replacement turned normal (or it caught up).
   */
  lostMembersMax: number;
  /** Fraction of wipes whose old host keeps running as a zombie (sometimes down, back later). */
  zombieRate: number;
  /** A zombie stays reachable at its old address for some peers up to this many ticks. */
  staleAddressTicksMax: number;
  /** Fraction of the old host's in-flight messages also delivered late, across the fence. */
  fenceDelayRate: number;
  fenceDelayTicksMax: number;
  /**
   * Fraction of wipes that come with a partition: the old leader isolated with a minority
   * while the rest move on, then the replacement put on the old leader's side (R5); or a
   * lagging minority cut off while the leader commits, then a member holding the entries
   * wiped and the leader cut off (R3); or a random cut.
   */
  wipePartitionRate: number;
  /** Per-tick probability of copying a member's disk aside (a backup). */
  backupRate: number;
  /** Per-tick probability of restarting a member from its old backup (same incarnation). */
  restoreRate: number;
  /**
   * Members start empty and recovering, and form the cluster by the core's bootstrap
   * decision (decideBootstrap, R1), as keel's founders do; otherwise they start normal.
   */
  bootstrap?: boolean;
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
  wipeRate: 0,
  lostMembersMax: 1,
  zombieRate: 0,
  staleAddressTicksMax: 0,
  fenceDelayRate: 0,
  fenceDelayTicksMax: 0,
  wipePartitionRate: 0,
  backupRate: 0,
  restoreRate: 0,
};

/** Loss, reordering and a few short crashes: the background of the replacement profiles. */
const unsteady = {
  ...quiet,
  dropRate: 0.03,
  duplicateRate: 0.02,
  delayRate: 0.1,
  delayTicksMax: 6,
  crashRate: 0.003,
  downTicksMax: 60,
  crashBeforeSendRate: 0.3,
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
  /** Reformats: wiped members come back as replacements; old messages arrive late. */
  replace: {
    ...unsteady,
    wipeRate: 0.006,
    lostMembersMax: 2,
    fenceDelayRate: 0.3,
    fenceDelayTicksMax: 200,
  },
  /** Reformats whose old host lives on, reachable at its old address for a while. */
  zombie: {
    ...unsteady,
    wipeRate: 0.006,
    lostMembersMax: 2,
    zombieRate: 1,
    staleAddressTicksMax: 150,
    fenceDelayRate: 0.5,
    fenceDelayTicksMax: 300,
  },
  /** Reformats during partitions, around an old leader that has not noticed it lost. */
  "replace-partition": {
    ...unsteady,
    dropRate: 0.02,
    crashRate: 0.002,
    partitionRate: 0.005,
    partitionTicksMin: 10,
    partitionTicksMax: 150,
    wipeRate: 0.008,
    lostMembersMax: 2,
    zombieRate: 0.3,
    staleAddressTicksMax: 100,
    fenceDelayRate: 0.3,
    fenceDelayTicksMax: 200,
    wipePartitionRate: 0.8,
  },
  /**
   * The founding of a cluster (R1): every member starts empty and recovering, and decides
   * by decideBootstrap (form with everyone, or join as a replacement), while partitions,
   * crashes and wipes strike from the first ticks.
   */
  bootstrap: {
    ...unsteady,
    bootstrap: true,
    crashRate: 0.008,
    downTicksMax: 40,
    partitionRate: 0.02,
    partitionTicksMin: 5,
    partitionTicksMax: 80,
    wipeRate: 0.004,
    lostMembersMax: 1,
  },
  /** Members restarted from an old copy of their own disk (rolled-back term, vote, log). */
  backup: {
    ...unsteady,
    crashRate: 0.005,
    backupRate: 0.01,
    restoreRate: 0.003,
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
    wipeRate: 0.002,
    lostMembersMax: 2,
    zombieRate: 0.5,
    staleAddressTicksMax: 100,
    fenceDelayRate: 0.3,
    fenceDelayTicksMax: 200,
    wipePartitionRate: 0.3,
    backupRate: 0,
    restoreRate: 0,
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
  /** asyncStorage: send a Ready's messages at once, before its write is synced. */
  sendBeforeSync?: boolean;
  /** Snapshots miss the last command they claim to include. */
  staleSnapshot?: boolean;
  /** A zombie's links present the current host's incarnation (R0 broken: identity spoofed). */
  zombieClaimsCurrent?: boolean;
  /**
   * A vote response's link reports a recovering sender as normal, so the candidate counts
   * it. With RaftConfig.unsafe.recoveringVotes (the voter's half of R3) this turns R3 off
   * on both sides: the core's switch alone still leaves the candidate discarding the vote.
   */
  votesHideRecovering?: boolean;
}

export type BugName = keyof HarnessBugs;

/** UnsafeRules are the core's test-only switches that turn a safety rule off (config.ts). */
export type UnsafeRules = NonNullable<RaftConfig["unsafe"]>;
export type UnsafeName = keyof UnsafeRules;

/** SkippedChecks turns off direct rule checks, to see whether the outcome checks bite alone. */
export interface SkippedChecks {
  /** Do not fail on a granted vote sent by a recovering host (check 7). */
  recoveringGrants?: boolean;
}

export type CheckName = keyof SkippedChecks;

export interface SimOptions {
  seed: number;
  nodes: 3 | 5;
  ticks: number;
  faults: FaultOptions;
  /** The profile's name, for the reproduce line (omit for a custom FaultOptions). */
  profile?: string;
  bugs?: HarnessBugs;
  unsafe?: UnsafeRules;
  skipChecks?: SkippedChecks;
  /** Receives a line per notable event (role changes, faults, snapshots). */
  log?: (line: string) => void;
  /** Hash every observable event into SimResult.digest (test/sim/digest.ts). */
  digest?: boolean;
  /** With digest: receives each line the digest hashes (to diff the traces of two trees). */
  digestLines?: (line: string) => void;
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
  /** Reformats, and how many of them left a zombie running. */
  wipes: number;
  zombies: number;
  /** Replacements that turned normal (R6). */
  replacementsNormal: number;
  /** Fences committed (first applied anywhere). */
  fencesCommitted: number;
  /** Hosts that learned they are fenced (refused at a handshake, or by their own log). */
  hostsFenced: number;
  backupsTaken: number;
  backupsRestored: number;
  /** Hosts refused as rolled back, which took a new incarnation (judgePeer). */
  rollbacksRefused: number;
  /** Members that formed the cluster by the bootstrap decision (the bootstrap profile). */
  bootstrapsFormed: number;
  messagesSent: number;
  messagesDelivered: number;
  messagesDropped: number;
  messagesDuplicated: number;
  messagesDelayed: number;
  /** Messages a receiver refused because fencedOut named their sender (R7). */
  messagesRefused: number;
  /** Late copies of a wiped host's messages, delivered across the fence. */
  messagesDelayedAcrossFence: number;
}

export interface SimResult {
  ok: boolean;
  /** The violation (or crash of the core), with the reproduce line; undefined when ok. */
  failure: string | undefined;
  stats: SimStats;
  /** The run's trace digest (SimOptions.digest); undefined without it. */
  digest: string | undefined;
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
  /**
   * The node persists in the background, as keel does (RaftConfig.asyncStorage): a
   * Ready's writes become durable when a later sync ends (at the end of the tick or of the
   * next one), a crash before
   * that loses them, and its messages wait for the sync (the leader's appends excepted).
   */
  asyncStorage: boolean;
  /** Election waits drawn from [E, 1.25 E) as keel's node sets them, not [E, 2E). */
  electionJitterQuarter: boolean;
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
    asyncStorage: prng.chance(0.5),
    // keel runs with a quarter of the timeout as jitter; the core's default is all of it.
    electionJitterQuarter: prng.chance(0.5),
  };
}

/** mix derives an independent 32-bit seed from a seed and a salt (a murmur3 finalizer). */
export function mix(seed: number, salt: number): number {
  let h = (seed ^ Math.imul(salt, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

// ---- The simulated disk and host ---------------------------------------------------------

/** StoredSnapshot is a complete snapshot on a simulated disk. */
interface StoredSnapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

/** SnapshotContent is what a snapshot's bytes hold: the incarnation table and the state. */
interface SnapshotContent {
  fences: FenceTable;
  state: string[];
}

/** HostStatus is the durable lifecycle status of a host (R2, R6). */
export type HostStatus = "normal" | "recovering";

/**
 * Disk is what survives a crash. Invariant: entries are contiguous and reach the snapshot;
 * entries at or before the snapshot index are trailing entries kept for slow followers
 * (the first of them is only the compaction boundary, see RaftLog.restore).
 */
export interface Disk {
  /** Written with the data dir (R0, R2): a reformat makes a new one. */
  incarnation: string;
  status: HostStatus;
  hardState: HardState;
  entries: Entry[];
  snapshot: StoredSnapshot | undefined;
  /** Earlier snapshots still readable by an ongoing transfer, oldest first. */
  older: StoredSnapshot[];
  /** An incoming snapshot being received chunk by chunk. */
  staged: { meta: SnapshotMeta; parts: Uint8Array[]; bytes: number } | undefined;
}

function emptyDisk(incarnation: string, status: HostStatus): Disk {
  return {
    incarnation,
    status,
    hardState: { term: 0, votedFor: null, commitIndex: 0 },
    entries: [],
    snapshot: undefined,
    older: [],
    staged: undefined,
  };
}

/**
 * helloState is what a host's handshake says of it now: its term and last index, from its
 * core while up, else from its disk (what it would say when it starts again).
 */
function helloState(node: SimNode): { term: number; lastIndex: number } {
  if (node.raft !== undefined) return { term: node.raft.term, lastIndex: node.raft.lastIndex };
  return { term: node.disk.hardState.term, lastIndex: diskLastIndex(node.disk) };
}

/** copyDisk is a backup: an independent copy (snapshot bytes are never mutated, so shared). */
function copyDisk(disk: Disk): Disk {
  return {
    incarnation: disk.incarnation,
    status: disk.status,
    hardState: { ...disk.hardState },
    entries: disk.entries.map(cloneEntry),
    snapshot: disk.snapshot,
    older: disk.older.slice(),
    staged: disk.staged === undefined ? undefined : {
      meta: { ...disk.staged.meta },
      parts: disk.staged.parts.slice(),
      bytes: disk.staged.bytes,
    },
  };
}

/** AppliedRecord is what the harness saw a node apply at one index. */
interface AppliedRecord {
  term: number;
  kind: EntryKind;
  /** A command's text, a fence's {name, incarnation} JSON, "" for a noop. */
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

/** Campaign is what the harness saw of a host's candidacy: the votes delivered to it. */
interface Campaign {
  term: number;
  /** The harness moment the host became a candidate in term. */
  moment: number;
  /** Granted requestVoteResponses delivered in term, by member name and incarnation. */
  grants: Map<NodeId, Set<string>>;
}

/**
 * SimNode is one host: a member's name, its incarnation, its disk always, its Raft and
 * memory only while up. A member's current host is in Cluster.nodes; a replaced host still
 * running is a zombie (Cluster.zombies).
 */
export class SimNode {
  readonly id: NodeId;
  /** 1 for the member's founding host, 2.. for its replacements. */
  readonly generation: number;
  readonly incarnation: string;
  disk: Disk;
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
  /** asyncStorage: Readies written but not synced (a crash loses them), oldest first. */
  unsynced: Ready[] = [];
  /** asyncStorage: messages waiting for the unsynced writes, in order. */
  held: Message[] = [];
  /** asyncStorage: the tick at which the running sync ends. */
  syncAt = 0;
  pendingProposals = new Map<number, PendingProposal>();
  pendingReads = new Map<number, PendingRead>();
  /** Everything this host applied, across restarts (the harness's observation). */
  readonly applied = new Map<number, AppliedRecord>();
  lastRole: Role | undefined;
  lastTerm = 0;
  /** The core's commit index as last observed since this host started. */
  commitIndex = 0;
  /** Replaced, and still running (or coming back): a zombie. */
  zombie = false;
  /** Replaced and discarded: never restarts. */
  gone = false;
  /** A copy of the disk taken earlier (the backup profile). */
  backup: Disk | undefined = undefined;
  /** This host was restarted from a backup: its disk went back in time, by the harness. */
  restored = false;
  campaign: Campaign | undefined = undefined;

  constructor(id: NodeId, generation = 1, status: HostStatus = "normal") {
    this.id = id;
    this.generation = generation;
    // Zero-padded so that incarnations order by creation, like keel's time-prefixed ones.
    this.incarnation = `${id}#${String(generation).padStart(4, "0")}`;
    this.disk = emptyDisk(this.incarnation, status);
  }

  get up(): boolean {
    return this.raft !== undefined;
  }

  /** recovering is the host's status as its links know it (the core's while up). */
  get recovering(): boolean {
    return this.raft?.recovering ?? this.disk.status === "recovering";
  }

  /** sender is what a receiving link knows of this host (R0). */
  get sender(): Sender {
    return { incarnation: this.incarnation, recovering: this.recovering };
  }
}

// ---- The network -----------------------------------------------------------------------

interface InFlight {
  deliverAt: number;
  seq: number;
  message: Message;
  /** The sending host (a member's name may have several). */
  from: SimNode;
}

/** MessageQueue is a binary min-heap of in-flight messages by (deliverAt, seq). */
class MessageQueue {
  #heap: InFlight[] = [];

  get size(): number {
    return this.#heap.length;
  }

  /** items lists what is in flight, in heap order (deterministic). */
  items(): readonly InFlight[] {
    return this.#heap;
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
/** Zombies kept at once; a wipe beyond this shuts the oldest one down for good. */
const zombiesMax = 8;

export interface ClusterOptions {
  seed: number;
  nodes: 3 | 5;
  settings?: Partial<SimSettings>;
  faults?: FaultOptions;
  bugs?: HarnessBugs;
  unsafe?: UnsafeRules;
  skipChecks?: SkippedChecks;
  log?: (line: string) => void;
  /** Feed a TraceDigest with every observable event (Cluster.digest). */
  digest?: boolean;
  digestLines?: (line: string) => void;
}

/** WipeOptions shape a reformat (Cluster.wipe). */
export interface WipeOptions {
  /** Keep the old host running as a zombie instead of discarding it. */
  zombie?: boolean;
  /** Each peer keeps sending to the zombie's old address for up to this many ticks. */
  staleAddressTicksMax?: number;
  /** Fraction of the old host's in-flight messages also delivered late, and how late. */
  fenceDelayRate?: number;
  fenceDelayTicksMax?: number;
}

/** Lost says why a member counts as lost and until when (see FaultOptions.lostMembersMax). */
interface Lost {
  reason: "wiped" | "restored";
  /** For a restored member: lost until its commit index and term reach these. */
  commitIndex: number;
  term: number;
}

/** FenceCommit is when a fence first committed (was first applied anywhere). */
interface FenceCommit {
  name: NodeId;
  index: number;
  term: number;
  moment: number;
}

/**
 * Cluster is a simulated cluster: hosts, network, clock and the checks that run as it
 * goes. Fixed-scenario tests drive it directly; runSimulation drives it with seeded
 * clients and faults.
 */
export class Cluster {
  readonly seed: number;
  readonly settings: SimSettings;
  readonly ids: NodeId[];
  /** The current host of each member, in member order (a reformat replaces one). */
  readonly nodes: SimNode[];
  /** Replaced hosts still running or coming back, oldest first. */
  readonly zombies: SimNode[] = [];
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
    wipes: 0,
    zombies: 0,
    replacementsNormal: 0,
    fencesCommitted: 0,
    hostsFenced: 0,
    backupsTaken: 0,
    backupsRestored: 0,
    rollbacksRefused: 0,
    bootstrapsFormed: 0,
    messagesSent: 0,
    messagesDelivered: 0,
    messagesDropped: 0,
    messagesDuplicated: 0,
    messagesDelayed: 0,
    messagesRefused: 0,
    messagesDelayedAcrossFence: 0,
  };
  /** Network faults apply while this is set. */
  faults: FaultOptions;
  now = 0;

  readonly #bugs: HarnessBugs;
  readonly #unsafe: UnsafeRules | undefined;
  readonly #skipChecks: SkippedChecks;
  readonly #log: ((line: string) => void) | undefined;
  /**
   * The trace digest, or undefined. A pure observation: every use is `this.#digest?.event(`,
   * which evaluates nothing when it is off, and nothing it does draws from a Prng.
   */
  readonly #digest: TraceDigest | undefined;
  /** The harness's own stream: network latency and faults. */
  readonly #prng: Prng;
  /** Background sync delays (asyncStorage), apart so the other draws stay as they were. */
  readonly #syncPrng: Prng;
  readonly #queue = new MessageQueue();
  #seq = 0;
  /** Orders events within a tick: each delivery and each host tick is one moment. */
  #moment = 0;
  /** Group number per member while partitioned; undefined when the network is whole. */
  #groups: Map<NodeId, number> | undefined;
  /** Zombies sit in a group of their own choosing (their old address). */
  readonly #zombieGroups = new Map<SimNode, number>();
  /** The partition cuts only messages from group 0 to the others. */
  #oneWay = false;
  /** The one leader host seen for each term. */
  readonly #leaders = new Map<number, SimNode>();
  /** Applied history agreed by all hosts so far: index i at position i - 1. */
  readonly #canonical: AppliedRecord[] = [];
  /**
   * Index i at position i - 1: the term in which it was first known committed (the term of
   * the first host seen with commit index >= i, which is the term of the leader that
   * committed it: a commit index only travels from that leader in its term), and the term
   * of the entry that host held there.
   */
  readonly #commits: { term: number; entryTerm: number | undefined }[] = [];
  /** Command entries through index i at position i - 1 (the state machine's length). */
  readonly #commandCounts: number[] = [];
  readonly #acks = new Map<number, { term: number; payload: string; node: string; tick: number }>();
  readonly #trace: string[] = [];
  #nextRequestId = 1;
  /** Answered reads: request id -> read index (0 when refused). */
  readonly #readResults = new Map<number, number>();
  /** Every incarnation of each member, in the order they were created. */
  readonly #incarnations = new Map<NodeId, string[]>();
  /** Committed fences by the incarnation they fence in. */
  readonly #fenceCommits = new Map<string, FenceCommit>();
  /** Members whose durable promises are (partly) gone, see FaultOptions.lostMembersMax. */
  readonly #lost = new Map<NodeId, Lost>();
  /** Per member: its previous host, still at the old address for some peers until a tick. */
  readonly #staleAddress = new Map<NodeId, { host: SimNode; until: Map<NodeId, number> }>();

  constructor(options: ClusterOptions) {
    this.seed = options.seed;
    this.#bugs = options.bugs ?? {};
    this.settings = { ...settingsForSeed(options.seed), ...options.settings };
    // Each of these bugs lives in one storage mode.
    if (this.#bugs.sendBeforePersist === true) this.settings.asyncStorage = false;
    if (this.#bugs.sendBeforeSync === true) this.settings.asyncStorage = true;
    this.faults = options.faults ?? quiet;
    this.#unsafe = options.unsafe;
    this.#skipChecks = options.skipChecks ?? {};
    this.#log = options.log;
    this.#digest = options.digest === true ? new TraceDigest(options.digestLines) : undefined;
    this.#digest?.event(0, "start", options.seed, options.nodes, this.settings);
    this.#prng = new Prng(mix(options.seed, 0x00c1a55e));
    this.#syncPrng = new Prng(mix(options.seed, 0x05c1a55e));
    this.ids = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    const founding: HostStatus = this.faults.bootstrap === true ? "recovering" : "normal";
    this.nodes = this.ids.map((id) => new SimNode(id, 1, founding));
    for (const node of this.nodes) {
      this.#incarnations.set(node.id, [node.incarnation]);
      this.#start(node);
    }
  }

  // ---- Queries ----

  /** node returns the member's current host. */
  node(id: NodeId): SimNode {
    const index = this.ids.indexOf(id);
    if (index < 0) throw new RangeError(`Unknown node "${id}"`);
    return this.nodes[index]!;
  }

  /** hosts lists every host that may run: the current ones, then the zombies. */
  hosts(): SimNode[] {
    return this.zombies.length === 0 ? this.nodes : [...this.nodes, ...this.zombies];
  }

  /** leader returns the current up host that believes it leads in the highest term, if any. */
  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const node of this.nodes) {
      if (node.raft?.role !== "leader") continue;
      if (best === undefined || node.raft.term > best.raft!.term) best = node;
    }
    return best;
  }

  /** leaderOfTerm is the member seen leading term, if any was. */
  leaderOfTerm(term: number): NodeId | undefined {
    return this.#leaders.get(term)?.id;
  }

  /** committedIndex is the highest index some node has applied (so it is committed). */
  get appliedIndexMax(): number {
    return this.#canonical.length;
  }

  /** knownCommitIndex is the highest commit index any up host knows, or any host applied. */
  knownCommitIndex(): number {
    let index = this.#canonical.length;
    for (const node of this.hosts()) {
      if (node.raft !== undefined) index = Math.max(index, node.raft.commitIndex);
    }
    return index;
  }

  /** lostMembers lists members wiped (or restored) and not yet whole again. */
  lostMembers(): NodeId[] {
    return [...this.#lost.keys()];
  }

  /** fenceCommitted says whether a fence for the incarnation has committed. */
  fenceCommitted(incarnation: string): boolean {
    return this.#fenceCommits.has(incarnation);
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

  /** digest ends the trace digest (ClusterOptions.digest) with the run's end; its value. */
  digest(...end: unknown[]): string | undefined {
    this.#digest?.event(this.now, "end", ...end);
    return this.#digest?.value();
  }

  /** connected says whether a message from member `from` reaches member `to` now. */
  connected(from: NodeId, to: NodeId): boolean {
    return this.#reaches(this.node(from), this.node(to));
  }

  #group(host: SimNode): number | undefined {
    return this.#zombieGroups.get(host) ?? this.#groups?.get(host.id);
  }

  /** reaches says whether a message from one host reaches another now. */
  #reaches(from: SimNode, to: SimNode): boolean {
    if (this.#groups === undefined) return true;
    const a = this.#group(from);
    const b = this.#group(to);
    if (a === b) return true;
    // A one-way cut only stops traffic leaving group 0.
    return this.#oneWay && a !== 0;
  }

  /**
   * route finds the host a message to member `to` reaches: the current host, unless the
   * sender's view of the address is still stale and points at the replaced host.
   */
  #route(from: SimNode, to: NodeId): SimNode {
    const stale = this.#staleAddress.get(to);
    if (stale !== undefined && (stale.until.get(from.id) ?? 0) > this.now) return stale.host;
    return this.node(to);
  }

  /**
   * unsettled lists what keeps the cluster from its settled state once faults heal: a
   * member's current host down, recovering or fenced, or a zombie that still believes it
   * is a member (a recovering zombie never speaks first, so it may stay unfenced).
   */
  unsettled(): string[] {
    const out: string[] = [];
    for (const node of this.nodes) {
      if (node.raft === undefined) out.push(`${node.incarnation} is down`);
      else if (node.raft.fenced !== null) out.push(`${node.incarnation} is fenced`);
      else if (node.raft.recovering) out.push(`${node.incarnation} is still recovering`);
    }
    for (const zombie of this.zombies) {
      if (zombie.raft !== undefined && zombie.raft.fenced === null && !zombie.raft.recovering) {
        out.push(`zombie ${zombie.incarnation} is not fenced`);
      }
    }
    return out;
  }

  // ---- Time ----

  /** tick advances the clock by one: deliver what is due, then tick every up host. */
  tick(): void {
    this.now++;
    this.stats.ticks = this.now;
    this.deliverDue();
    for (const node of this.hosts()) {
      if (node.raft === undefined) continue;
      this.#moment++;
      node.raft.tick();
      if (this.faults.bootstrap === true) this.#maybeBootstrap(node);
      this.#drain(node);
    }
    // Background syncs that are due end after the tick's work (asyncStorage).
    for (const node of this.hosts()) {
      if (node.raft === undefined || node.unsynced.length === 0 || node.syncAt > this.now) {
        continue;
      }
      this.#moment++;
      this.#sync(node, node.raft);
      if (node.raft !== undefined) this.#drain(node);
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
      this.#deliver(top);
    }
  }

  // ---- Faults ----

  /** partition splits the network: hosts in different groups cannot exchange messages. */
  partition(groups: NodeId[][], hintRate = 0.5, oneWay = false): void {
    this.#groups = new Map();
    this.#oneWay = oneWay;
    groups.forEach((group, i) => {
      for (const id of group) this.#groups!.set(id, i);
    });
    for (const id of this.ids) {
      if (!this.#groups.has(id)) this.#groups.set(id, groups.length);
    }
    // A zombie's old address lands on either side of the cut.
    this.#zombieGroups.clear();
    for (const zombie of this.zombies) {
      this.#zombieGroups.set(zombie, this.#prng.int(0, groups.length + 1));
    }
    this.stats.partitions++;
    this.#digest?.event(
      this.now,
      "partition",
      groups,
      oneWay,
      [...this.#zombieGroups].map(([zombie, group]) => [zombie.incarnation, group]),
    );
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
    this.#zombieGroups.clear();
    this.#digest?.event(this.now, "heal");
    this.#event("heal");
  }

  /** settleAddresses ends every stale address: each name reaches its current host only. */
  settleAddresses(): void {
    this.#digest?.event(this.now, "settle");
    this.#staleAddress.clear();
  }

  /** crash drops a member's current host's Raft and memory; only its disk survives. */
  crash(id: NodeId): void {
    this.crashHost(this.node(id));
  }

  crashHost(node: SimNode): void {
    if (node.raft === undefined) return;
    this.#digest?.event(this.now, "crash", node.incarnation);
    this.#stop(node);
    this.stats.crashes++;
    this.#event(`${node.incarnation} crashes`);
  }

  #stop(node: SimNode): void {
    node.raft = undefined;
    node.crashAfterPersist = false;
    node.unsynced = [];
    node.held = [];
    node.stateMachine = [];
    node.pendingProposals.clear();
    node.pendingReads.clear();
    node.lastRole = undefined;
    node.commitIndex = 0;
    node.campaign = undefined;
    if (node.zombie) return;
    for (const other of this.nodes) {
      if (other.raft !== undefined && this.#reaches(node, other) && this.#prng.chance(0.5)) {
        other.raft.peerDown(node.id);
        this.#drain(other);
      }
    }
  }

  restart(id: NodeId): void {
    this.restartHost(this.node(id));
  }

  restartHost(node: SimNode): void {
    if (node.raft !== undefined || node.gone) return;
    this.#digest?.event(this.now, "restart", node.incarnation);
    node.restarts++;
    if (this.#bugs.forgetVoteOnRestart) node.disk.hardState.votedFor = null;
    this.#event(`${node.incarnation} restarts`);
    this.#start(node);
  }

  /**
   * wipe reformats a member: its host's disk is lost, and a replacement host with a new
   * incarnation starts under the same name, recovering (R2). The old host is discarded, or
   * lives on as a zombie with its old disk. Returns the replacement.
   */
  wipe(id: NodeId, options: WipeOptions = {}): SimNode {
    const old = this.node(id);
    const index = this.ids.indexOf(id);
    this.#digest?.event(this.now, "wipe", old.incarnation, options);
    const delayRate = options.fenceDelayRate ?? 0;
    const delayMax = options.fenceDelayTicksMax ?? 0;
    if (delayRate > 0 && delayMax > 0) {
      // Late copies of what the old host has in flight: they arrive after the fence.
      const late: InFlight[] = [];
      for (const item of this.#queue.items()) {
        if (item.from !== old || !this.#prng.chance(delayRate)) continue;
        late.push({
          deliverAt: this.now + this.#prng.int(Math.ceil(delayMax / 2), delayMax + 1),
          seq: 0,
          message: wireCopy(item.message),
          from: old,
        });
      }
      for (const item of late) {
        item.seq = this.#seq++;
        this.#queue.push(item);
        this.stats.messagesDelayedAcrossFence++;
      }
    }
    const incarnations = this.#incarnations.get(id)!;
    const fresh = new SimNode(id, incarnations.length + 1, "recovering");
    incarnations.push(fresh.incarnation);
    if (options.zombie === true) {
      if (this.zombies.length >= zombiesMax) {
        const oldest = this.zombies.shift()!;
        if (oldest.raft !== undefined) this.#stop(oldest);
        oldest.gone = true;
        this.#zombieGroups.delete(oldest);
      }
      old.zombie = true;
      this.zombies.push(old);
      this.stats.zombies++;
      const until = new Map<NodeId, number>();
      const staleMax = options.staleAddressTicksMax ?? 0;
      for (const peer of this.ids) {
        if (peer === id || staleMax <= 0 || !this.#prng.chance(0.5)) continue;
        until.set(peer, this.now + this.#prng.int(1, staleMax + 1));
      }
      this.#staleAddress.set(id, { host: old, until });
      if (this.#groups !== undefined) {
        this.#zombieGroups.set(old, this.#groups.get(id) ?? 0);
      }
    } else {
      if (old.raft !== undefined) this.#stop(old);
      old.gone = true;
      this.#staleAddress.delete(id);
    }
    this.nodes[index] = fresh;
    this.#lost.set(id, { reason: "wiped", commitIndex: 0, term: 0 });
    this.stats.wipes++;
    this.#event(
      `${old.incarnation} is wiped; ${fresh.incarnation} starts as its replacement` +
        (options.zombie === true ? ` while ${old.incarnation} runs on (a zombie)` : ""),
    );
    this.#start(fresh);
    return fresh;
  }

  /** backup copies a member's current disk aside, to restore it later. */
  backup(id: NodeId): void {
    const node = this.node(id);
    node.backup = copyDisk(node.disk);
    this.#digest?.event(this.now, "backup", node.incarnation);
    this.stats.backupsTaken++;
  }

  /**
   * restoreBackup restarts a member's host from the copy of its disk taken earlier, with
   * the same incarnation: its term, vote and log roll back. Returns false without a backup.
   */
  restoreBackup(id: NodeId): boolean {
    const node = this.node(id);
    if (node.backup === undefined) return false;
    this.#digest?.event(this.now, "restore", node.incarnation);
    const lost: Lost = {
      reason: "restored",
      commitIndex: Math.max(diskLastIndex(node.disk), this.knownCommitIndex()),
      term: node.disk.hardState.term,
    };
    if (node.raft !== undefined) this.#stop(node);
    const backup = node.backup;
    node.disk = copyDisk(backup);
    node.restored = true;
    this.#lost.set(id, lost);
    this.stats.backupsRestored++;
    this.#event(
      `${node.incarnation} restarts from a backup (term ${backup.hardState.term}, vote ${backup.hardState.votedFor}, log to ${
        diskLastIndex(backup)
      })`,
    );
    node.restarts++;
    this.#start(node);
    return true;
  }

  // ---- Clients ----

  /** propose submits a command to a member's current host. */
  propose(id: NodeId, payload: string): ProposeResult {
    return this.proposeOn(this.node(id), payload);
  }

  /** proposeOn submits a command to a host; it acknowledges it once it applies it. */
  proposeOn(node: SimNode, payload: string): ProposeResult {
    if (node.raft === undefined) return { ok: false, reason: "not-leader", leader: null };
    const result = node.raft.propose(encoder.encode(payload));
    this.#digest?.event(this.now, "propose", node.incarnation, payload, result);
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

  /** read issues a ReadIndex request on a member's current host; returns its request id. */
  read(id: NodeId): number | undefined {
    return this.readOn(this.node(id));
  }

  readOn(node: SimNode): number | undefined {
    if (node.raft === undefined) return undefined;
    const requestId = this.#nextRequestId++;
    node.pendingReads.set(requestId, {
      requiredIndex: this.knownCommitIndex(),
      issuedTick: this.now,
    });
    this.stats.readsIssued++;
    this.#digest?.event(this.now, "readIndex", node.incarnation, requestId);
    node.raft.readIndex(requestId);
    this.#drain(node);
    return requestId;
  }

  transfer(from: NodeId, to: NodeId): TransferResult {
    const node = this.node(from);
    if (node.raft === undefined) return { ok: false, reason: "not-leader", leader: null };
    this.stats.transfersRequested++;
    const result = node.raft.transferLeadership(to);
    this.#digest?.event(this.now, "transfer", node.incarnation, to, result);
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

  /** checkFinal runs the whole-history checks (2) and (3) across every up host. */
  checkFinal(): void {
    const payloads = this.#canonical.filter((r) => r.kind === "command").map((r) => r.payload);
    const hosts = this.hosts();
    for (const node of hosts) {
      if (node.raft === undefined) continue;
      const expected = this.#commandCounts[node.appliedIndex - 1] ?? 0;
      if (node.stateMachine.length !== expected) {
        this.#fail(
          `${node.incarnation} state machine holds ${node.stateMachine.length} commands at applied index ` +
            `${node.appliedIndex}; the agreed log has ${expected}`,
        );
      }
      for (let i = 0; i < node.stateMachine.length; i++) {
        if (node.stateMachine[i] !== payloads[i]) {
          this.#fail(
            `${node.incarnation} state machine differs at command ${i}: "${
              node.stateMachine[i]
            }" vs "${payloads[i]}"`,
          );
        }
      }
    }
    for (const [index, ack] of this.#acks) {
      const agreed = this.#canonical[index - 1];
      if (agreed !== undefined && (agreed.term !== ack.term || agreed.payload !== ack.payload)) {
        this.#fail(`acknowledged write "${ack.payload}" at index ${index} was lost`);
      }
      for (const node of hosts) {
        const record = node.applied.get(index);
        if (record !== undefined && (record.term !== ack.term || record.payload !== ack.payload)) {
          this.#fail(
            `acknowledged write "${ack.payload}" (term ${ack.term}) at index ${index} was lost on ` +
              `${node.incarnation}, which applied "${record.payload}" (term ${record.term})`,
          );
        }
        if (node.raft === undefined || node.appliedIndex < index) continue;
        const position = this.#commandCounts[index - 1]! - 1;
        if (node.stateMachine[position] !== ack.payload) {
          this.#fail(
            `acknowledged write "${ack.payload}" at index ${index} is missing from ${node.incarnation}'s ` +
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
            `${node.incarnation} was asked for a chunk of snapshot ${index} but holds ` +
              `${
                [...disk.older, ...(disk.snapshot ? [disk.snapshot] : [])].map((x) => x.meta.index)
                  .join(", ")
              }`,
          );
        }
        if (offset < 0 || length <= 0 || offset > snapshot.data.length) {
          this.#fail(
            `${node.incarnation} was asked for chunk [${offset}, +${length}) of ${snapshot.data.length} bytes`,
          );
        }
        return snapshot.data.slice(offset, offset + length);
      },
    };
    const s = this.settings;
    // The founding host keeps the stream it always had; each replacement gets its own.
    const stream = node.restarts + 0x10000 * (node.generation - 1);
    const random = new Prng(mix(mix(this.seed, this.ids.indexOf(node.id) + 1), stream));
    const config: RaftConfig = {
      ...raftDefaults,
      id: node.id,
      members: this.ids.slice(),
      electionTicks: s.electionTicks,
      ...(s.electionJitterQuarter
        ? { electionJitterTicks: Math.max(1, Math.floor(s.electionTicks / 4)) }
        : {}),
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
      incarnation: node.incarnation,
      recovering: disk.status === "recovering",
      asyncStorage: s.asyncStorage,
      ...(this.#unsafe === undefined ? {} : { unsafe: { ...this.#unsafe } }),
    };
    node.stateMachine = [];
    node.appliedIndex = 0;
    node.appliedTerm = 0;
    const fences = disk.snapshot === undefined
      ? undefined
      : this.#restoreStateMachine(node, disk.snapshot);
    const restored: RestoredState = {
      hardState: { ...disk.hardState },
      snapshot: disk.snapshot === undefined ? undefined : { ...disk.snapshot.meta },
      entries: disk.entries.map(cloneEntry),
      fences,
    };
    node.appliedSinceSnapshot = 0;
    node.raft = new Raft(config, restored);
    if (this.#judgeAtStart(node)) return;
    this.#drain(node);
  }

  /**
   * judgeAtStart: a starting host dials every member it can reach at once, and each judges
   * its hello then, with the state it starts with (keel's transport dials on start). Only
   * the rollback half is acted on here; a fenced host is refused when its messages arrive,
   * as before. Returns true when the host was refused as rolled back (and replaced).
   */
  #judgeAtStart(node: SimNode): boolean {
    const raft = node.raft;
    if (raft === undefined || node.zombie) return false;
    for (const peer of this.nodes) {
      if (peer === node || peer.raft === undefined) continue;
      if (!this.#reaches(node, peer) || !this.#reaches(peer, node)) continue;
      const refusal = peer.raft.judgePeer({
        name: node.id,
        incarnation: node.incarnation,
        recovering: raft.recovering,
        ...helloState(node),
      });
      if (refusal?.kind !== "rolled-back") continue;
      this.#rolledBack(node, peer, refusal.reason);
      return true;
    }
    return false;
  }

  /** drain runs the node loop until the core has nothing more to do. */
  #drain(node: SimNode): void {
    for (let round = 0;; round++) {
      const raft = node.raft;
      if (raft === undefined || !raft.hasReady()) break;
      if (round >= readyRoundsMax) {
        this.#fail(
          `${node.incarnation} produced more than ${readyRoundsMax} Ready batches in a row`,
        );
      }
      const ready = raft.ready();
      // Every message in a Ready was produced before ready() ended recovering (R6).
      if (raft.recovering || ready.becameNormal) this.#checkNoGrants(node, ready);
      if (this.settings.asyncStorage) {
        if (!this.#writeInBackground(node, ready, raft)) return;
      } else if (this.#bugs.sendBeforePersist) {
        for (const message of ready.messages) this.#send(node, message);
        if (node.crashAfterPersist) {
          this.stats.crashesBeforeSend++;
          this.crashHost(node);
          return;
        }
        this.#persist(node, ready, raft);
      } else {
        this.#persist(node, ready, raft);
        if (node.crashAfterPersist) {
          // The Ready is durable but its messages never leave: the window between fsync
          // and send.
          this.stats.crashesBeforeSend++;
          this.crashHost(node);
          return;
        }
        for (const message of ready.messages) this.#send(node, message);
      }
      if (ready.becameNormal) this.#onBecameNormal(node);
      this.#apply(node, ready);
      raft.advance(ready);
      this.#maybeSnapshot(node, raft);
    }
    this.#observe(node);
  }

  /**
   * writeInBackground is the node loop's step 1 and 2 with asyncStorage (node.ts
   * handleReady): snapshot chunks, installs and turning normal are written and synced at
   * once, with every write before them; hard state and entries are written and synced
   * later (sync), and until then every message waits, except a leader's appends.
   * Returns false if the host crashed.
   */
  #writeInBackground(node: SimNode, ready: Ready, raft: Raft): boolean {
    const early = raft.role === "leader";
    if (early) {
      for (const message of ready.messages) {
        if (message.type === "appendEntries") this.#send(node, message);
      }
    }
    const late = early
      ? ready.messages.filter((message) => message.type !== "appendEntries")
      : ready.messages;
    const syncNow = ready.snapshotChunk !== undefined || ready.installSnapshot !== undefined ||
      ready.becameNormal;
    if (syncNow) {
      // One fsync covers the earlier writes too.
      this.#sync(node, raft);
      if (node.raft === undefined) return false;
      this.#persist(node, ready, raft);
      if (node.crashAfterPersist) {
        this.stats.crashesBeforeSend++;
        this.crashHost(node);
        return false;
      }
      const last = ready.entries[ready.entries.length - 1];
      if (last !== undefined) raft.persisted(last.index, last.term);
      for (const message of late) this.#send(node, message);
      return true;
    }
    if (ready.hardState !== undefined || ready.entries.length > 0) {
      // An fdatasync takes well under a tick (10 ms) in keel: most end within this one;
      // the rest are open to the crashes that strike between ticks.
      if (node.unsynced.length === 0) node.syncAt = this.now + (this.#syncPrng.chance(0.7) ? 0 : 1);
      node.unsynced.push(ready);
    }
    if (node.unsynced.length > 0 && this.#bugs.sendBeforeSync !== true) {
      node.held.push(...late);
    } else {
      for (const message of late) this.#send(node, message);
    }
    return true;
  }

  /**
   * sync ends a background sync: the unsynced writes reach the disk in order, the core
   * hears they are durable, and the messages that waited go out (or the host crashes
   * first, when a crash between persist and send was scheduled).
   */
  #sync(node: SimNode, raft: Raft): void {
    if (node.unsynced.length === 0) return;
    if (node.crashAfterPersist && this.#syncPrng.chance(0.5)) {
      // The crash strikes while the sync runs: the writes never reach the disk.
      this.stats.crashesBeforeSend++;
      this.crashHost(node);
      return;
    }
    let last: Entry | undefined;
    for (const ready of node.unsynced) {
      this.#persist(node, ready, raft, false);
      last = ready.entries[ready.entries.length - 1] ?? last;
    }
    node.unsynced = [];
    if (node.crashAfterPersist) {
      this.stats.crashesBeforeSend++;
      this.crashHost(node);
      return;
    }
    if (last !== undefined) raft.persisted(last.index, last.term);
    const held = node.held;
    node.held = [];
    for (const message of held) this.#send(node, message);
  }

  /** checkNoGrants: a recovering host never grants a vote or a pre-vote (R3), check 7. */
  #checkNoGrants(node: SimNode, ready: Ready): void {
    if (this.#skipChecks.recoveringGrants === true) return;
    for (const message of ready.messages) {
      if (
        (message.type === "requestVoteResponse" || message.type === "preVoteResponse") &&
        message.granted
      ) {
        this.#fail(
          `${node.incarnation} granted a ${
            message.type === "preVoteResponse" ? "pre-vote" : "vote"
          } to ${message.to} in term ${message.term} while recovering (R3)`,
        );
      }
    }
  }

  /** onBecameNormal: R6, check 8; the member is whole again. */
  #onBecameNormal(node: SimNode): void {
    const fence = this.#fenceCommits.get(node.incarnation);
    if (fence === undefined) {
      this.#fail(`${node.incarnation} turned normal before its fence committed (R6)`);
    }
    const hardState = node.disk.hardState;
    if (hardState.votedFor === null || hardState.term < fence.term) {
      this.#fail(
        `${node.incarnation} turned normal with term ${hardState.term} and vote ${hardState.votedFor}; ` +
          `its fence is at index ${fence.index} of term ${fence.term} (R6)`,
      );
    }
    this.stats.replacementsNormal++;
    if (!node.zombie && this.#lost.get(node.id)?.reason === "wiped") this.#lost.delete(node.id);
    this.#event(
      `${node.incarnation} turns normal in term ${hardState.term}, voting for ${hardState.votedFor}`,
    );
  }

  /**
   * persist is step 1 of the Ready contract, on the simulated disk. checkEnd: the disk
   * must end where the core's log does (not so for a background write that is synced
   * after the core moved on).
   */
  #persist(node: SimNode, ready: Ready, raft: Raft, checkEnd = true): void {
    // A Ready that writes nothing (messages and reads only) is no event of its own.
    if (
      this.#digest !== undefined &&
      (ready.snapshotChunk !== undefined || ready.installSnapshot !== undefined ||
        ready.hardState !== undefined || ready.becameNormal || ready.entries.length > 0)
    ) {
      this.#digest.event(this.now, "persist", node.incarnation, {
        snapshotChunk: ready.snapshotChunk,
        installSnapshot: ready.installSnapshot,
        hardState: ready.hardState,
        becameNormal: ready.becameNormal,
        entries: ready.entries,
      });
    }
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
          `${node.incarnation} was given snapshot chunk at offset ${chunk.offset} of snapshot ` +
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
          `${node.incarnation} was told to install snapshot ${install.index} but has not staged it`,
        );
      }
      if (staged.bytes !== install.bytes) {
        this.#fail(
          `${node.incarnation} staged ${staged.bytes} bytes of snapshot ${install.index}, expected ${install.bytes}`,
        );
      }
      const data = concat(staged.parts, staged.bytes);
      const snapshot = { meta: { ...install }, data };
      // The staged snapshot replaces the whole log and the service state (storage.ts:
      // installStagedSnapshot), and its table the core's fences.
      retire(disk);
      disk.snapshot = snapshot;
      disk.staged = undefined;
      disk.entries = [];
      const fences = this.#restoreStateMachine(node, snapshot);
      raft.restoreFences(fences);
      this.stats.snapshotsInstalled++;
      this.#event(
        `${node.incarnation} installs snapshot at ${install.index} (term ${install.term})`,
      );
    }
    if (ready.hardState !== undefined) {
      const before = disk.hardState;
      const after = ready.hardState;
      if (after.term < before.term) {
        this.#fail(`${node.incarnation} persisted term ${after.term} after term ${before.term}`);
      }
      if (
        after.term === before.term && before.votedFor !== null && after.votedFor !== before.votedFor
      ) {
        this.#fail(
          `${node.incarnation} changed its durable vote in term ${after.term} from ${before.votedFor} to ${after.votedFor}`,
        );
      }
      if (after.commitIndex < before.commitIndex) {
        this.#fail(
          `${node.incarnation} persisted commit index ${after.commitIndex} after ${before.commitIndex}`,
        );
      }
      disk.hardState = { ...after };
    }
    // R6: the status change is part of the same write as the adopted vote.
    if (ready.becameNormal) disk.status = "normal";
    if (ready.entries.length > 0) {
      const first = ready.entries[0]!.index;
      const snapshotIndex = disk.snapshot?.meta.index ?? 0;
      const lastIndex = diskLastIndex(disk);
      if (first > lastIndex + 1 || first <= snapshotIndex) {
        this.#fail(
          `${node.incarnation} was given entries from ${first} to persist after a log of ` +
            `(${snapshotIndex}, ${lastIndex}]`,
        );
      }
      const firstStored = disk.entries[0]?.index ?? snapshotIndex + 1;
      disk.entries.length = Math.max(0, first - firstStored);
      for (const entry of ready.entries) {
        if (entry.index !== diskLastIndex(disk) + 1) {
          this.#fail(`${node.incarnation} was given a non-contiguous batch`);
        }
        disk.entries.push(cloneEntry(entry));
      }
    }
    // The disk now holds everything the core has handed out.
    if (checkEnd && diskLastIndex(disk) !== raft.lastIndex) {
      this.#fail(
        `${node.incarnation} disk ends at ${
          diskLastIndex(disk)
        } but the core's log ends at ${raft.lastIndex}`,
      );
    }
  }

  /** apply is step 3: committed entries to the state machine, and read states. */
  #apply(node: SimNode, ready: Ready): void {
    for (const entry of ready.committedEntries) {
      this.#digest?.event(this.now, "apply", node.incarnation, entry);
      if (entry.index !== node.appliedIndex + 1) {
        this.#fail(
          `${node.incarnation} was given entry ${entry.index} to apply after applying ${node.appliedIndex}`,
        );
      }
      const payload = entry.kind === "noop" ? "" : decoder.decode(entry.data);
      const record: AppliedRecord = { term: entry.term, kind: entry.kind, payload };
      this.#agree(node, entry.index, record);
      if (entry.kind === "fence") this.#onFenceCommitted(entry, payload);
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
      this.#digest?.event(this.now, "readState", node.incarnation, state);
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
          `ReadIndex is not linearizable: read ${state.requestId} on ${node.incarnation}, issued at tick ` +
            `${pending.issuedTick} when index ${pending.requiredIndex} was known committed, got read ` +
            `index ${state.index}`,
        );
      }
    }
  }

  /** onFenceCommitted records when a fence first committed (it is applied in that drain). */
  #onFenceCommitted(entry: Entry, payload: string): void {
    const fence = JSON.parse(payload) as { name: NodeId; incarnation: string };
    if (this.#fenceCommits.has(fence.incarnation)) return;
    // A name moves forward only: handing it back to an older host (one replaced before it
    // was ever fenced in) would fence out the live replacement.
    const order = this.#incarnations.get(fence.name) ?? [];
    const newer = order.slice(order.indexOf(fence.incarnation) + 1).find((incarnation) =>
      this.#fenceCommits.has(incarnation)
    );
    if (newer !== undefined) {
      this.#fail(
        `fence ${fence.incarnation} commits at index ${entry.index} after the fence of the newer ` +
          `${newer}: ${fence.name} is handed back to a replaced host`,
      );
    }
    this.#fenceCommits.set(fence.incarnation, {
      name: fence.name,
      index: entry.index,
      term: entry.term,
      moment: this.#moment,
    });
    this.stats.fencesCommitted++;
    this.#event(`fence ${fence.incarnation} commits at index ${entry.index} (term ${entry.term})`);
  }

  /** agree checks an applied entry against what every other host applied at its index. */
  #agree(node: SimNode, index: number, record: AppliedRecord): void {
    const agreed = this.#canonical[index - 1];
    if (agreed === undefined) {
      if (index !== this.#canonical.length + 1) {
        this.#fail(
          `${node.incarnation} applied index ${index} but no node ever applied ${index - 1}`,
        );
      }
      this.#canonical.push(record);
      const commands = (this.#commandCounts[index - 2] ?? 0) + (record.kind === "command" ? 1 : 0);
      this.#commandCounts.push(commands);
    } else if (
      agreed.term !== record.term || agreed.kind !== record.kind ||
      agreed.payload !== record.payload
    ) {
      this.#fail(
        `${node.incarnation} applied ${
          describe(record)
        } at index ${index}, where another node applied ` +
          `${describe(agreed)}`,
      );
    }
    const ack = this.#acks.get(index);
    if (ack !== undefined && (ack.term !== record.term || ack.payload !== record.payload)) {
      this.#fail(
        `acknowledged write "${ack.payload}" (term ${ack.term}, acknowledged by ${ack.node} at tick ` +
          `${ack.tick}) was lost: ${node.incarnation} applied ${
            describe(record)
          } at index ${index}`,
      );
    }
  }

  #acknowledge(node: SimNode, index: number, term: number, payload: string): void {
    this.#acks.set(index, { term, payload, node: node.incarnation, tick: this.now });
    this.stats.acknowledged++;
  }

  /** restoreStateMachine loads a snapshot into the host's state machine; returns its fences. */
  #restoreStateMachine(node: SimNode, snapshot: StoredSnapshot): FenceTable {
    const content: unknown = JSON.parse(decoder.decode(snapshot.data));
    const list = (content as Partial<SnapshotContent> | null)?.state;
    const fences = (content as Partial<SnapshotContent> | null)?.fences;
    if (
      !Array.isArray(list) || !list.every((item) => typeof item === "string") ||
      typeof fences !== "object" || fences === null
    ) {
      this.#fail(
        `${node.incarnation} snapshot ${snapshot.meta.index} does not decode to {fences, state}`,
      );
    }
    const index = snapshot.meta.index;
    const agreed = this.#canonical[index - 1];
    const expected = this.#commandCounts[index - 1] ?? 0;
    if (index > 0 && agreed === undefined) {
      this.#fail(
        `${node.incarnation} restored snapshot ${index}, but no node ever applied that index`,
      );
    }
    if (agreed !== undefined && agreed.term !== snapshot.meta.term) {
      this.#fail(
        `${node.incarnation} restored snapshot ${index} of term ${snapshot.meta.term}; index ${index} has term ${agreed.term}`,
      );
    }
    if (list.length !== expected) {
      this.#fail(
        `${node.incarnation} restored snapshot ${index} with ${list.length} commands; the agreed log has ${expected}`,
      );
    }
    let position = 0;
    for (let i = 0; i < index; i++) {
      const record = this.#canonical[i]!;
      if (record.kind !== "command") continue;
      if (list[position] !== record.payload) {
        this.#fail(
          `${node.incarnation} restored snapshot ${index} holding "${list[position]}" where index ${
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
    return fences;
  }

  #maybeSnapshot(node: SimNode, raft: Raft): void {
    if (node.appliedSinceSnapshot < this.settings.snapshotEveryEntries) return;
    const disk = node.disk;
    const index = node.appliedIndex;
    if (index <= (disk.snapshot?.meta.index ?? 0)) return;
    const state = this.#bugs.staleSnapshot ? node.stateMachine.slice(0, -1) : node.stateMachine;
    const content: SnapshotContent = { fences: raft.fenceTableAt(index), state };
    const data = encoder.encode(JSON.stringify(content));
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
      this.#fail(`${node.incarnation} sent a ${message.type} from ${message.from}`);
    }
    if (message.to === node.id || !this.ids.includes(message.to)) {
      this.#fail(`${node.incarnation} sent a ${message.type} to ${message.to}`);
    }
    this.#digest?.event(this.now, "send", node.incarnation, message);
    this.stats.messagesSent++;
    const faults = this.faults;
    if (
      !this.#reaches(node, this.#route(node, message.to)) || this.#prng.chance(faults.dropRate)
    ) {
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
        from: node,
      });
    }
  }

  #deliver(item: InFlight): void {
    const message = item.message;
    const from = item.from;
    const to = this.#route(from, message.to);
    if (to.raft === undefined || !this.#reaches(from, to)) {
      this.stats.messagesDropped++;
      return;
    }
    this.#moment++;
    const sender = this.#bugs.zombieClaimsCurrent && from.zombie
      ? { ...this.node(from.id).sender, recovering: from.recovering }
      : from.sender;
    // The handshake, judged by the core as the transport's is (Raft.judgePeer): a receiver
    // refuses a host its committed fences rule out (R7), and the refusal tells that host it
    // is fenced; or a host whose disk went back in time (below what it already said), which
    // then takes a new incarnation and rejoins as a replacement. The hello carries the
    // sending host's state now (a link's handshake precedes what it delivers; messages
    // reorder here, so the state at sending would not be what a handshake saw).
    const refusal = to.raft.judgePeer({
      name: message.from,
      incarnation: sender.incarnation,
      recovering: sender.recovering,
      ...helloState(from),
    });
    if (refusal !== null) {
      this.#digest?.event(this.now, "refuse", to.incarnation, from.incarnation);
      this.stats.messagesRefused++;
      if (refusal.kind === "rolled-back") this.#rolledBack(from, to, refusal.reason);
      else this.#refused(from, to, refusal.reason);
      return;
    }
    this.stats.messagesDelivered++;
    if (message.type === "requestVoteResponse" && message.granted) {
      const campaign = to.campaign;
      if (
        campaign !== undefined && campaign.term === message.term && to.raft.role === "candidate" &&
        to.raft.term === message.term
      ) {
        let incarnations = campaign.grants.get(message.from);
        if (incarnations === undefined) {
          incarnations = new Set();
          campaign.grants.set(message.from, incarnations);
        }
        incarnations.add(from.incarnation);
      }
    }
    const hide = this.#bugs.votesHideRecovering &&
      (message.type === "requestVoteResponse" || message.type === "preVoteResponse");
    to.raft.step(message, hide ? { ...sender, recovering: false } : sender);
    this.#drain(to);
  }

  /**
   * maybeBootstrap runs the core's bootstrap decision (R1) for an empty recovering member
   * of the current cluster, as keel's node loop does each turn: the peers it is linked
   * with now (up, reachable both ways) and whether each has state. "form" makes it normal,
   * durably, before it acts (the node writes status normal, then bootstrapNormal).
   */
  #maybeBootstrap(node: SimNode): void {
    const raft = node.raft;
    if (raft === undefined || node.zombie || !raft.recovering) return;
    const linked: PeerHandshake[] = [];
    for (const peer of this.nodes) {
      if (peer === node || peer.raft === undefined) continue;
      if (!this.#reaches(node, peer) || !this.#reaches(peer, node)) continue;
      linked.push({ name: peer.id, hasState: peer.raft.term > 0 || peer.raft.lastIndex > 0 });
    }
    const decision = decideBootstrap({
      term: raft.term,
      lastIndex: raft.lastIndex,
      recovering: raft.recovering,
      peers: raft.peers,
      linked,
      ...(this.#unsafe === undefined ? {} : { unsafe: this.#unsafe }),
    });
    if (decision.kind !== "form") return;
    this.#digest?.event(this.now, "bootstrap", node.incarnation);
    node.disk.status = "normal";
    raft.bootstrapNormal();
    this.stats.bootstrapsFormed++;
    this.#event(`${node.incarnation} finds every member linked and empty: forms the cluster`);
  }

  /**
   * rolledBack: a peer refused this host as rolled back (its disk went back in time). As
   * keel does (node.ts onRolledBack, storage.reincarnate, exit 75), the host takes a new
   * incarnation with its disk's log kept, status recovering, and starts again: the leader
   * fences it in as any replacement.
   */
  #rolledBack(from: SimNode, by: SimNode, reason: string): void {
    if (from.raft === undefined || from.zombie || from.gone) return;
    if (this.node(from.id) !== from) return;
    if (!from.restored) {
      // A correct host's term and acknowledged entries are durable: only a disk that went
      // back in time (a restore) is below what it said. Else it said what it had not
      // persisted (sendBeforePersist).
      this.#fail(
        `${by.incarnation} refused ${from.incarnation} as rolled back, though its disk was ` +
          `never restored: it said more than it had persisted (${reason})`,
      );
    }
    this.#digest?.event(this.now, "rolled-back", from.incarnation);
    this.stats.rollbacksRefused++;
    const incarnations = this.#incarnations.get(from.id)!;
    const fresh = new SimNode(from.id, incarnations.length + 1, "recovering");
    incarnations.push(fresh.incarnation);
    fresh.disk = { ...copyDisk(from.disk), incarnation: fresh.incarnation, status: "recovering" };
    this.#stop(from);
    from.gone = true;
    this.#staleAddress.delete(from.id);
    this.nodes[this.ids.indexOf(from.id)] = fresh;
    this.#lost.set(from.id, { reason: "wiped", commitIndex: 0, term: 0 });
    this.#event(
      `${by.incarnation} refused ${from.incarnation} as rolled back (${reason}); ` +
        `${fresh.incarnation} starts as its replacement, its log kept`,
    );
    this.#start(fresh);
  }

  #refused(from: SimNode, by: SimNode, reason: string): void {
    const raft = from.raft;
    if (raft === undefined || raft.fenced !== null) return;
    if (!from.zombie) {
      this.#fail(
        `${by.incarnation}${by.zombie ? " (a zombie)" : ""} refused ${from.incarnation}, ` +
          `the current host of ${from.id}: ${reason}`,
      );
    }
    raft.markFenced(`member ${by.id} refused this host: ${reason}`);
    this.stats.hostsFenced++;
    this.#event(`${by.incarnation} refuses ${from.incarnation}: ${reason}`);
    this.#drain(from);
  }

  // ---- Observation ----

  /** observe records roles after each step: checks (1), (6) and (8). */
  #observe(node: SimNode): void {
    const raft = node.raft;
    if (raft === undefined) return;
    const role = raft.role;
    const term = raft.term;
    if (term > this.stats.maxTerm) this.stats.maxTerm = term;
    if (raft.commitIndex < node.commitIndex) {
      this.#fail(
        `${node.incarnation} moved its commit index back from ${node.commitIndex} to ${raft.commitIndex}`,
      );
    }
    node.commitIndex = raft.commitIndex;
    this.#noteCommitted(raft);
    if (raft.fenced !== null && !node.zombie) {
      this.#fail(
        `${node.incarnation}, the current host of ${node.id}, is fenced: ${raft.fenced}`,
      );
    }
    const lost = this.#lost.get(node.id);
    if (
      lost?.reason === "restored" && !node.zombie && raft.commitIndex >= lost.commitIndex &&
      raft.term >= lost.term && raft.leader !== null
    ) {
      this.#lost.delete(node.id);
    }
    if (role === node.lastRole && term === node.lastTerm) return;
    this.#digest?.event(this.now, "role", node.incarnation, role, term);
    node.lastRole = role;
    node.lastTerm = term;
    if (role === "candidate") {
      node.campaign = { term, moment: this.#moment, grants: new Map() };
    }
    if (role === "leader") {
      this.#checkLeaderCompleteness(node, raft);
      this.#checkVotes(node, raft);
      const known = this.#leaders.get(term);
      if (known === undefined) {
        this.#leaders.set(term, node);
        this.stats.leadersElected++;
      } else if (known !== node) {
        this.#fail(`two leaders in term ${term}: ${known.incarnation} and ${node.incarnation}`);
      }
    }
    this.#event(`${node.incarnation} is ${role} in term ${term}`);
  }

  /** noteCommitted records the term in which each index was first known committed. */
  #noteCommitted(raft: Raft): void {
    for (let index = this.#commits.length + 1; index <= raft.commitIndex; index++) {
      this.#commits.push({ term: raft.term, entryTerm: raft.log.termAt(index) });
    }
  }

  /**
   * checkLeaderCompleteness: a new leader of term T holds every entry committed in a term
   * before T (Raft §5.4, Leader Completeness: an entry committed in term t is in the log of
   * the leader of every term after t), as far as its log is not compacted. Entries
   * committed in T or later are not its business: a candidate's votes for T may arrive
   * after a leader of a later term has committed (a delayed vote response), and the stale
   * leader can never make a majority accept its term's entries over them.
   */
  #checkLeaderCompleteness(node: SimNode, raft: Raft): void {
    const term = raft.term;
    for (let index = this.#commits.length; index >= 1; index--) {
      const commit = this.#commits[index - 1]!;
      if (commit.term >= term) continue;
      if (index > raft.lastIndex) {
        this.#fail(
          `${node.incarnation} became leader in term ${term} with log ending at ${raft.lastIndex}, ` +
            `but index ${index} was committed in term ${commit.term}`,
        );
      }
      if (index < Math.max(1, raft.log.firstIndex)) break;
      const expected = commit.entryTerm ?? this.#canonical[index - 1]?.term;
      const held = raft.log.termAt(index);
      if (expected !== undefined && held !== expected) {
        this.#fail(
          `${node.incarnation} became leader in term ${term} holding term ${held} at index ${index}, ` +
            `where term ${expected} was committed in term ${commit.term}`,
        );
      }
    }
  }

  /**
   * checkVotes (check 6): the election holds with the granted votes delivered to the new
   * leader in its term, leaving out each vote from an incarnation that a fence committed
   * before the campaign began had superseded. A vote the core did not count costs nothing
   * here; a quorum that needs a fenced vote fails.
   */
  #checkVotes(node: SimNode, raft: Raft): void {
    const campaign = node.campaign;
    if (campaign === undefined || campaign.term !== raft.term) {
      this.#fail(
        `${node.incarnation} became leader in term ${raft.term} without being seen campaigning in it`,
      );
    }
    let valid = 1;
    const fenced: string[] = [];
    for (const [name, incarnations] of campaign.grants) {
      if (name === node.id) continue;
      let counts = false;
      for (const incarnation of incarnations) {
        if (this.#supersededBefore(name, incarnation, campaign.moment)) fenced.push(incarnation);
        else counts = true;
      }
      if (counts) valid++;
    }
    const quorum = Math.floor(this.ids.length / 2) + 1;
    if (valid >= quorum) return;
    const grants = [...campaign.grants.values()].flatMap((set) => [...set]).join(", ");
    this.#fail(
      fenced.length > 0
        ? `${node.incarnation} became leader in term ${raft.term} counting the vote of fenced ` +
          `incarnation ${fenced.join(", ")} (votes delivered: ${grants || "none"})`
        : `${node.incarnation} became leader in term ${raft.term} with only ${valid - 1} granted ` +
          `votes delivered (${grants || "none"}); a quorum is ${quorum}`,
    );
  }

  /** supersededBefore: a later incarnation of name had its fence committed before moment. */
  #supersededBefore(name: NodeId, incarnation: string, moment: number): boolean {
    const order = this.#incarnations.get(name) ?? [];
    const position = order.indexOf(incarnation);
    for (let i = position + 1; i < order.length && position >= 0; i++) {
      const commit = this.#fenceCommits.get(order[i]!);
      if (commit !== undefined && commit.moment < moment) return true;
    }
    return false;
  }

  /** note adds a line to the trace (the driver names the faults it shapes). */
  note(text: string): void {
    this.#event(text);
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
  switch (record.kind) {
    case "command":
      return `"${record.payload}" (term ${record.term})`;
    case "fence":
      return `a fence ${record.payload} (term ${record.term})`;
    default:
      return `a ${record.kind} (term ${record.term})`;
  }
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
  for (const [rule, on] of Object.entries(options.unsafe ?? {})) {
    if (on) line += ` --unsafe=${rule}`;
  }
  for (const [check, on] of Object.entries(options.skipChecks ?? {})) {
    if (on) line += ` --skip-check=${check}`;
  }
  return line;
}

/**
 * runSimulation runs one seeded cluster: faults during the first ~75% of the ticks, then
 * all hosts up on a whole network until the liveness check passes (or the ticks run out).
 * Every safety check runs as the cluster goes; the first violation ends the run.
 */
export function runSimulation(options: SimOptions): SimResult {
  const cluster = new Cluster({
    seed: options.seed,
    nodes: options.nodes,
    faults: options.faults,
    ...(options.bugs === undefined ? {} : { bugs: options.bugs }),
    ...(options.unsafe === undefined ? {} : { unsafe: options.unsafe }),
    ...(options.skipChecks === undefined ? {} : { skipChecks: options.skipChecks }),
    ...(options.log === undefined ? {} : { log: options.log }),
    ...(options.digest === undefined ? {} : { digest: options.digest }),
    ...(options.digestLines === undefined ? {} : { digestLines: options.digestLines }),
  });
  try {
    drive(cluster, options);
    cluster.checkFinal();
    const digest = cluster.digest("ok", digestedStats(cluster.stats));
    return { ok: true, failure: undefined, stats: cluster.stats, digest };
  } catch (error: unknown) {
    const what = error instanceof SimViolation
      ? error.message
      : `tick ${cluster.now}: the core threw ${
        error instanceof Error ? (error.stack ?? error.message) : String(error)
      }`;
    // The violation without a stack (its line numbers move when code does).
    const violation = error instanceof SimViolation
      ? error.message
      : error instanceof Error
      ? `the core threw ${error.name}: ${error.message}`
      : `the core threw ${String(error)}`;
    const digest = cluster.digest("FAILED", violation, digestedStats(cluster.stats));
    const failure = [
      `simulation failed (seed ${options.seed}, ${options.nodes} nodes, profile ${
        options.profile ?? "custom"
      }): ${what}`,
      `settings: ${JSON.stringify(cluster.settings)}`,
      "last events:",
      ...cluster.trace().map((line) => `  ${line}`),
      reproduceLine(options),
    ].join("\n");
    return { ok: false, failure, stats: cluster.stats, digest };
  }
}

/**
 * digestedStats encodes the stats a run ends with, by a fixed list of names: a counter
 * added later does not change every digest.
 */
function digestedStats(stats: SimStats): Record<string, number> {
  const names: (keyof SimStats)[] = [
    "ticks",
    "leadersElected",
    "maxTerm",
    "proposed",
    "proposalsRejected",
    "acknowledged",
    "readsIssued",
    "readsServed",
    "readsRefused",
    "readStatesIgnored",
    "transfersRequested",
    "transfersAccepted",
    "snapshotsTaken",
    "snapshotsInstalled",
    "crashes",
    "crashesBeforeSend",
    "partitions",
    "wipes",
    "zombies",
    "replacementsNormal",
    "fencesCommitted",
    "hostsFenced",
    "backupsTaken",
    "backupsRestored",
    "messagesSent",
    "messagesDelivered",
    "messagesDropped",
    "messagesDuplicated",
    "messagesDelayed",
    "messagesRefused",
    "messagesDelayedAcrossFence",
  ];
  return Object.fromEntries(names.map((name) => [name, stats[name]]));
}

/** drive runs the seeded clients and faults of a simulation on a cluster. */
export function drive(cluster: Cluster, options: SimOptions): void {
  const prng = new Prng(mix(options.seed, 0xc11e4750));
  const faults = options.faults;
  const s = cluster.settings;
  const n = cluster.ids.length;
  const f = Math.floor((n - 1) / 2);
  const lostMax = Math.min(f, faults.lostMembersMax);
  // The last ~25% of the run is fault-free, and long enough for the liveness bound.
  const quietTicksMin = 10 * s.electionTicks + 200;
  const faultEnd = Math.max(
    0,
    Math.min(Math.floor(options.ticks * 0.75), options.ticks - quietTicksMin),
  );
  // Without pre-vote a candidate with a shorter log can keep bumping the term ahead of the
  // one that would win (more likely while a replacement cannot vote yet): allow more
  // rounds of that coin toss. With two of five members recovering, the three voters race
  // from one moment (a rejected campaign resets them all) with timeouts in [E, 2E): the
  // one that can win is first in about a third of the rounds, a round lasting about
  // 1.25 E; 30 E is some 24 rounds, (2/3)^24 < 1e-4. (keel itself always runs pre-vote.)
  const electionBound = (s.preVote ? 10 : 30) * s.electionTicks;
  const restartAt = new Map<SimNode, number>();
  /** Steps of a fault that unfolds over time, run in order when due. */
  let scheduled: { at: number; run: () => void }[] = [];
  let healAt = 0;
  let commandCount = 0;
  let probeCount = 0;
  let probe: { node: NodeId; payload: string; tick: number; index: number } | undefined;
  let leaderAfterHeal = false;
  let probeIndex = 0;
  // The run goes on past options.ticks when catching up after the faults needs longer.
  let deadline = options.ticks;

  /** wipeable lists the members a reformat may hit without losing more than lostMax. */
  const wipeable = (among: readonly NodeId[]): NodeId[] => {
    const lost = cluster.lostMembers();
    return among.filter((id) => lost.includes(id) || lost.length < lostMax);
  };

  const wipe = (id: NodeId, zombieAllowed = true): void => {
    const old = cluster.node(id);
    // Zombies only with check-quorum (keel always runs with it): without it, a zombie
    // leader whose address moved hears no one, never steps down, and its heartbeats keep
    // the others from ever electing the leader that would fence it (a liveness limit).
    const zombie = zombieAllowed && s.checkQuorum && faults.zombieRate > 0 &&
      prng.chance(faults.zombieRate);
    if (!zombie) restartAt.delete(old);
    cluster.wipe(id, {
      zombie,
      staleAddressTicksMax: faults.staleAddressTicksMax,
      fenceDelayRate: faults.fenceDelayRate,
      fenceDelayTicksMax: faults.fenceDelayTicksMax,
    });
    if (zombie && old.up && prng.chance(0.25)) {
      // The old host goes quiet for a while and comes back with its old disk.
      cluster.crashHost(old);
      restartAt.set(old, cluster.now + prng.int(1, Math.max(faults.downTicksMax, 50) * 2 + 1));
    }
  };

  const partitionFor = (groups: NodeId[][]): void => {
    cluster.partition(groups, 0.5);
    healAt = cluster.now + prng.int(faults.partitionTicksMin, faults.partitionTicksMax + 1);
  };

  /** reformat wipes a member, sometimes shaped by a partition (FaultOptions.wipePartitionRate). */
  const reformat = (): void => {
    const candidates = wipeable(cluster.ids);
    // Wiping a replacement again before it is fenced in is a fault worth trying, but
    // not the only one: without this, wipes pile onto the one member already lost.
    if (candidates.length === 0 || (candidates.length < n - f && !prng.chance(0.3))) return;
    const leader = cluster.leader();
    const kind = faults.wipePartitionRate > 0 && prng.chance(faults.wipePartitionRate)
      ? prng.int(0, 3)
      : -1;
    if (kind === 0 && leader !== undefined) {
      // The old leader and a minority are cut off; the majority elects a new leader with
      // the votes of members that are then wiped and whose replacements reach only the
      // old leader's side. An old leader that has not yet noticed it lost must not fence
      // them in on its own (R5).
      const others = shuffle(cluster.ids.filter((id) => id !== leader.id), prng);
      const minority = [leader.id, ...others.slice(0, f - 1)];
      const majority = others.slice(f - 1);
      cluster.note(`fault: old leader ${leader.id} cut off; then a replacement on its side`);
      partitionFor([minority, majority]);
      const at = cluster.now + prng.int(s.electionTicks, 3 * s.electionTicks + 1);
      healAt = at + prng.int(faults.partitionTicksMin, faults.partitionTicksMax + 1);
      scheduled.push({
        at,
        run: () => {
          const newLeader = cluster.leader()?.id;
          const pool = wipeable(majority.filter((id) => id !== newLeader));
          if (pool.length === 0) return;
          const victim = prng.pick(pool);
          wipe(victim);
          cluster.partition([[...minority, victim], majority.filter((id) => id !== victim)], 0.5);
        },
      });
      return;
    }
    const holdersWipeable = candidates.filter((id) => id !== leader?.id);
    if (kind === 1 && leader !== undefined && holdersWipeable.length > 0) {
      // A lagging survivor: f members are cut off while the leader commits entries with
      // the others; then one of those others is wiped (its disk really gone: no zombie)
      // and the leader is cut off. The survivors must not elect a lagging member with the
      // replacement's vote (R3): its log lacks entries only the leader and the wiped disk
      // held.
      const victim = prng.pick(holdersWipeable);
      const others = shuffle(cluster.ids.filter((id) => id !== leader.id && id !== victim), prng);
      const lagging = others.slice(0, f);
      const holders = [victim, ...others.slice(f)];
      cluster.note(
        `fault: ${lagging.join(",")} lag; then ${victim} is wiped and ${leader.id} cut off`,
      );
      partitionFor([lagging, [leader.id, ...holders]]);
      const at = cluster.now + prng.int(Math.ceil(s.electionTicks / 2), 2 * s.electionTicks + 1);
      healAt = at + prng.int(faults.partitionTicksMin, faults.partitionTicksMax + 1);
      scheduled.push({
        at,
        run: () => {
          if (!wipeable([victim]).includes(victim)) return;
          wipe(victim, false);
          cluster.partition([[leader.id], cluster.ids.filter((id) => id !== leader.id)], 0.5);
        },
      });
      return;
    }
    wipe(prng.pick(candidates));
    if (kind >= 0) partitionFor(choosePartition(cluster, prng));
  };

  while (cluster.now < deadline) {
    const now = cluster.now + 1;
    const faulty = now <= faultEnd;
    if (now === faultEnd + 1) {
      cluster.faults = quiet;
      cluster.heal();
      cluster.settleAddresses();
      scheduled = [];
      for (const node of cluster.hosts()) {
        node.crashAfterPersist = false;
        cluster.restartHost(node);
      }
      restartAt.clear();
      deadline = Math.max(options.ticks, now + catchUpTicks(cluster));
    }

    // Faults.
    if (faulty) {
      cluster.faults = faults;
      for (const [node, at] of restartAt) {
        if (at > now) continue;
        restartAt.delete(node);
        // A crash scheduled between persist and send that never struck is called off.
        node.crashAfterPersist = false;
        cluster.restartHost(node);
      }
      if (scheduled.length > 0) {
        const due = scheduled.filter((step) => step.at <= now);
        scheduled = scheduled.filter((step) => step.at > now);
        for (const step of due) step.run();
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
        // A zombie may crash too (it does not count as a member being down).
        const zombies = cluster.zombies.filter((node) => node.up && !node.crashAfterPersist);
        if (zombies.length > 0 && prng.chance(0.2)) {
          const victim = prng.pick(zombies);
          cluster.crashHost(victim);
          restartAt.set(victim, now + prng.int(1, faults.downTicksMax + 1));
        } else if (down < downMax && candidates.length > 0) {
          const victim = prng.pick(candidates);
          if (prng.chance(faults.crashBeforeSendRate)) {
            victim.crashAfterPersist = true;
          } else {
            cluster.crash(victim.id);
          }
          restartAt.set(victim, now + prng.int(1, faults.downTicksMax + 1));
        }
      }
      if (faults.wipeRate > 0 && prng.chance(faults.wipeRate)) reformat();
      if (faults.backupRate > 0 && prng.chance(faults.backupRate)) {
        cluster.backup(prng.pick(cluster.ids));
      }
      if (faults.restoreRate > 0 && prng.chance(faults.restoreRate)) {
        const pool = wipeable(cluster.ids).filter((id) => cluster.node(id).backup !== undefined);
        if (pool.length > 0) {
          const victim = cluster.node(prng.pick(pool));
          restartAt.delete(victim);
          cluster.restoreBackup(victim.id);
        }
      }
    }

    cluster.tick();

    // Clients. Once faults heal only reads go on, besides the liveness probe: a lagging
    // node must be able to catch up, and under steady load a snapshot transfer with tiny
    // chunks can fall behind the leader's compaction for ever (a throughput limit, not a
    // liveness bug). A client sometimes reaches a zombie (it serves until it is fenced).
    const up = cluster.nodes.filter((node) => node.up);
    const zombiesUp = cluster.zombies.filter((node) => node.up);
    if (faulty && up.length > 0 && prng.chance(s.proposeRate)) {
      const leader = cluster.leader();
      let target = leader !== undefined && prng.chance(0.85) ? leader : prng.pick(up);
      if (zombiesUp.length > 0 && prng.chance(0.1)) target = prng.pick(zombiesUp);
      cluster.proposeOn(target, `${target.id}-${++commandCount}`);
    }
    if (up.length > 0 && prng.chance(s.readRate)) {
      const target = zombiesUp.length > 0 && prng.chance(0.1)
        ? prng.pick(zombiesUp)
        : prng.pick(up);
      cluster.readOn(target);
    }
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
      if (
        probeIndex > 0 && cluster.nodes.every((node) => node.appliedIndex >= probeIndex) &&
        cluster.unsettled().length === 0
      ) {
        return;
      }
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
  if (behind.length > 0) {
    throw new SimViolation(
      `tick ${cluster.now}: proposal at index ${probeIndex} was not applied on every node within ` +
        `${deadline - faultEnd} ticks after faults healed: ${behind.join(", ")}`,
    );
  }
  throw new SimViolation(
    `tick ${cluster.now}: not settled ${deadline - faultEnd} ticks after faults healed: ` +
      cluster.unsettled().join(", "),
  );
}

/**
 * catchUpTicks bounds how long the cluster may take, once faults heal, to elect a leader
 * and bring every node up to date, one round trip per message, twice over (a transfer may
 * restart once on a newer snapshot), plus elections. The work is what any host that may
 * lead holds at the heal, not only what is applied: a leader may hold a long uncommitted
 * tail (it accepts up to pendingProposalsMax proposals faster than a slow link carries
 * them), and the liveness probe commits only after it. So it counts the appends that carry
 * the longest log from the least applied member's index on, cut as RaftLog.slice cuts
 * them (entriesPerMessageMax, messageBytesMax); and the chunks of the largest snapshot a
 * lagging member may need: the leader compacts as that tail commits, a transfer restarts
 * on each newer snapshot, so the last one, holding the whole log, is the one that counts.
 */
function catchUpTicks(cluster: Cluster): number {
  const s = cluster.settings;
  const roundTrip = 2 * (s.latencyTicksMax + 1) + s.heartbeatTicks;
  let appliedMin = cluster.appliedIndexMax;
  for (const node of cluster.nodes) appliedMin = Math.min(appliedMin, node.appliedIndex);
  let snapshotBytes = 0;
  let appends = 0;
  for (const node of cluster.nodes) {
    snapshotBytes = Math.max(snapshotBytes, node.disk.snapshot?.meta.bytes ?? 0);
    const raft = node.raft;
    if (raft === undefined) continue;
    const log = raft.log;
    // The snapshot this host would take at the end of its log: its state machine, the
    // commands after it, and its fence table there (as maybeSnapshot encodes it).
    const state = node.stateMachine.slice();
    for (let index = node.appliedIndex + 1; index <= log.lastIndex; index++) {
      const entry = log.entry(index);
      if (entry?.kind === "command") state.push(decoder.decode(entry.data));
    }
    const content: SnapshotContent = { fences: raft.fenceTableAt(log.lastIndex), state };
    snapshotBytes = Math.max(snapshotBytes, encoder.encode(JSON.stringify(content)).length);
    // Appends from the least applied member's index on (what is compacted goes by snapshot).
    let count = 0;
    let entries = 0;
    let bytes = 0;
    for (let index = Math.max(appliedMin + 1, log.firstIndex); index <= log.lastIndex; index++) {
      const size = (log.entry(index)?.data.byteLength ?? 0) + 32;
      if (entries > 0 && (entries >= s.entriesPerMessageMax || bytes + size > s.messageBytesMax)) {
        count++;
        entries = 0;
        bytes = 0;
      }
      entries++;
      bytes += size;
    }
    if (entries > 0) count++;
    appends = Math.max(appends, count);
  }
  const chunks = Math.ceil(snapshotBytes / s.snapshotChunkBytes);
  return 20 * s.electionTicks + 2 * (chunks + appends) * roundTrip;
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
