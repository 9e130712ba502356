import { assert } from "../lib/assert.ts";
import { Fences } from "./fences.ts";
import type { Entry, RestoredState } from "./types.ts";

/**
 * RaftLog is the in-memory window of the log after the last compaction point, plus the
 * bookkeeping of what is durable and what is applied.
 *
 * Invariants:
 * - entries[i].index === offsetIndex + 1 + i (contiguous);
 * - offsetIndex <= appliedIndex <= commitIndex <= lastIndex;
 * - stableIndex <= handedIndex <= lastIndex: entries after handedIndex have not been handed to
 *   the node to persist yet; entries in (stableIndex, handedIndex] are being written and
 *   become stable when the node reports them durable (Raft.persisted).
 */
export class RaftLog {
  /** Index of the last discarded (compacted) entry; its term is offsetTerm. */
  offsetIndex = 0;
  offsetTerm = 0;
  entries: Entry[] = [];
  stableIndex = 0;
  /** Highest index handed to the node for persisting (Ready.entries). */
  handedIndex = 0;
  commitIndex = 0;
  /** Highest index handed to the node for applying (Ready.committedEntries). */
  appliedIndex = 0;
  /** Running byte total of entries' data, to bound the in-memory window. */
  bytes = 0;
  /** The incarnation table, kept in step with the entries (fences.ts). */
  fences = new Fences();

  static restore(state: RestoredState): RaftLog {
    const log = new RaftLog();
    const snapshotIndex = state.snapshot?.index ?? 0;
    const snapshotTerm = state.snapshot?.term ?? 0;
    const first = state.entries[0];
    if (first !== undefined && first.index <= snapshotIndex) {
      // Entries kept behind the snapshot (trailing entries for slow followers): the first
      // one is the compaction boundary and only its term is needed.
      log.offsetIndex = first.index;
      log.offsetTerm = first.term;
      log.entries = state.entries.slice(1);
    } else {
      assert(
        first === undefined || first.index === snapshotIndex + 1,
        `log must continue the snapshot: first entry ${first?.index}, snapshot ${snapshotIndex}`,
      );
      log.offsetIndex = snapshotIndex;
      log.offsetTerm = snapshotTerm;
      log.entries = state.entries.slice();
    }
    log.fences = Fences.fromTable(state.fences);
    for (let i = 0; i < log.entries.length; i++) {
      const entry = log.entries[i]!;
      assert(entry.index === log.offsetIndex + 1 + i, "restored log must be contiguous");
      log.bytes += entry.data.byteLength;
      // Fences at or below the snapshot are in the snapshot's table already.
      if (entry.index > snapshotIndex) log.fences.onAppend(entry);
    }
    log.stableIndex = log.lastIndex;
    log.handedIndex = log.lastIndex;
    log.appliedIndex = Math.max(snapshotIndex, log.offsetIndex);
    log.commitIndex = Math.max(state.hardState.commitIndex, log.appliedIndex);
    log.commitIndex = Math.min(log.commitIndex, log.lastIndex);
    assert(log.appliedIndex <= log.commitIndex, "applied must not pass commit on restore");
    return log;
  }

  get lastIndex(): number {
    return this.offsetIndex + this.entries.length;
  }

  get lastTerm(): number {
    return this.termAt(this.lastIndex) ?? 0;
  }

  /** firstIndex is the lowest index still held in memory. */
  get firstIndex(): number {
    return this.offsetIndex + 1;
  }

  /** termAt returns the term at index, or undefined when it is compacted or beyond the end. */
  termAt(index: number): number | undefined {
    if (index === this.offsetIndex) return this.offsetTerm;
    if (index < this.offsetIndex || index > this.lastIndex) return undefined;
    return this.entries[index - this.offsetIndex - 1]!.term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.offsetIndex || index > this.lastIndex) return undefined;
    return this.entries[index - this.offsetIndex - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.termAt(index) === term;
  }

