import type { SnapshotMeta } from "./types.ts";

/**
 * ProgressState is how a leader replicates to one follower:
 * - probe: one appendEntries at a time until the follower's match point is found;
 * - replicate: optimistic pipelining, at most inflightMessagesMax messages unacknowledged;
 * - snapshot: sending the latest snapshot in chunks, one at a time.
 */
export type ProgressState = "probe" | "replicate" | "snapshot";

/** Progress is the leader's view of one follower. Invariant: matchIndex < nextIndex. */
export class Progress {
  state: ProgressState = "probe";
  matchIndex = 0;
  nextIndex: number;
  /** In probe state: an appendEntries is out; wait for its answer or the next heartbeat. */
  probeSent = false;
  /** Last index of each unacknowledged appendEntries, in send order (replicate state). */
  inflight: number[] = [];
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** Any appendEntriesResponse since the last heartbeat (stall detection). */
  respondedSinceHeartbeat = false;
  pendingSnapshot: SnapshotMeta | undefined = undefined;
  /** Bytes of pendingSnapshot acknowledged by the follower. */
  snapshotOffset = 0;
  /** A chunk is out and unacknowledged. */
  snapshotChunkSent = false;
  /** Token bucket of the catch-up bound, in bytes (refilled every tick). */
  snapshotTokens = 0;
  /** Incarnation of the follower's host as its messages say; null until heard from. */
  incarnation: string | null = null;
  /** That host linked as a replacement still catching up. */
  recovering = false;
  /** The incarnation heard under this name before the current one, if any. */
  previousIncarnation: string | null = null;

  constructor(nextIndex: number) {
    this.nextIndex = nextIndex;
  }

  becomeProbe(): void {
    if (this.state === "snapshot" && this.pendingSnapshot !== undefined) {
      this.nextIndex = Math.max(this.matchIndex + 1, this.pendingSnapshot.index + 1);
    } else {
      this.nextIndex = this.matchIndex + 1;
    }
    this.state = "probe";
    this.probeSent = false;
    this.inflight = [];
    this.pendingSnapshot = undefined;
  }

  becomeReplicate(): void {
    this.state = "replicate";
    this.nextIndex = this.matchIndex + 1;
    this.inflight = [];
    this.probeSent = false;
  }

  /** reset forgets everything learned about the follower: a new host took its name (R4). */
  reset(nextIndex: number, incarnation: string, recovering: boolean): void {
    if (this.incarnation !== null && this.incarnation !== incarnation) {
      this.previousIncarnation = this.incarnation;
    }
    this.state = "probe";
    this.matchIndex = 0;
    this.nextIndex = nextIndex;
    this.probeSent = false;
    this.inflight = [];
    this.pendingSnapshot = undefined;
    this.snapshotChunkSent = false;
    this.incarnation = incarnation;
    this.recovering = recovering;
  }

  becomeSnapshot(meta: SnapshotMeta): void {
    this.state = "snapshot";
    this.pendingSnapshot = meta;
    this.snapshotOffset = 0;
    this.snapshotChunkSent = false;
    this.inflight = [];
  }

  /** maybeUpdate records a successful append through index; false if it is stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.matchIndex) {
      this.matchIndex = index;
      updated = true;
      this.probeSent = false;
    }
    this.nextIndex = Math.max(this.nextIndex, index + 1);
    while (this.inflight.length > 0 && this.inflight[0]! <= index) this.inflight.shift();
    return updated;
  }

  /**
   * maybeDecrease handles a rejection of the append at prevLogIndex `rejected`; hint is
   * the index the follower suggests probing. False if the rejection is stale.
   */
  maybeDecrease(rejected: number, hint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.matchIndex) return false;
      this.becomeProbe();
      return true;
    }
    if (this.nextIndex - 1 !== rejected) return false;
    this.nextIndex = Math.max(Math.min(rejected, hint + 1), this.matchIndex + 1, 1);
    this.probeSent = false;
    return true;
  }

  isPaused(inflightMax: number): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflight.length >= inflightMax;
      case "snapshot":
        return true;
    }
  }
}
