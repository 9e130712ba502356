// Raft: the consensus core. Pure and synchronous: messages and ticks in, a Ready batch
// out. Time (ticks) and randomness (config.random) come from outside, so the simulator
// runs this exact code deterministically. Model: etcd-io/raft's raft.go and RawNode.
//
// Features: pre-vote (§9.6), check-quorum with leader lease, pipelined replication with a
// bounded in-flight window, fast backtracking, commit only in the leader's own term
// (§5.4.2), leadership transfer (§3.10), ReadIndex (§6.4) batched into heartbeat rounds,
// snapshots with trailing-entry compaction and chunked InstallSnapshot (§7).

import { assert, unreachable } from "../lib/assert.ts";
import type { RaftConfig } from "./config.ts";
import type { FenceTable } from "./fences.ts";
import {
  fenceToPropose,
  type HelloState,
  Incarnations,
  type Refusal,
  rosterToPropose,
} from "./incarnations.ts";
import { RaftLog } from "./log.ts";
import { type PendingRead, ReadOnly } from "./read_only.ts";
import { Progress } from "./progress.ts";
import { committedIndex, quorumSize } from "./quorum.ts";
import type {
  AppendEntries,
  AppendEntriesResponse,
  Entry,
  EntryKind,
  HardState,
  Heartbeat,
  HeartbeatResponse,
  InstallSnapshot,
  InstallSnapshotResponse,
  Message,
  NodeId,
  ProposeResult,
  ReadIndexRequest,
  ReadIndexResponse,
  ReadState,
  Ready,
  RequestVote,
  RequestVoteResponse,
  RestoredState,
  Role,
  Sender,
  SnapshotChunkToPersist,
  SnapshotMeta,
  TimeoutNow,
  TransferResult,
} from "./types.ts";

export interface RaftStatus {
  id: NodeId;
  role: Role;
  term: number;
  leader: NodeId | null;
  votedFor: NodeId | null;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  lastTerm: number;
  firstIndex: number;
  logBytes: number;
  transferee: NodeId | null;
  recovering: boolean;
  fenced: string | null;
  progress: Record<
    NodeId,
    {
      matchIndex: number;
      nextIndex: number;
      state: string;
      recentActive: boolean;
      incarnation: string | null;
      recovering: boolean;
      counted: boolean;
    }
  >;
}

export class Raft {
  readonly id: NodeId;
  readonly members: readonly NodeId[];
  readonly peers: readonly NodeId[];
  readonly #config: RaftConfig;

  // Raft's state is read-only outside the core: only its own rules move it.
  #role: Role = "follower";
  #term = 0;
  #votedFor: NodeId | null = null;
  #leader: NodeId | null = null;
  readonly log: RaftLog;

  #progress = new Map<NodeId, Progress>();
  #votes = new Map<NodeId, boolean>();
  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedElectionTicks = 0;
  #transferee: NodeId | null = null;
  #transferElapsed = 0;
  /** The leader has appended entries: send appends in the next ready(). */
  #broadcastPending = false;
  /**
   * The leader moved commit and no append has carried it yet: the next tick sends one.
   * Commit rides on the next append otherwise, which under load comes first; followers
   * need it only to apply (reads confirm commit with their own round), so it is not
   * worth two socket writes per client write at low load.
   */
  #commitPending = false;

  #messages: Message[] = [];
  #readStates: ReadState[] = [];
  /** A leader's ReadIndex reads and heartbeat rounds (read_only.ts). */
  readonly #readOnly = new ReadOnly();

  #persistedHardState: HardState;
  readonly incarnation: string;
  /** The identity rules (R0-R8) over this log's fence table, and the high-water table. */
  readonly incarnations: Incarnations;
  /** A replacement catching up: never votes or campaigns; its acks do not count (R3). */
  #recovering: boolean;
  /** Why this incarnation is fenced (R7), or null. A fenced node never acts again. */
  #fenced: string | null = null;
  #becameNormal = false;
  /** The sender of the message being stepped (for vote counting). */
  #lastSender: Sender | undefined = undefined;
  /** Follower: highest index verified to match the current leader (this term, this leader). */
  #matchedThisTerm = 0;
  /** Leader: followers seen to have lost acknowledged entries, for the node to refuse. */
  #rolledBack: NodeId[] = [];
  #snapshotChunk: SnapshotChunkToPersist | undefined = undefined;
  #installSnapshot: SnapshotMeta | undefined = undefined;
  /** Offset of the incoming snapshot staged so far (follower side). */
  #incoming: { meta: SnapshotMeta; offset: number } | undefined = undefined;

  constructor(config: RaftConfig, restored: RestoredState) {
    assert(config.members.includes(config.id), "members must include this node");
    assert(
      config.heartbeatTicks > 0 && config.heartbeatTicks < config.electionTicks,
      "heartbeat must be shorter than election timeout",
    );
    this.#config = config;
    this.id = config.id;
    this.members = config.members.slice();
    this.peers = config.members.filter((member) => member !== config.id);
    this.log = RaftLog.restore(restored);
    this.incarnations = new Incarnations(() => this.log.fences, config.unsafe ?? {});
    this.#term = restored.hardState.term;
    this.#votedFor = restored.hardState.votedFor;
    this.#persistedHardState = { ...restored.hardState, commitIndex: this.log.commitIndex };
    this.incarnation = config.incarnation ?? "";
    this.#recovering = config.recovering ?? false;
    this.#resetElectionTimer();
    this.#checkOwnFence();
  }

  get role(): Role {
    return this.#role;
  }

  get term(): number {
    return this.#term;
  }

  get votedFor(): NodeId | null {
    return this.#votedFor;
  }

  get leader(): NodeId | null {
    return this.#leader;
  }

  /** recovering: a replacement catching up, not yet fenced in (R3). */
  get recovering(): boolean {
    return this.#recovering;
  }

  /** fenced: why this incarnation is fenced (R7), or null. */
  get fenced(): string | null {
    return this.#fenced;
  }

  get commitIndex(): number {
    return this.log.commitIndex;
  }

  get lastIndex(): number {
    return this.log.lastIndex;
  }

  // ---- Inputs ---------------------------------------------------------------------------

