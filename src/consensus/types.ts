// Types shared by the consensus core and its adapters. Everything here is plain data:
// the core is pure and synchronous, and these values cross the wire (transport/codec.ts)
// and the disk (storage/) unchanged.

/** NodeId is a member's name from the shared config. */
export type NodeId = string;

/**
 * EntryKind says who consumes an entry:
 * - "noop": appended by a new leader to commit entries of earlier terms (Raft §5.4.2);
 * - "command": service command bytes, applied by the state machine;
 * - "fence": reserved for the replacement protocol (R4); carries {name, incarnation} JSON.
 */
export type EntryKind = "noop" | "command" | "fence";

/** Entry is one log record. Invariant: index >= 1, term >= 1. */
export interface Entry {
  index: number;
  term: number;
  kind: EntryKind;
  data: Uint8Array;
}

/** HardState is what must be durable before any message that depends on it is sent. */
export interface HardState {
  term: number;
  votedFor: NodeId | null;
  commitIndex: number;
}

/** SnapshotMeta names the log position a snapshot replaces. */
export interface SnapshotMeta {
  index: number;
  term: number;
  /** Size of the snapshot bytes. */
  bytes: number;
}

export type Role = "follower" | "preCandidate" | "candidate" | "leader";

// ---- Messages -----------------------------------------------------------------------
// Every message carries the sender's term, `from` and `to`. Handlers are named for them:
// onAppendEntries, onRequestVote, ...

interface Envelope {
  term: number;
  from: NodeId;
  to: NodeId;
}

/** A vote request. preVote messages carry the term the sender would campaign in (§9.6). */
export interface RequestVote extends Envelope {
  type: "requestVote" | "preVote";
  lastLogIndex: number;
  lastLogTerm: number;
  /** Set when campaigning after timeoutNow: voters ignore their leader lease. */
  transfer: boolean;
}

export interface RequestVoteResponse extends Envelope {
  type: "requestVoteResponse" | "preVoteResponse";
  granted: boolean;
}

export interface AppendEntries extends Envelope {
  type: "appendEntries";
  prevLogIndex: number;
  prevLogTerm: number;
  entries: Entry[];
  commitIndex: number;
}

export interface AppendEntriesResponse extends Envelope {
  type: "appendEntriesResponse";
  success: boolean;
  /**
   * On success: the follower's last index matching the leader (prevLogIndex + entries).
   * On rejection: the prevLogIndex of the rejected message.
   */
  matchIndex: number;
  /**
   * On rejection (fast backtracking): the index the leader should probe next and the
   * follower's term at that index (0 if it has none there).
   */
  rejectHintIndex: number;
  rejectHintTerm: number;
}

/** Heartbeat keeps followers quiet and confirms leadership for ReadIndex (context). */
export interface Heartbeat extends Envelope {
  type: "heartbeat";
  commitIndex: number;
  /** ReadIndex round id; 0 when none is pending. */
  context: number;
}

export interface HeartbeatResponse extends Envelope {
  type: "heartbeatResponse";
  context: number;
  /** The follower's last index, so a leader can resume replication to a lagging one. */
  lastIndex: number;
}

/** InstallSnapshot carries one chunk of the leader's latest snapshot (§7). */
export interface InstallSnapshot extends Envelope {
  type: "installSnapshot";
  snapshot: SnapshotMeta;
  offset: number;
  data: Uint8Array;
  done: boolean;
}

export interface InstallSnapshotResponse extends Envelope {
  type: "installSnapshotResponse";
  snapshotIndex: number;
  /** Bytes received so far; the leader sends the next chunk from here. */
  offset: number;
  /** False when the follower cannot continue from this offset: restart from 0. */
  success: boolean;
  done: boolean;
}

/** TimeoutNow tells the transferee to campaign at once (leadership transfer, §3.10). */
export interface TimeoutNow extends Envelope {
  type: "timeoutNow";
}

