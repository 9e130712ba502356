// ReadIndex (Raft thesis §6.4): linearizable reads without writing to the log. A leader
// confirms it still leads with one heartbeat round acknowledged by a majority, then answers
// every read of that round with the commit index it had when the round began. Reads wait
// for the leader's first commit of its term (before it, its commit index may not be the
// cluster's). Reads that arrive during a round wait for the next one: one round serves a
// batch. Model: etcd-io/raft's read_only.go. Raft sends the heartbeats and the answers.

import type { NodeId } from "./types.ts";

/** PendingRead is a ReadIndex request: from a follower, or (from null) issued here. */
export interface PendingRead {
  requestId: number;
  /** The follower that asked, or null for a read issued on this node. */
  from: NodeId | null;
}

/** ReadRound confirms leadership for a batch of reads with one heartbeat quorum. */
export interface ReadRound {
  context: number;
  index: number;
  reads: PendingRead[];
  acks: Set<NodeId>;
}

/** ReadOnly holds a leader's reads: waiting for its first commit, queued, in a round. */
export class ReadOnly {
  /** Reads waiting for the leader to commit its first entry of the term. */
  #beforeCommit: PendingRead[] = [];
  /** Reads waiting for the next heartbeat round. */
  #queued: PendingRead[] = [];
  #round: ReadRound | undefined = undefined;
  #context = 0;

  /** round is the heartbeat round in progress, if any. */
  get round(): ReadRound | undefined {
    return this.#round;
  }

  /** waitForCommit holds a read until the leader's term has a committed entry. */
  waitForCommit(read: PendingRead): void {
    this.#beforeCommit.push(read);
  }

  /** takeWaitingForCommit returns (and forgets) the reads held for the first commit. */
  takeWaitingForCommit(): PendingRead[] {
    const reads = this.#beforeCommit;
    this.#beforeCommit = [];
    return reads;
  }

  /** queue adds a read for the next round; true when no round runs (start one). */
  queue(read: PendingRead): boolean {
    this.#queued.push(read);
    return this.#round === undefined;
  }

  /** startRound opens a round at commit index `index` for the queued reads. */
  startRound(index: number, self: NodeId): ReadRound {
    this.#context += 1;
    this.#round = { context: this.#context, index, reads: this.#queued, acks: new Set([self]) };
    this.#queued = [];
    return this.#round;
  }

  /**
   * finishRound ends the round once `quorum` acknowledged it; returns its reads and index
   * (undefined while it waits), and whether reads queued meanwhile need a new round.
   */
  finishRound(quorum: number): { round: ReadRound; next: boolean } | undefined {
    const round = this.#round;
    if (round === undefined || round.acks.size < quorum) return undefined;
    this.#round = undefined;
    return { round, next: this.#queued.length > 0 };
  }

  /** takeAll returns (and forgets) every read: the leader stepped down or was fenced. */
  takeAll(): PendingRead[] {
    const reads = [...this.#beforeCommit, ...(this.#round?.reads ?? []), ...this.#queued];
    this.reset();
    return reads;
  }

  /** reset forgets every read and round (a new leadership starts clean). */
  reset(): void {
    this.#beforeCommit = [];
    this.#queued = [];
    this.#round = undefined;
  }
}
