import type { Entry, HardState, RestoredState, SnapshotMeta } from "../consensus/types.ts";

/** CorruptionKind names what a StorageCorruptionError found damaged. */
export type CorruptionKind = "log-entry" | "hard-state" | "meta" | "snapshot" | "snapshot-chunk";

/**
 * StorageCorruptionError: stored bytes fail their checksum, or a stored file is missing or
 * cut short. The storage never returns the damaged bytes: it throws this instead (or
 * reports it from scrubStep). The data dir cannot be trusted; what to do is the caller's
 * call (a member whose disk rots is a partly wiped host: DESIGN §12).
 */
export class StorageCorruptionError extends Error {
  override readonly name = "StorageCorruptionError";
  readonly kind: CorruptionKind;
  /**
   * index is the entry's index ("log-entry"), or the snapshot's ("snapshot",
   * "snapshot-chunk"); undefined for the hard state and meta.
   */
  readonly index: number | undefined;
  /** offset is the damaged block's first byte in the snapshot file ("snapshot-chunk"). */
  readonly offset: number | undefined;
  /** path is the damaged file: the database, or the snapshot file. */
  readonly path: string;

  constructor(
    kind: CorruptionKind,
    message: string,
    where: { path: string; index?: number | undefined; offset?: number | undefined },
  ) {
    super(message);
    this.kind = kind;
    this.path = where.path;
    this.index = where.index;
    this.offset = where.offset;
  }
}

/** ScrubStepResult is what one scrubStep verified and found. */
export interface ScrubStepResult {
  /** done: this step finished a pass over everything stored; the next starts another. */
  done: boolean;
  bytesVerified: number;
  /** Damage found in this step; scrubbing goes on past it. */
  problems: StorageCorruptionError[];
}

/** ScrubCounters are the scrubber's totals since the storage opened. */
export interface ScrubCounters {
  passesCompleted: number;
  bytesVerified: number;
  /** Bytes verified so far in the pass under way. */
  passBytesVerified: number;
  problemsFound: number;
  /** Every corruption the storage found, by reads and by scrubbing, by kind. */
  corruptionsFound: Record<CorruptionKind, number>;
}

/** NodeStatus is the node's lifecycle state as stored with its identity. */
export type NodeStatus = "normal" | "recovering";

/** Identity is (name, incarnation) (R0); the incarnation is random, made with the data dir. */
export interface Identity {
  name: string;
  incarnation: string;
  status: NodeStatus;
}

/** PersistBatch is one Ready's durable work, written in a single transaction and fsync. */
export interface PersistBatch {
  hardState: HardState | undefined;
  /** Appended after dropping any stored entries with index >= entries[0].index. */
  entries: Entry[];
  /** A status change written in the same transaction (R6: turning normal with the vote). */
  status?: NodeStatus | undefined;
}

/**
 * NodeStorage is the node's durable state: the log, hard state, identity and snapshots.
 * Every write method but write() is durable (fsynced) when it returns.
 *
 * Everything stored carries a checksum, verified on every read: identity, load,
 * latestSnapshot, readSnapshot and readSnapshotChunk (and the write methods, which read
 * what they check against) throw StorageCorruptionError rather than return damaged bytes.
 */
export interface NodeStorage {
  /** identity returns the stored identity, creating one with a fresh incarnation if empty. */
  identity(name: string): Identity;
  setStatus(status: NodeStatus): void;
  /**
   * reincarnate gives this data dir a new incarnation and status "recovering", keeping
   * its log: used when peers saw that the dir was rolled back (restored from a backup).
   */
  reincarnate(): Identity;
  /** isEmpty is true for a data dir that has never stored a term, entry or snapshot. */
  isEmpty(): boolean;
  /**
   * load returns the hard state, the snapshot meta and every stored entry. Entries may
   * start at or before the snapshot index (trailing entries kept for slow followers).
   */
  load(): RestoredState;
  /** persist writes the batch in one transaction and makes it durable before it returns. */
  persist(batch: PersistBatch): void;
  /**
   * write writes the batch in one transaction without waiting for the disk: it is
   * durable only once a sync() called after it has resolved. False if there was nothing
   * to write. Reads see it at once.
   */
  write(batch: PersistBatch): boolean;
  /**
   * sync resolves once every write made before the call is durable, without blocking the
   * event loop meanwhile; it rejects if the disk reports an error.
   */
  sync(): Promise<void>;

  /**
   * saveSnapshot stores a snapshot of applied state, replacing the previous one atomically:
   * a crash leaves the old snapshot or the new one, complete.
   */
  saveSnapshot(meta: SnapshotMeta, data: Uint8Array): void;
  /**
   * saveSnapshotInBackground is saveSnapshot with the bytes (the parts, in order) written
   * and synced off the event loop; only the commit that makes the file current runs on
   * it. Resolves true once the snapshot is current, false if it no longer can be (the
   * storage closed, or a snapshot at or past its index was installed meanwhile). The
   * parts must not change until it settles.
   */
  saveSnapshotInBackground(meta: SnapshotMeta, parts: readonly Uint8Array[]): Promise<boolean>;
  /**
   * compactLog drops entries with index < index; the entry at index is kept as the
   * compaction point (its term is needed). Requires index <= the snapshot's index.
   */
  compactLog(index: number): void;
  latestSnapshot(): SnapshotMeta | undefined;
  readSnapshot(): { meta: SnapshotMeta; data: Uint8Array } | undefined;
  readSnapshotChunk(index: number, offset: number, length: number): Uint8Array;

  /**
   * stageSnapshotChunk keeps an incoming chunk; offset 0 discards earlier staging. Not
   * synced: nothing relies on a staged chunk until installStagedSnapshot, whose sync
   * covers it. Staging does not outlive the storage: after a crash or a restart the
   * transfer starts over from offset 0.
   */
  stageSnapshotChunk(meta: SnapshotMeta, offset: number, data: Uint8Array): void;
  /**
   * installStagedSnapshot makes the staged snapshot the latest one, drops the whole log
   * (entries the snapshot covers, and any that conflict with it) and raises the commit
   * index to the snapshot's, atomically; then the old snapshot's bytes are removed.
   */
  installStagedSnapshot(meta: SnapshotMeta): void;

  /**
   * scrubStep re-reads and verifies about `bytesBudget` more bytes of what is stored (the
   * meta, hard state and snapshot row, then the log in index order, then the current
   * snapshot's file), resuming where the last step stopped, and cycles. It has no timer:
   * the caller paces it. Damage is returned, not thrown; other errors (an I/O error, a
   * database SQLite cannot read) throw.
   */
  scrubStep?(bytesBudget: number): ScrubStepResult;
  /** scrubCounters returns the scrubber's totals and the corruptions found, by kind. */
  scrubCounters?(): ScrubCounters;

  /** probeWrite checks the database still accepts a write (for /healthz). */
  probeWrite(): void;
  /** Bytes used by the database file, its WAL and the snapshot files. */
  sizeBytes(): number;
  close(): void;
}