  /** isUpToDate implements the voting restriction of §5.4.1. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    return lastTerm > this.lastTerm || (lastTerm === this.lastTerm && lastIndex >= this.lastIndex);
  }

  append(entry: Entry): void {
    assert(entry.index === this.lastIndex + 1, "log must be contiguous");
    this.entries.push(entry);
    this.bytes += entry.data.byteLength;
    this.fences.onAppend(entry);
  }

  /** truncateFrom drops every entry with index >= index. Never drops committed entries. */
  truncateFrom(index: number): void {
    assert(index > this.commitIndex, `cannot truncate committed entry ${index}`);
    assert(index > this.offsetIndex, "cannot truncate compacted entries");
    const keep = index - this.offsetIndex - 1;
    for (let i = keep; i < this.entries.length; i++) this.bytes -= this.entries[i]!.data.byteLength;
    this.entries.length = keep;
    this.stableIndex = Math.min(this.stableIndex, index - 1);
    this.handedIndex = Math.min(this.handedIndex, index - 1);
    this.fences.onTruncate(index);
  }

  /**
   * appendFromLeader merges entries after prevLogIndex (which matched), truncating at the
   * first conflict (§5.3). Entries already present with the same term are kept as they are.
   */
  appendFromLeader(entries: readonly Entry[]): void {
    for (const entry of entries) {
      const existing = this.termAt(entry.index);
      if (existing === entry.term) continue;
      if (existing !== undefined) this.truncateFrom(entry.index);
      this.append(entry);
    }
  }

  /** slice returns entries [lo, hi] bounded by a count and a byte budget (at least one). */
  slice(lo: number, hi: number, countMax: number, bytesMax: number): Entry[] {
    assert(lo > this.offsetIndex, "slice must not reach into compacted entries");
    const out: Entry[] = [];
    let bytes = 0;
    for (let index = lo; index <= hi && out.length < countMax; index++) {
      const entry = this.entries[index - this.offsetIndex - 1]!;
      bytes += entry.data.byteLength + 32;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  /** unhandedEntries are the entries not yet handed to the node to persist. */
  unhandedEntries(): Entry[] {
    if (this.handedIndex >= this.lastIndex) return [];
    return this.entries.slice(this.handedIndex - this.offsetIndex);
  }

  /** commitTo moves commitIndex forward; it never moves back. */
  commitTo(index: number): boolean {
    if (index <= this.commitIndex) return false;
    assert(index <= this.lastIndex, `commit ${index} beyond last index ${this.lastIndex}`);
    this.commitIndex = index;
    return true;
  }

  /**
   * findConflictByTerm returns the largest index <= index whose term is <= term, or the
   * compaction point if it gets there (etcd-raft's fast backtracking).
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex);
    while (i > this.offsetIndex) {
      const t = this.termAt(i);
      if (t === undefined || t <= term) return i;
      i--;
    }
    return i;
  }

  /** compactTo discards entries before index, keeping the entry at index as the offset. */
  compactTo(index: number): void {
    if (index <= this.offsetIndex) return;
    assert(index <= this.appliedIndex, "cannot compact unapplied entries");
    assert(index <= this.stableIndex, "cannot compact unpersisted entries");
    const term = this.termAt(index);
    assert(term !== undefined, "compaction point must be in the log");
    const drop = index - this.offsetIndex;
    for (let i = 0; i < drop; i++) this.bytes -= this.entries[i]!.data.byteLength;
    this.entries = this.entries.slice(drop);
    this.offsetIndex = index;
    this.offsetTerm = term;
    this.fences.onCompact(index);
  }

  /** resetToSnapshot drops the whole log: a snapshot at (index, term) replaces it. */
  resetToSnapshot(index: number, term: number): void {
    this.entries = [];
    this.bytes = 0;
    this.offsetIndex = index;
    this.offsetTerm = term;
    this.stableIndex = index;
    this.handedIndex = index;
    assert(this.commitIndex <= index, "a snapshot is installed only ahead of the commit index");
    this.commitIndex = index;
    this.appliedIndex = index;
    // The snapshot's own table replaces ours: the node passes it to Raft.restoreFences.
    this.fences.resetBase(undefined);
  }
}