  /** tick advances logical time by one tick. */
  tick(): void {
    if (this.role === "leader") this.#tickLeader();
    else this.#tickElection();
  }

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.recovering || this.fenced !== null) return; // R3, R7: never campaign
    if (this.#electionElapsed >= this.#randomizedElectionTicks) {
      this.#electionElapsed = 0;
      this.#onElectionTimeout();
    }
  }

  #tickLeader(): void {
    this.#heartbeatElapsed++;
    const perTick = this.#config.snapshotBytesPerTick ?? 0;
    if (perTick > 0) {
      for (const [peer, progress] of this.#progress) {
        if (progress.state !== "snapshot") continue;
        // The bucket holds at most one chunk plus one tick's worth: bounded bursts.
        const burst = this.#config.snapshotChunkBytes + perTick;
        progress.snapshotTokens = Math.min(progress.snapshotTokens + perTick, burst);
        if (!progress.snapshotChunkSent) this.#sendSnapshotChunk(peer, progress);
      }
    }
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#config.electionTicks) {
      this.#electionElapsed = 0;
      if (this.#config.checkQuorum && !this.#quorumActive()) {
        // Reference: check-quorum (§6.2): a leader cut off from a majority steps down so
        // clients stop waiting on it and readiness turns false.
        this.#becomeFollower(this.term, null);
        return;
      }
      if (this.#transferee !== null) this.#abortTransfer();
    }
    if (this.#transferee !== null) {
      this.#transferElapsed++;
      if (this.#transferElapsed >= this.#config.electionTicks) this.#abortTransfer();
    }
    if (this.#heartbeatElapsed >= this.#config.heartbeatTicks) {
      this.#heartbeatElapsed = 0;
      this.#broadcastHeartbeat();
      this.#commitPending = false; // heartbeats carry the commit index too
    }
    if (this.#commitPending) this.#broadcastPending = true;
  }

  /**
   * step processes one message addressed to this node. `sender` is what the link knows
   * of the sending host; without it (tests) the sender is taken as an original member.
   */
  step(message: Message, sender?: Sender): void {
    assert(message.to === this.id, `message for ${message.to} delivered to ${this.id}`);
    if (sender !== undefined) this.incarnations.noteHeard(message, sender);
    if (!this.members.includes(message.from) || message.from === this.id) return;
    if (this.fenced !== null) return;
    if (sender !== undefined && !this.admits(message.from, sender)) return;

    if (message.term > this.term) {
      if (message.type === "preVote" || message.type === "requestVote") {
        // A node that heard from its leader within the election timeout ignores vote
        // requests (leader lease), unless the leader itself asked for the transfer. This
        // keeps a partitioned node that rejoins from deposing a healthy leader.
        const inLease = this.#config.checkQuorum && this.leader !== null &&
          this.#electionElapsed < this.#config.electionTicks;
        if (inLease && !message.transfer) {
          return;
        }
      }
      if (message.type === "preVote") {
        // A pre-vote never changes our term.
      } else if (message.type === "preVoteResponse" && message.granted) {
        // Granted pre-votes carry the future term; ours changes only when we campaign.
      } else {
        const leader = message.type === "appendEntries" || message.type === "heartbeat" ||
            message.type === "installSnapshot"
          ? message.from
          : null;
        this.#becomeFollower(message.term, leader);
      }
    } else if (message.term < this.term) {
      if (message.type === "appendEntries" || message.type === "heartbeat") {
        // A stale leader (e.g. rejoining after a partition) learns our term and steps down.
        this.#send<AppendEntriesResponse>({
          type: "appendEntriesResponse",
          term: this.term,
          from: this.id,
          to: message.from,
          success: false,
          matchIndex: 0,
          rejectHintIndex: 0,
          rejectHintTerm: 0,
        });
      } else if (message.type === "preVote") {
        this.#send<RequestVoteResponse>({
          type: "preVoteResponse",
          term: this.term,
          from: this.id,
          to: message.from,
          granted: false,
        });
      }
      return;
    }
    this.#noteSender(message.from, sender);
    this.#lastSender = sender;

    switch (message.type) {
      case "preVote":
      case "requestVote":
        this.#onRequestVote(message);
        return;
      case "preVoteResponse":
      case "requestVoteResponse":
        this.#onRequestVoteResponse(message);
        return;
      case "appendEntries":
        this.#onAppendEntries(message);
        return;
      case "appendEntriesResponse":
        this.#onAppendEntriesResponse(message);
        return;
      case "heartbeat":
        this.#onHeartbeat(message);
        return;
      case "heartbeatResponse":
        this.#onHeartbeatResponse(message);
        return;
      case "installSnapshot":
        this.#onInstallSnapshot(message);
        return;
      case "installSnapshotResponse":
        this.#onInstallSnapshotResponse(message);
        return;
      case "timeoutNow":
        this.#onTimeoutNow(message);
        return;
      case "readIndex":
        this.#onReadIndex(message);
        return;
      case "readIndexResponse":
        this.#onReadIndexResponse(message);
        return;
      default:
        unreachable(message);
    }
  }

  /** admits decides whether a host may speak for a member (R7): Incarnations.admits. */
  admits(name: NodeId, sender: Sender): boolean {
    return this.incarnations.admits(name, sender);
  }

  /** counts: whether a follower's acks and votes count (R3, R5): Incarnations.counts. */
  #counts(name: NodeId, incarnation: string | null, recovering: boolean): boolean {
    return this.incarnations.counts(name, incarnation, recovering, this.log.commitIndex);
  }

  /** currentIncarnation is the member's incarnation in the fence table, if it names one. */
  currentIncarnation(name: NodeId): string | undefined {
    return this.log.fences.current(name)?.incarnation;
  }

  /** fencedOut says why a host must be refused at the handshake (R7), or null. */
  fencedOut(name: NodeId, sender: Sender): string | null {
    return this.incarnations.fencedOut(name, sender, this.log.commitIndex);
  }

  /**
   * judgePeer judges a handshaking host: fenced out by committed fences (R7), or rolled
   * back (below the high-water table); null admits it.
   */
  judgePeer(hello: HelloState): Refusal | null {
    return this.incarnations.judgeHello(hello, this.log.commitIndex);
  }

  /** takeRolledBack returns (and forgets) followers seen to have lost acknowledged entries. */
  takeRolledBack(): NodeId[] {
    const names = this.#rolledBack;
    this.#rolledBack = [];
    return names;
  }

  /** restoreFences replaces the incarnation table after a snapshot is installed. */
  restoreFences(table: FenceTable | undefined): void {
    this.log.fences.resetBase(table);
    this.#checkOwnFence();
  }

  /** fenceTableAt returns the incarnation table as of index (for snapshots). */
  fenceTableAt(index: number): FenceTable {
    return this.log.fences.tableAt(index);
  }

  /** markFenced stops this node for good: a peer said its incarnation is superseded. */
  markFenced(reason: string): void {
    if (this.fenced !== null) return;
    this.#fenced = reason;
    if (this.role === "leader") this.#failPendingReads();
    this.#role = "follower";
    this.#leader = null;
  }

  /** bootstrapNormal ends recovering for a founding member of a brand-new cluster (R1). */
  bootstrapNormal(): void {
    assert(this.log.lastIndex === 0 && this.term === 0, "only an empty node bootstraps");
    this.#recovering = false;
  }

  #checkOwnFence(): void {
    const current = this.log.fences.current(this.id);
    if (
      current !== undefined && this.incarnation !== "" &&
      current.incarnation !== this.incarnation &&
      current.index <= this.log.commitIndex &&
      (!this.recovering || this.log.fences.isSuperseded(this.id, this.incarnation))
    ) {
      this.markFenced(
        `incarnation ${this.incarnation} was replaced by ${current.incarnation} at index ${current.index}`,
      );
    }
  }

  /**
   * maybeBecomeNormal ends recovering (R6) once this host's own fence is committed and
   * durable here. In the same write it adopts the current leader's vote for the current
   * term (term >= the fence's), so the vote the wiped host may have cast in this term
   * cannot be cast again.
   */
  #maybeBecomeNormal(): void {
    if (!this.recovering || this.leader === null) return;
    const current = this.log.fences.current(this.id);
    if (current === undefined || current.incarnation !== this.incarnation) return;
    if (current.index > this.log.commitIndex || current.index > this.log.stableIndex) return;
    if (this.votedFor === null) this.#votedFor = this.leader;
    this.#recovering = false;
    this.#becameNormal = true;
  }

  /** The leader appends a fence for a replacement it has heard from (R4), one at a time (R8). */
  #maybeFence(name: NodeId, sender: Sender): void {
    if (this.role !== "leader") return;
    const fence = fenceToPropose(this.log.fences, {
      name,
      sender,
      commitIndex: this.log.commitIndex,
      previousIncarnation: this.#progress.get(name)?.previousIncarnation ?? null,
      transferring: this.#transferee !== null,
    });
    if (fence !== undefined) this.#appendEntry("fence", fence);
  }

  /** #noteSender tracks which host speaks for a follower; a new one resets its progress (R4). */
  #noteSender(name: NodeId, sender: Sender | undefined): void {
    if (this.role !== "leader" || sender === undefined) return;
    const progress = this.#progress.get(name);
    if (progress === undefined) return;
    if (progress.incarnation !== null && progress.incarnation !== sender.incarnation) {
      progress.reset(this.log.lastIndex + 1, sender.incarnation, sender.recovering);
    } else {
      progress.incarnation = sender.incarnation;
      progress.recovering = sender.recovering;
    }
    this.#maybeFence(name, sender);
    this.#maybeRoster();
  }

  /** maybeRoster: a leader records the founders' incarnations (rosterToPropose). */
  #maybeRoster(): void {
    if (this.role !== "leader") return;
    const roster = rosterToPropose(this.log.fences, {
      self: { name: this.id, incarnation: this.incarnation, recovering: this.recovering },
      peers: this.#progress,
      commitIndex: this.log.commitIndex,
      transferring: this.#transferee !== null,
    });
    if (roster !== undefined) this.#appendEntry("fence", roster);
  }

  /** propose appends a command to the leader's log. */
  propose(data: Uint8Array): ProposeResult {
    return this.#propose("command", data);
  }

  /** proposeEntry appends an entry of any kind (the replacement protocol's fences). */
  proposeEntry(kind: EntryKind, data: Uint8Array): ProposeResult {
    return this.#propose(kind, data);
  }

  #propose(kind: EntryKind, data: Uint8Array): ProposeResult {
    if (this.role !== "leader" || this.fenced !== null) {
      return { ok: false, reason: "not-leader", leader: this.leader };
    }
    if (this.#transferee !== null) {
      return { ok: false, reason: "transferring", leader: this.leader };
    }
    if (this.log.lastIndex - this.log.commitIndex >= this.#config.pendingProposalsMax) {
      return { ok: false, reason: "too-many-pending", leader: this.id };
    }
    const index = this.#appendEntry(kind, data);
    return { ok: true, index, term: this.term };
  }

  #appendEntry(kind: EntryKind, data: Uint8Array): number {
    const index = this.log.lastIndex + 1;
    this.log.append({ index, term: this.term, kind, data });
    this.#broadcastPending = true;
    return index;
  }

  /**
   * readIndex asks for a linearizable read position. The answer arrives as a ReadState
   * with the same requestId; index 0 means refused (retry, or ask the leader).
   */
  readIndex(requestId: number): void {
    if (this.role === "leader") {
      this.#leaderRead({ requestId, from: null });
      return;
    }
    if (this.leader === null) {
      this.#readStates.push({ requestId, index: 0 });
      return;
    }
    this.#send<ReadIndexRequest>({
      type: "readIndex",
      term: this.term,
      from: this.id,
      to: this.leader,
      requestId,
    });
  }

  /** transferLeadership hands leadership to `to` once it has caught up (§3.10). */
  transferLeadership(to: NodeId): TransferResult {
    if (this.role !== "leader") return { ok: false, reason: "not-leader", leader: this.leader };
    if (to === this.id) return { ok: false, reason: "already-leader", leader: this.id };
    const progress = this.#progress.get(to);
    if (progress === undefined) return { ok: false, reason: "unknown-member", leader: this.id };
    // Not to a replacement still recovering. (Not heard from yet in this term is fine:
    // timeoutNow goes out only once it has caught up, i.e. answered.)
    if (
      progress.incarnation !== null && !this.#counts(to, progress.incarnation, progress.recovering)
    ) {
      return { ok: false, reason: "not-voter", leader: this.id };
    }
    this.#transferee = to;
    this.#transferElapsed = 0;
    if (progress.matchIndex === this.log.lastIndex) this.#sendTimeoutNow(to);
    else this.#sendAppend(to, true);
    return { ok: true };
  }

  /** peerDown is a hint that the link to a peer dropped (its process may be gone). */
  peerDown(name: NodeId): void {
    if (this.role !== "leader" && name === this.leader) {
      // Our leader's connection reset (its process is likely gone): drop the lease so
      // this node grants pre-votes, and campaign within half the jitter rather than wait
      // out an election timeout. Pre-vote keeps a wrong hint from disturbing a leader
      // that is fine: the others still hear it and refuse.
      this.#electionElapsed = this.#config.electionTicks;
      const window = Math.max(1, Math.floor(this.#electionJitterTicks / 2));
      this.#randomizedElectionTicks = this.#config.electionTicks + 1 +
        Math.floor(this.#config.random() * window);
    }
  }

  /**
   * compact tells the core that a snapshot through meta.index is durable. Entries before
   * meta.index - trailingEntries are dropped from memory; the node drops them on disk.
   * Returns the new compaction point.
   */
  compact(meta: SnapshotMeta, trailingEntries = 0): number {
    assert(meta.index <= this.log.appliedIndex, "snapshot must not be ahead of applied state");
    const point = Math.max(meta.index - trailingEntries, this.log.offsetIndex);
    this.log.compactTo(Math.min(point, this.log.stableIndex));
    return this.log.offsetIndex;
  }

  // ---- Ready ----------------------------------------------------------------------------

  hasReady(): boolean {
    return this.#messages.length > 0 || this.#readStates.length > 0 ||
      this.#broadcastPending || this.log.handedIndex < this.log.lastIndex ||
      this.log.appliedIndex < this.#applyLimit() || this.#hardStateChanged() ||
      this.#becameNormal ||
      this.#readyToBecomeNormal() ||
      this.#snapshotChunk !== undefined || this.#installSnapshot !== undefined;
  }

  ready(): Ready {
    this.#maybeBecomeNormal();
    this.#checkOwnFence();
    if (this.#broadcastPending) {
      this.#broadcastPending = false;
      this.#commitPending = false;
      if (this.role === "leader") this.#broadcastAppend();
    }
    const hardState = this.#hardState();
    const committedEntries: Entry[] = [];
    const applyTo = this.#applyLimit();
    for (let index = this.log.appliedIndex + 1; index <= applyTo; index++) {
      committedEntries.push(this.log.entry(index)!);
    }
    const ready: Ready = {
      hardState: this.#hardStateChanged() ||
          (this.log.handedIndex < this.log.lastIndex &&
            hardState.commitIndex !== this.#persistedHardState.commitIndex)
        ? hardState
        : undefined,
      entries: this.log.unhandedEntries(),
      snapshotChunk: this.#snapshotChunk,
      installSnapshot: this.#installSnapshot,
      messages: this.#messages,
      committedEntries,
      readStates: this.#readStates,
      becameNormal: this.#becameNormal,
    };
    this.#becameNormal = false;
    this.#messages = [];
    this.#readStates = [];
    this.#snapshotChunk = undefined;
    this.#installSnapshot = undefined;
    if (ready.hardState !== undefined) this.#persistedHardState = ready.hardState;
    if (committedEntries.length > 0) this.log.appliedIndex = applyTo;
    this.log.handedIndex = this.log.lastIndex;
    return ready;
  }

  /**
   * applyLimit is the highest index the node may apply. With synchronous storage the
   * node persists a Ready before applying it, so entries in the Ready count; with
   * asyncStorage only entries it has reported durable do (persisted).
   */
  #applyLimit(): number {
    const durable = this.#config.asyncStorage === true ? this.log.stableIndex : this.log.lastIndex;
    return Math.min(this.log.commitIndex, durable);
  }

  /**
   * advance acknowledges that a Ready was sent and applied and, with synchronous storage,
   * persisted. With asyncStorage the node reports durability later with persisted().
   */
  advance(ready: Ready): void {
    if (this.#config.asyncStorage === true) return;
    const last = ready.entries[ready.entries.length - 1];
    if (last !== undefined) this.persisted(last.index, last.term);
  }

  /**
   * persisted reports that the log through (index, term) is durable on this node's disk.
   * A report for an entry that was since overwritten (its term differs) is ignored: the
   * newer entry is reported by its own write.
   */
  persisted(index: number, term: number): void {
    if (index <= this.log.stableIndex || this.log.termAt(index) !== term) return;
    const stableBefore = this.log.stableIndex;
    this.log.stableIndex = Math.min(index, this.log.handedIndex);
    if (this.role === "leader") {
      this.#maybeCommit();
      // Commit held back by this leader's own sync (sentCommitIndex) can go out now.
      if (this.log.commitIndex > stableBefore) this.#commitPending = true;
    }
  }

  /**
   * sentCommitIndex is the commit index a leader tells followers: never above what it holds
   * durably itself, so what it says is a promise about its own disk too. Peers remember it
   * (Incarnations.noteHeard): a leader restored from an old copy of its disk in the same
   * term comes back below it and is refused, as a follower below what it acknowledged is.
   */
  #sentCommitIndex(): number {
    return Math.min(this.log.commitIndex, this.log.stableIndex);
  }

  // ---- Elections ------------------------------------------------------------------------

  #onElectionTimeout(): void {
    if (this.#config.preVote) this.#campaign("preVote", false);
    else this.#campaign("requestVote", false);
  }

  #campaign(kind: "preVote" | "requestVote", transfer: boolean): void {
    let term: number;
    if (kind === "preVote") {
      this.#role = "preCandidate";
      this.#leader = null;
      term = this.term + 1;
    } else {
      this.#becomeCandidate();
      term = this.term;
    }
    this.#votes = new Map([[this.id, true]]);
    this.#resetElectionTimer();
    if (this.#tallyVotes(kind)) return;
    for (const peer of this.peers) {
      this.#send<RequestVote>({
        type: kind,
        term,
        from: this.id,
        to: peer,
        lastLogIndex: this.log.lastIndex,
        lastLogTerm: this.log.lastTerm,
        transfer,
      });
    }
  }

  /** tallyVotes acts on a decided election; true if it was decided. */
  #tallyVotes(kind: "preVote" | "requestVote"): boolean {
    let granted = 0;
    let rejected = 0;
    for (const vote of this.#votes.values()) vote ? granted++ : rejected++;
    const quorum = quorumSize(this.members.length);
    if (granted >= quorum) {
      if (kind === "preVote") this.#campaign("requestVote", false);
      else this.#becomeLeader();
      return true;
    }
    if (rejected >= quorum) {
      this.#becomeFollower(this.term, null);
      return true;
    }
    return false;
  }

  #onRequestVote(message: RequestVote): void {
    const isPreVote = message.type === "preVote";
    // Reference: §5.2 and §5.4.1: one vote per term, only for an up-to-date log.
    const canVote = this.votedFor === message.from ||
      (this.votedFor === null && this.leader === null) ||
      (isPreVote && message.term > this.term);
    // R3: a replacement still catching up never votes, not even a pre-vote.
    const granted = canVote &&
      (!this.recovering || this.#config.unsafe?.recoveringVotes === true) &&
      this.log.isUpToDate(message.lastLogIndex, message.lastLogTerm);
    if (granted && !isPreVote) {
      this.#votedFor = message.from;
      this.#electionElapsed = 0;
    }
    this.#send<RequestVoteResponse>({
      type: isPreVote ? "preVoteResponse" : "requestVoteResponse",
      // A granted pre-vote answers in the campaign's term so the candidate counts it.
      term: granted && isPreVote ? message.term : this.term,
      from: this.id,
      to: message.from,
      granted,
    });
  }

  #onRequestVoteResponse(message: RequestVoteResponse): void {
    const kind = message.type === "preVoteResponse" ? "preVote" : "requestVote";
    const expected = kind === "preVote" ? "preCandidate" : "candidate";
    if (this.role !== expected) return;
    if (kind === "preVote" && message.term !== this.term + 1 && message.granted) return;
    const sender = this.#lastSender;
    const counted = sender === undefined
      ? this.#counts(message.from, null, false)
      : this.#counts(message.from, sender.incarnation, sender.recovering);
    if (!counted && message.granted) return;
    if (!this.#votes.has(message.from)) this.#votes.set(message.from, message.granted);
    this.#tallyVotes(kind);
  }

  #onTimeoutNow(_message: TimeoutNow): void {
    if (this.role === "leader" || this.recovering) return;
    // The leader chose us: campaign now, past pre-vote and past voters' leases.
    this.#campaign("requestVote", true);
  }

  #becomeFollower(term: number, leader: NodeId | null): void {
    const wasLeader = this.role === "leader";
    if (term !== this.term || leader !== this.leader) this.#matchedThisTerm = 0;
    if (term !== this.term) {
      this.#term = term;
      this.#votedFor = null;
    }
    this.#role = "follower";
    this.#leader = leader;
    this.#transferee = null;
    // With no leader known an election is under way (this node's campaign was rejected,
    // another's raised the term, or it stepped down): wait out the wide window.
    this.#resetElectionTimer(leader === null);
    if (wasLeader) this.#failPendingReads();
  }

  #becomeCandidate(): void {
    this.#term += 1;
    this.#votedFor = this.id;
    this.#role = "candidate";
    this.#leader = null;
  }

  #becomeLeader(): void {
    assert(this.role === "candidate", "only a candidate becomes leader");
    this.#role = "leader";
    this.#leader = this.id;
    this.#transferee = null;
    this.#heartbeatElapsed = 0;
    this.#electionElapsed = 0;
    this.#progress = new Map();
    for (const peer of this.peers) {
      const progress = new Progress(this.log.lastIndex + 1);
      progress.recentActive = true;
      this.#progress.set(peer, progress);
    }
    this.#readOnly.reset();
    // A leader commits entries of earlier terms only by committing one of its own (§5.4.2).
    this.#appendEntry("noop", new Uint8Array(0));
  }

  #readyToBecomeNormal(): boolean {
    if (!this.recovering || this.leader === null) return false;
    const current = this.log.fences.current(this.id);
    return current !== undefined && current.incarnation === this.incarnation &&
      current.index <= this.log.commitIndex && current.index <= this.log.stableIndex;
  }

  #resetElectionTimer(electing = false): void {
    this.#electionElapsed = 0;
    // While an election is under way, every timer waits out a wide window before the next
    // campaign, so a narrow configured jitter cannot make the same two collide again and
    // again: a campaign that fails undecided or rejected (two candidates split the vote,
    // both rejected at once by each other and by members that may not vote), and members
    // whose term a candidate raised at the same moment (a candidate with a stale log, with
    // pre-vote off, does that to all of them together, round after round). Only the first
    // campaign after a known leader falls silent keeps the narrow one.
    const campaigning = electing || this.role === "candidate" || this.role === "preCandidate";
    const jitter = campaigning ? this.#config.electionTicks : this.#electionJitterTicks;
    this.#randomizedElectionTicks = this.#config.electionTicks +
      Math.floor(this.#config.random() * Math.max(1, jitter));
  }

  get #electionJitterTicks(): number {
    return Math.max(1, this.#config.electionJitterTicks ?? this.#config.electionTicks);
  }

  #quorumActive(): boolean {
    let active = 1;
    for (const [peer, progress] of this.#progress) {
      if (progress.recentActive && this.#counts(peer, progress.incarnation, progress.recovering)) {
        active++;
      }
      progress.recentActive = false;
    }
    return active >= quorumSize(this.members.length);
  }

  // ---- Replication: follower side --------------------------------------------------------

  #hearFromLeader(from: NodeId): void {
    assert(this.role !== "leader", `two leaders in term ${this.term}: ${this.id} and ${from}`);
    if (this.role !== "follower") {
      this.#becomeFollower(this.term, from);
    } else if (this.leader !== from) {
      // A leader is known again: back to the narrow window to notice if it falls silent.
      this.#resetElectionTimer();
    }
    if (this.leader !== from) this.#matchedThisTerm = 0;
    this.#leader = from;
    this.#electionElapsed = 0;
  }

  #onAppendEntries(message: AppendEntries): void {
    this.#hearFromLeader(message.from);
    const reply = (fields: Partial<AppendEntriesResponse>): void => {
      this.#send<AppendEntriesResponse>({
        type: "appendEntriesResponse",
        term: this.term,
        from: this.id,
        to: message.from,
        success: true,
        matchIndex: 0,
        rejectHintIndex: 0,
        rejectHintTerm: 0,
        ...fields,
      });
    };
    if (message.prevLogIndex < this.log.commitIndex) {
      // Everything up to our commit index matches the leader (Log Matching).
      const lastNew = message.prevLogIndex + message.entries.length;
      if (lastNew > this.log.commitIndex) {
        const skip = this.log.commitIndex - message.prevLogIndex;
        this.log.appendFromLeader(message.entries.slice(skip));
        this.log.commitTo(Math.min(message.commitIndex, lastNew));
        this.#matchedThisTerm = Math.max(this.#matchedThisTerm, lastNew);
        reply({ matchIndex: lastNew });
      } else {
        reply({ matchIndex: this.log.commitIndex });
      }
      return;
    }
    if (this.log.matchTerm(message.prevLogIndex, message.prevLogTerm)) {
      this.log.appendFromLeader(message.entries);
      const lastNew = message.prevLogIndex + message.entries.length;
      this.log.commitTo(Math.min(message.commitIndex, lastNew));
      this.#matchedThisTerm = Math.max(this.#matchedThisTerm, lastNew);
      reply({ matchIndex: lastNew });
      return;
    }
    // Reference: §5.3 with fast backtracking: point the leader at the last index whose
    // term is no greater than the leader's term at prevLogIndex.
    const hintIndex = this.log.findConflictByTerm(
      Math.min(message.prevLogIndex, this.log.lastIndex),
      message.prevLogTerm,
    );
    reply({
      success: false,
      matchIndex: message.prevLogIndex,
      rejectHintIndex: hintIndex,
      rejectHintTerm: this.log.termAt(hintIndex) ?? 0,
    });
  }

  #onHeartbeat(message: Heartbeat): void {
    this.#hearFromLeader(message.from);
    // Commit only what this follower has verified to match this leader: the leader's
    // view of our match may be a previous host's under our name, or from before a restart.
    this.log.commitTo(Math.min(message.commitIndex, this.#verifiedIndex()));
    this.#send<HeartbeatResponse>({
      type: "heartbeatResponse",
      term: this.term,
      from: this.id,
      to: message.from,
      context: message.context,
      // What we verified, not all we hold: below the leader's match, it probes again.
      lastIndex: this.#verifiedIndex(),
    });
  }

  /** verifiedIndex: the highest index known to match the current leader's log. */
  #verifiedIndex(): number {
    return Math.max(this.#matchedThisTerm, this.log.commitIndex);
  }

  #onInstallSnapshot(message: InstallSnapshot): void {
    this.#hearFromLeader(message.from);
    const meta = message.snapshot;
    const reply = (offset: number, success: boolean, done: boolean): void => {
      this.#send<InstallSnapshotResponse>({
        type: "installSnapshotResponse",
        term: this.term,
        from: this.id,
        to: message.from,
        snapshotIndex: meta.index,
        offset,
        success,
        done,
      });
    };
    if (this.log.matchTerm(meta.index, meta.term) || meta.index <= this.log.commitIndex) {
      // We already hold the log through the snapshot point: no need to install.
      this.#incoming = undefined;
      this.#matchedThisTerm = Math.max(this.#matchedThisTerm, meta.index);
      reply(meta.bytes, true, true);
      return;
    }
    if (message.offset === 0) {
      this.#incoming = { meta, offset: 0 };
    }
    const incoming = this.#incoming;
    if (
      incoming === undefined || incoming.meta.index !== meta.index ||
      incoming.meta.term !== meta.term || incoming.offset !== message.offset ||
      this.#snapshotChunk !== undefined
    ) {
      reply(incoming?.meta.index === meta.index ? incoming.offset : 0, false, false);
      return;
    }
    incoming.offset += message.data.byteLength;
    assert(incoming.offset <= meta.bytes, "snapshot chunk beyond the snapshot's size");
    const done = message.done && incoming.offset === meta.bytes;
    this.#snapshotChunk = { snapshot: meta, offset: message.offset, data: message.data, done };
    if (done) {
      this.#incoming = undefined;
      this.#installSnapshot = meta;
      this.log.resetToSnapshot(meta.index, meta.term);
      this.#matchedThisTerm = meta.index;
    }
    reply(incoming.offset, true, done);
  }

  #onReadIndexResponse(message: ReadIndexResponse): void {
    this.#readStates.push({ requestId: message.requestId, index: message.index });
  }

  // ---- Replication: leader side ----------------------------------------------------------

  #onAppendEntriesResponse(message: AppendEntriesResponse): void {
    if (this.role !== "leader") return;
    const progress = this.#progress.get(message.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    progress.respondedSinceHeartbeat = true;
    if (!message.success) {
      if (
        message.matchIndex === 0 && message.rejectHintIndex === 0 && message.rejectHintTerm === 0
      ) {
        return; // a stale-term answer; the term check already handled it
      }
      if (
        progress.matchIndex > 0 && message.matchIndex >= progress.matchIndex &&
        message.rejectHintIndex < progress.matchIndex
      ) {
        // The follower no longer holds entries it acknowledged in this term: its disk went
        // back in time (restored from a backup). Start over with it, and let the node
        // refuse the host (it rejoins as a new incarnation).
        progress.reset(this.log.lastIndex + 1, progress.incarnation ?? "", progress.recovering);
        if (!this.#rolledBack.includes(message.from)) this.#rolledBack.push(message.from);
      }
      let hint = message.rejectHintIndex;
      if (message.rejectHintTerm > 0) {
        hint = this.log.findConflictByTerm(hint, message.rejectHintTerm);
      }
      if (progress.maybeDecrease(message.matchIndex, hint)) {
        this.#sendAppend(message.from, false);
      }
      return;
    }
    const wasPaused = progress.isPaused(this.#config.inflightMessagesMax);
    if (progress.maybeUpdate(message.matchIndex)) {
      if (progress.state === "probe") progress.becomeReplicate();
      this.#maybeCommit();
      if (this.#transferee === message.from && progress.matchIndex === this.log.lastIndex) {
        this.#sendTimeoutNow(message.from);
      }
    }
    if (wasPaused || progress.nextIndex <= this.log.lastIndex) {
      this.#sendAppendsWhileOpen(message.from);
    }
  }

  #onHeartbeatResponse(message: HeartbeatResponse): void {
    if (this.role !== "leader") return;
    const progress = this.#progress.get(message.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    if (progress.state === "probe") progress.probeSent = false;
    if (
      progress.state === "replicate" && !progress.respondedSinceHeartbeat &&
      progress.inflight.length > 0
    ) {
      // No answer to any append for a whole heartbeat interval although appends are in
      // flight: an append or its answer was lost. Probe again from the match point.
      progress.becomeProbe();
    }
    if (progress.state !== "snapshot" && message.lastIndex < progress.matchIndex) {
      // The follower has not verified what we believe it matches (it restarted): probe
      // from our match point so it can, and commit again.
      progress.becomeProbe();
    }
    if (progress.matchIndex < this.log.lastIndex || message.lastIndex < this.log.lastIndex) {
      // A probe goes out even with no new entries: it is how the follower verifies.
      if (progress.state === "probe") this.#sendAppend(message.from, true);
      else this.#sendAppendsWhileOpen(message.from);
    }
    const round = this.#readOnly.round;
    if (
      round !== undefined && message.context === round.context &&
      this.#counts(message.from, progress.incarnation, progress.recovering)
    ) {
      round.acks.add(message.from);
      this.#maybeFinishReadRound();
    }
  }

  #onInstallSnapshotResponse(message: InstallSnapshotResponse): void {
    if (this.role !== "leader") return;
    const progress = this.#progress.get(message.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    const meta = progress.pendingSnapshot;
    if (
      progress.state !== "snapshot" || meta === undefined || meta.index !== message.snapshotIndex
    ) {
      return;
    }
    progress.respondedSinceHeartbeat = true;
    // An answer to an older chunk (a duplicate, or one overtaken by a resend) is stale:
    // acting on it would start a second chain of chunks.
    if (message.success && !message.done && message.offset <= progress.snapshotOffset) return;
    progress.snapshotChunkSent = false;
    if (message.done && message.success) {
      progress.matchIndex = Math.max(progress.matchIndex, meta.index);
      progress.becomeProbe();
      this.#maybeCommit();
      this.#sendAppend(message.from, true);
      return;
    }
    // The follower accepts only contiguous chunks; its offset is the truth (0 restarts).
    progress.snapshotOffset = message.offset;
    this.#sendSnapshotChunk(message.from, progress);
  }

  #onReadIndex(message: ReadIndexRequest): void {
    if (this.role !== "leader") {
      this.#send<ReadIndexResponse>({
        type: "readIndexResponse",
        term: this.term,
        from: this.id,
        to: message.from,
        requestId: message.requestId,
        index: 0,
      });
      return;
    }
    this.#leaderRead({ requestId: message.requestId, from: message.from });
  }

  #sendAppendsWhileOpen(to: NodeId): void {
    const progress = this.#progress.get(to)!;
    for (let i = 0; i < this.#config.inflightMessagesMax + 1; i++) {
      if (progress.isPaused(this.#config.inflightMessagesMax)) return;
      if (progress.nextIndex > this.log.lastIndex && progress.state === "replicate") return;
      if (!this.#sendAppend(to, false)) return;
      if (progress.state !== "replicate") return;
    }
  }

  #broadcastAppend(): void {
    for (const peer of this.peers) {
      const progress = this.#progress.get(peer)!;
      if (progress.isPaused(this.#config.inflightMessagesMax)) continue;
      this.#sendAppend(peer, true);
      if (progress.state === "replicate") this.#sendAppendsWhileOpen(peer);
    }
  }

  /**
   * sendAppend sends the next entries to `to` (or a snapshot chunk when they are
   * compacted). With sendIfEmpty it sends even when there are no new entries, to carry
   * the commit index. Returns whether a message was sent.
   */
  #sendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const progress = this.#progress.get(to)!;
    if (progress.isPaused(this.#config.inflightMessagesMax)) return false;
    const prevLogIndex = progress.nextIndex - 1;
    const prevLogTerm = this.log.termAt(prevLogIndex);
    if (prevLogTerm === undefined) {
      const meta = this.#config.snapshots.latest();
      assert(
        meta !== undefined && meta.index >= this.log.offsetIndex,
        "compacted log needs a snapshot",
      );
      progress.becomeSnapshot(meta);
      this.#sendSnapshotChunk(to, progress);
      return true;
    }
    const entries = progress.nextIndex <= this.log.lastIndex
      ? this.log.slice(
        progress.nextIndex,
        this.log.lastIndex,
        this.#config.entriesPerMessageMax,
        this.#config.messageBytesMax,
      )
      : [];
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.#send<AppendEntries>({
      type: "appendEntries",
      term: this.term,
      from: this.id,
      to,
      prevLogIndex,
      prevLogTerm,
      entries,
      commitIndex: this.#sentCommitIndex(),
    });
    const last = entries[entries.length - 1];
    if (last !== undefined) {
      if (progress.state === "replicate") {
        progress.inflight.push(last.index);
        progress.nextIndex = last.index + 1;
      } else {
        progress.probeSent = true;
      }
    } else if (progress.state === "probe") {
      progress.probeSent = true;
    }
    return true;
  }

  #sendSnapshotChunk(to: NodeId, progress: Progress): void {
    let meta = progress.pendingSnapshot;
    if (meta === undefined || progress.snapshotChunkSent) return;
    const latest = this.#config.snapshots.latest();
    if (latest !== undefined && latest.index !== meta.index) {
      // A newer snapshot replaced the one being sent (storage keeps only the latest):
      // start over with it.
      progress.becomeSnapshot(latest);
      meta = latest;
    }
    const length = Math.min(this.#config.snapshotChunkBytes, meta.bytes - progress.snapshotOffset);
    const perTick = this.#config.snapshotBytesPerTick ?? 0;
    if (perTick > 0) {
      if (progress.snapshotTokens < length) return; // the next tick refills and sends
      progress.snapshotTokens -= length;
    }
    const data = this.#config.snapshots.readChunk(meta.index, progress.snapshotOffset, length);
    assert(data.byteLength === length, "snapshot source returned a short chunk");
    this.#send<InstallSnapshot>({
      type: "installSnapshot",
      term: this.term,
      from: this.id,
      to,
      snapshot: meta,
      offset: progress.snapshotOffset,
      data,
      done: progress.snapshotOffset + length === meta.bytes,
    });
    progress.snapshotChunkSent = true;
  }

  #broadcastHeartbeat(): void {
    for (const peer of this.peers) {
      const progress = this.#progress.get(peer)!;
      const responded = progress.respondedSinceHeartbeat;
      progress.respondedSinceHeartbeat = false;
      if (progress.state === "snapshot" && !responded) {
        // No answer for a whole heartbeat interval: the chunk or its answer was lost.
        progress.snapshotChunkSent = false;
        this.#sendSnapshotChunk(peer, progress);
      }
      this.#send<Heartbeat>({
        type: "heartbeat",
        term: this.term,
        from: this.id,
        to: peer,
        // Only what the follower is known to hold may be committed on its side.
        commitIndex: Math.min(progress.matchIndex, this.#sentCommitIndex()),
        context: this.#readOnly.round?.context ?? 0,
      });
    }
  }

  #maybeCommit(): void {
    const matches = [this.log.stableIndex];
    for (const [peer, progress] of this.#progress) {
      matches.push(
        this.#counts(peer, progress.incarnation, progress.recovering) ? progress.matchIndex : 0,
      );
    }
    const index = committedIndex(matches);
    // Reference: §5.4.2: only entries of the current term commit by counting replicas.
    if (index > this.log.commitIndex && this.log.termAt(index) === this.term) {
      this.log.commitTo(index);
      this.#commitPending = true;
      for (const read of this.#readOnly.takeWaitingForCommit()) this.#leaderRead(read);
    }
  }

  #sendTimeoutNow(to: NodeId): void {
    this.#send<TimeoutNow>({ type: "timeoutNow", term: this.term, from: this.id, to });
  }

  #abortTransfer(): void {
    this.#transferee = null;
    this.#transferElapsed = 0;
  }

  // ---- ReadIndex ----------------------------------------------------------------------------

  #leaderRead(read: PendingRead): void {
    // Reference: §6.4: the leader must have committed an entry of its term before its
    // commit index is known to be the cluster's.
    if (this.log.termAt(this.log.commitIndex) !== this.term) {
      this.#readOnly.waitForCommit(read);
      return;
    }
    if (this.#readOnly.queue(read)) this.#startReadRound();
  }

  #startReadRound(): void {
    const round = this.#readOnly.startRound(this.log.commitIndex, this.id);
    if (this.#maybeFinishReadRound()) return;
    for (const peer of this.peers) {
      const progress = this.#progress.get(peer)!;
      this.#send<Heartbeat>({
        type: "heartbeat",
        term: this.term,
        from: this.id,
        to: peer,
        commitIndex: Math.min(progress.matchIndex, this.#sentCommitIndex()),
        context: round.context,
      });
    }
  }

  #maybeFinishReadRound(): boolean {
    const finished = this.#readOnly.finishRound(quorumSize(this.members.length));
    if (finished === undefined) return false;
    for (const read of finished.round.reads) this.#answerRead(read, finished.round.index);
    if (finished.next) this.#startReadRound();
    return true;
  }

  #answerRead(read: PendingRead, index: number): void {
    if (read.from === null) {
      this.#readStates.push({ requestId: read.requestId, index });
      return;
    }
    this.#send<ReadIndexResponse>({
      type: "readIndexResponse",
      term: this.term,
      from: this.id,
      to: read.from,
      requestId: read.requestId,
      index,
    });
  }

  #failPendingReads(): void {
    for (const read of this.#readOnly.takeAll()) this.#answerRead(read, 0);
  }

  // ---- Plumbing -------------------------------------------------------------------------

  #send<M extends Message>(message: M): void {
    this.#messages.push(message);
  }

  #hardState(): HardState {
    return { term: this.term, votedFor: this.votedFor, commitIndex: this.log.commitIndex };
  }

  /**
   * hardStateChanged: the term or the vote changed, which must be durable before any
   * message of this state goes out. The commit index alone is not worth a write (Raft
   * keeps it volatile); it is written along with entries and with term or vote changes.
   */
  #hardStateChanged(): boolean {
    const persisted = this.#persistedHardState;
    return persisted.term !== this.term || persisted.votedFor !== this.votedFor;
  }

  status(): RaftStatus {
    const progress: RaftStatus["progress"] = {};
    for (const [peer, p] of this.#progress) {
      progress[peer] = {
        matchIndex: p.matchIndex,
        nextIndex: p.nextIndex,
        state: p.state,
        recentActive: p.recentActive,
        incarnation: p.incarnation,
        recovering: p.recovering,
        counted: this.#counts(peer, p.incarnation, p.recovering),
      };
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      votedFor: this.votedFor,
      commitIndex: this.log.commitIndex,
      appliedIndex: this.log.appliedIndex,
      lastIndex: this.log.lastIndex,
      lastTerm: this.log.lastTerm,
      firstIndex: this.log.firstIndex,
      logBytes: this.log.bytes,
      transferee: this.#transferee,
      recovering: this.recovering,
      fenced: this.fenced,
      progress: this.role === "leader" ? progress : {},
    };
  }
}