/** ReadIndexRequest: a follower asks the leader for a linearizable read position. */
export interface ReadIndexRequest extends Envelope {
  type: "readIndex";
  requestId: number;
}

export interface ReadIndexResponse extends Envelope {
  type: "readIndexResponse";
  requestId: number;
  /** 0 means rejected (no leader in this term yet, or leadership lost). */
  index: number;
}

export type Message =
  | RequestVote
  | RequestVoteResponse
  | AppendEntries
  | AppendEntriesResponse
  | Heartbeat
  | HeartbeatResponse
  | InstallSnapshot
  | InstallSnapshotResponse
  | TimeoutNow
  | ReadIndexRequest
  | ReadIndexResponse;

export type MessageType = Message["type"];

// ---- Ready ---------------------------------------------------------------------------

/** SnapshotChunkToPersist is a piece of an incoming snapshot to stage on disk. */
export interface SnapshotChunkToPersist {
  snapshot: SnapshotMeta;
  offset: number;
  data: Uint8Array;
  /** When true, the staged bytes are complete: install them (see Ready.installSnapshot). */
  done: boolean;
}

/** ReadState says: a read issued as requestId is linearizable once appliedIndex >= index. */
export interface ReadState {
  requestId: number;
  /** 0 when the read was refused (not leader, leadership unconfirmed). */
  index: number;
}

/**
 * Ready is a batch of work for the node loop, in this order:
 * 1. persist snapshotChunk (staging), then hardState and entries in one transaction;
 *    if installSnapshot is set, the staged snapshot replaces the log and the service state;
 * 2. send messages (only after step 1 is durable);
 * 3. apply committedEntries, answer readStates;
 * 4. call advance(ready).
 */
export interface Ready {
  hardState: HardState | undefined;
  /** Entries to append. entries[0].index may be <= the stored last index: truncate first. */
  entries: Entry[];
  snapshotChunk: SnapshotChunkToPersist | undefined;
  /** Set when a complete snapshot was received: restore the service from it, drop the log. */
  installSnapshot: SnapshotMeta | undefined;
  messages: Message[];
  committedEntries: Entry[];
  readStates: ReadState[];
  /**
   * Set when this replacement turns into a normal voting member (R6): persist status
   * "normal" in the same transaction as hardState (which carries the adopted vote).
   */
  becameNormal: boolean;
}

/** Sender is what the link knows of a message's sender (from its handshake). */
export interface Sender {
  incarnation: string;
  /** The sender was a replacement still catching up when it linked. */
  recovering: boolean;
}

/** SnapshotSource lets a leader read chunks of its latest durable snapshot. */
export interface SnapshotSource {
  latest(): SnapshotMeta | undefined;
  /** readChunk returns bytes [offset, offset + length) of the snapshot at meta.index. */
  readChunk(index: number, offset: number, length: number): Uint8Array;
}

/** FenceTableEntry is a member's current incarnation and the ones it superseded (fences.ts). */
export interface FenceTableEntry {
  incarnation: string;
  index: number;
  superseded: string[];
  /** True when the incarnation comes from the roster, not from a replacement's fence. */
  founding?: boolean;
}

/** FenceTable is the serializable incarnation table at some log index (kept in snapshots). */
export type FenceTable = Record<NodeId, FenceTableEntry>;

/** RestoredState is what a node read back from disk when it starts. */
export interface RestoredState {
  hardState: HardState;
  snapshot: SnapshotMeta | undefined;
  /** Entries in order and contiguous; they may start at or before the snapshot index. */
  entries: Entry[];
  /** The incarnation table as of the snapshot (fences.ts); none without a snapshot. */
  fences?: FenceTable | undefined;
}

export type ProposeResult =
  | { ok: true; index: number; term: number }
  | {
    ok: false;
    reason: "not-leader" | "transferring" | "too-many-pending";
    leader: NodeId | null;
  };

export type TransferResult =
  | { ok: true }
  | {
    ok: false;
    reason: "not-leader" | "unknown-member" | "already-leader" | "not-voter";
    leader: NodeId | null;
  };
