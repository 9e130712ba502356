// When a member takes its snapshot, and how the log behind it leaves the disk. The
// snapshot itself is serialized on the loop and written off it (KeelNode.snapshotInBackground);
// this room holds the schedule and the bounds.

import type { RaftStatus } from "../consensus/raft.ts";
import type { NodeId } from "../consensus/types.ts";

/**
 * A leader sending a snapshot puts off its own next one (which would restart the
 * transfer) for up to this many snapshot intervals.
 */
export const snapshotDeferralsMax = 4;

/** Log rows deleted per tick behind a snapshot: a few ms of work each time. */
export const diskCompactionRowsPerTick = 5_000;

/** Entries kept behind a snapshot so a briefly lagging follower needs no snapshot. */
export const snapshotTrailingEntries = 5000;

/**
 * SnapshotSchedule says when the next snapshot is due: every snapshot_entries applied
 * entries, each member at its own phase (its place in the shared config), so the members
 * pause for their snapshots one at a time, not together (a snapshot serializes the state
 * on the one thread). At least half an interval after the last snapshot.
 */
export class SnapshotSchedule {
  readonly #every: number;
  readonly #phase: number;

  constructor(every: number, members: readonly NodeId[], self: NodeId) {
    this.#every = every;
    const place = Math.max(0, members.indexOf(self));
    this.#phase = Math.floor(every * place / members.length);
  }

  /** nextAt is the applied index of the next snapshot after one at snapshotIndex. */
  nextAt(snapshotIndex: number): number {
    const every = this.#every;
    const phase = this.#phase;
    let due = (Math.floor((snapshotIndex - phase) / every) + 1) * every + phase;
    if (due - snapshotIndex < every / 2) due += every;
    return due;
  }

  /**
   * due says whether to take a snapshot now. A new snapshot replaces the one a follower is
   * being sent (storage keeps one), and its transfer starts over; and compacting past a
   * follower catching up from the log sends it a whole snapshot again. A leader waits for
   * either to end, up to snapshotDeferralsMax intervals (the log it keeps in memory
   * meanwhile is bounded).
   */
  due(appliedIndex: number, snapshotIndex: number, catchingUp: () => boolean): boolean {
    const due = this.nextAt(snapshotIndex);
    if (appliedIndex < due) return false;
    const overdue = appliedIndex - due;
    return overdue >= this.#every * (snapshotDeferralsMax - 1) || !catchingUp();
  }
}

/** catchingUpFollower: a live follower is being sent a snapshot, or is behind the log. */
export function catchingUpFollower(raft: RaftStatus, appliedIndex: number): boolean {
  if (raft.role !== "leader") return false;
  const compactTo = appliedIndex - snapshotTrailingEntries;
  return Object.values(raft.progress).some((p) =>
    p.state === "snapshot" || (p.recentActive && p.matchIndex < compactTo)
  );
}

/**
 * DiskCompaction: log rows on disk below `target` are garbage (behind a snapshot); below
 * `done` they are gone. They go a slice per tick: deleting tens of thousands at once would
 * pause the node for ~100 ms, and nothing waits for them to go.
 */
export class DiskCompaction {
  target = 0;
  done: number;

  constructor(firstStoredIndex: number) {
    this.done = firstStoredIndex;
  }

  /** behind: a durable snapshot made every row below `point` garbage. */
  behind(point: number): void {
    if (point >= 1) this.target = Math.max(this.target, point);
  }

  /** installed: installing a snapshot at `index` dropped every row through it. */
  installed(index: number): void {
    this.done = Math.max(this.done, index);
  }

  /** step deletes the next slice (compactLog deletes rows below its argument). */
  step(compactLog: (below: number) => void): void {
    if (this.done >= this.target) return;
    const next = Math.min(this.target, this.done + diskCompactionRowsPerTick);
    compactLog(next);
    this.done = next;
  }
}
