// SqliteStorage keeps a node's durable state in one SQLite database, `<dir>/keel.db`, and
// its snapshots' bytes in files, `<dir>/snapshots/` (snapshot_files.ts).
//
// Durability: WAL journal with synchronous=NORMAL, and keel fdatasyncs the WAL file itself
// after every transaction it depends on: at once in every write method, or in the
// background for write() (the log's hot path), whose caller waits for sync() before it
// relies on the write. NORMAL alone could roll back the last transactions after a power
// loss, turning a crash into amnesia (DESIGN §3); with the explicit fdatasync a write is as
// durable as with synchronous=FULL once it is synced, and the event loop need not block on
// the disk while it is being written. (NORMAL still syncs the WAL and the database around a
// checkpoint, so a checkpoint never leaves the database file behind the WAL.)
//
// Exactness: the connection reads integers as bigint (safeIntegers) and every one is
// checked to be a safe integer on its way back to a number; the tables are STRICT, so a
// non-integer term or index is refused on the way in.
//
// Snapshots: a new snapshot's file is written, fdatasynced and its directory entry fsynced
// before the transaction that names it in the snapshot row commits; the old file is
// removed only once that commit is synced. A crash at any point thus leaves the old or the
// new snapshot, each complete, and at most an unnamed file that the next open removes.
// The bytes never pass through SQLite: writing them to the WAL and then again into the
// database at checkpoint cost several times what one file write and fdatasync do.
//
// Integrity: every row (meta, hard state, log entry, snapshot row) carries a checksum of
// its values, and the snapshot row the checksums of its file's 64 KiB blocks
// (checksum.ts). Every read verifies before it interprets or returns anything, and throws
// StorageCorruptionError on a mismatch, a missing file or a file cut short: damaged bytes
// are never returned. scrubStep re-reads everything, a bounded amount per call.

import { Database, type Statement } from "bun:sqlite";
import {
  close as closeInBackground,
  closeSync,
  existsSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import type {
  Entry,
  EntryKind,
  HardState,
  RestoredState,
  SnapshotMeta,
} from "../consensus/types.ts";
import { assert } from "../lib/assert.ts";
import {
  blockChecksum,
  blockCount,
  BlockHasher,
  type Checksum,
  checksumAt,
  entryChecksum,
  fileChecksum,
  hardStateChecksum,
  hex,
  metaChecksum,
  snapshotBlockBytes,
  snapshotRowChecksum,
} from "./checksum.ts";
import {
  type CorruptionKind,
  type Identity,
  type NodeStatus,
  type NodeStorage,
  type PersistBatch,
  type ScrubCounters,
  type ScrubStepResult,
  StorageCorruptionError,
} from "./storage.ts";
import { migrate, type MigrationReport, toSafeInteger } from "./schema.ts";
import {
  createFile,
  directoryBytes,
  ensureSnapshotsDir,
  flushInBackground,
  fsyncDirectory,
  readUpTo,
  removeOrphans,
  removeQuietly,
  snapshotFileName,
  snapshotsDirName,
  syncData,
  syncDataInBackground,
  writeAt,
  writeInBackground,
} from "./snapshot_files.ts";

/** databaseFileName is the database's file name inside the data dir. */
export const databaseFileName = "keel.db";

/** busyTimeoutMs bounds how long a statement waits for a lock held by another connection. */
const busyTimeoutMs = 5_000;

/**
 * walCheckMs: how often (at most) a sync checks that our fd is still the WAL file's. SQLite
 * keeps one WAL file while the database is open, so this is a guard, not a mechanism.
 */
const walCheckMs = 1_000;

/**
 * stagedFlushBytes: each time this many staged bytes have been written, an fdatasync of the
 * staged file starts in the background, so the install's own fdatasync, on the event loop,
 * finds little left to write (a whole 100 MB snapshot takes ~150 ms).
 */
const stagedFlushBytes = 8 * 1024 * 1024;

/** walBytesMax is what a WAL file is truncated to after a checkpoint (after big batches). */
const walBytesMax = 64 * 1024 * 1024;

/**
 * hashSliceBytes: a background snapshot save hashes its bytes this much at a time and
 * lets the event loop run between slices (~2 ms each).
 */
const hashSliceBytes = 8 * 1024 * 1024;

/** scrubRowsPerQuery bounds the log rows one scrub query reads (the budget may stop sooner). */
const scrubRowsPerQuery = 256;

/** rowOverheadBytes is what scrubbing counts per row beside its data (integers, checksum). */
const rowOverheadBytes = 32;

interface HardStateRow {
  term: bigint;
  voted_for: string | null;
  commit_index: bigint;
  checksum: bigint;
}

interface EntryRow {
  index: bigint;
  term: bigint;
  kind: string;
  data: Uint8Array;
  checksum: bigint;
}

interface SnapshotRow {
  index: bigint;
  term: bigint;
  bytes: bigint;
  generation: bigint;
  block_bytes: bigint;
  file_checksum: bigint;
  checksum: bigint;
}

interface MetaRow {
  name: string;
  incarnation: string;
  status: string;
  checksum: bigint;
}

/**
 * StoredSnapshot is the snapshot row, verified: the meta, the generation naming its file,
 * and the checksum of its blocks' checksums.
 */
interface StoredSnapshot {
  meta: SnapshotMeta;
  generation: number;
  fileChecksum: Checksum;
}

/** SnapshotFile is an open snapshot file: the current snapshot's, or one being staged. */
interface SnapshotFile {
  meta: SnapshotMeta;
  generation: number;
  path: string;
  fd: number;
}

/** SnapshotSums are a snapshot file's block checksums (8 bytes each) and their checksum. */
interface SnapshotSums {
  blockChecksums: Uint8Array;
  fileChecksum: Checksum;
}

/** CurrentSnapshot is the current snapshot's open file and the checksums it is read with. */
interface CurrentSnapshot extends SnapshotFile {
  sums: SnapshotSums;
}

/** StagedSnapshot is an incoming snapshot's file and how many of its bytes have arrived. */
interface StagedSnapshot extends SnapshotFile {
  /** The checksums of the bytes staged so far, as they arrived. */
  hasher: BlockHasher;
  received: number;
  /** Bytes written since the last background flush started. */
  unflushed: number;
  flushing: boolean;
  /** The first error a background flush met: the staged bytes may not be on disk. */
  flushError: Error | undefined;
}

/** ScrubCursor is where the scrubber is in its pass. */
interface ScrubCursor {
  /** records: the meta, hard state and snapshot rows; then the log; then the file. */
  phase: "records" | "log" | "snapshot";
  /** The last log index verified in this pass (phase "log"). */
  afterIndex: bigint;
  /** The snapshot file being verified, by generation, and its next block. */
  snapshot: { generation: number; nextBlock: number } | undefined;
}

/** DurabilitySettings are the connection's settings that durability depends on. */
export interface DurabilitySettings {
  journalMode: string;
  /** 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA. */
  synchronous: number;
  /** How keel makes the WAL durable itself (with NORMAL, SQLite does not at commit). */
  walSync: "fdatasync";
}

/** SqliteStorage implements NodeStorage with bun:sqlite. Open it with SqliteStorage.open. */
export class SqliteStorage implements NodeStorage {
  readonly path: string;
  readonly #db: Database;
  readonly #sql: ReturnType<typeof prepareStatements>;
  readonly #persist: {
    immediate: (
      hardState: HardState | undefined,
      entries: Entry[],
      status: NodeStatus | undefined,
    ) => void;
  };
  #closed = false;
  /** Held while open: the data dir's lock (lockDataDir). */
  readonly #lock: Database;
  /** The WAL file, opened by us to fdatasync it (SQLite keeps it while the db is open). */
  #wal: WalFile;
  #walCheckedAt = 0;
  /** `<dir>/snapshots`: the snapshot files. */
  readonly #snapshotsDir: string;
  /** The current snapshot's file, opened once for the reads (the row says which it is). */
  #current: CurrentSnapshot | undefined;
  /** The incoming snapshot being staged. Not in the database: it ends with the storage. */
  #staged: StagedSnapshot | undefined;
  /**
   * nextGeneration names the next snapshot file: above the current snapshot's generation,
   * and new for every file this process writes, so a new file never takes the name of one
   * that counts. (It may take a leftover's name, which no row names: that file is
   * truncated and rewritten.)
   */
  #nextGeneration = 1;
  /**
   * known: the hard state and last entry as this process last wrote them (or load()
   * verified them), so the write path checks its invariants without reading them back;
   * undefined when not known. Set only once a transaction has committed.
   */
  #known: {
    hardState: HardState | undefined;
    lastEntry: { index: number; term: number } | undefined;
  } = { hardState: undefined, lastEntry: undefined };
  /** What open() did to an older schema version, if anything. */
  #migration: MigrationReport | undefined;
  /** Where the scrubber is in its pass (scrubStep). */
  #scrub: ScrubCursor = { phase: "records", afterIndex: 0n, snapshot: undefined };
  #scrubTotals = { passesCompleted: 0, bytesVerified: 0, passBytesVerified: 0, problemsFound: 0 };
  readonly #corruptionsFound: Record<CorruptionKind, number> = {
    "log-entry": 0,
    "hard-state": 0,
    meta: 0,
    snapshot: 0,
    "snapshot-chunk": 0,
  };

  private constructor(path: string, db: Database, snapshotsDir: string, lock: Database) {
    this.path = path;
    this.#db = db;
    this.#lock = lock;
    this.#snapshotsDir = snapshotsDir;
    this.#wal = openWal(path);
    this.#sql = prepareStatements(db);
    this.#persist = db.transaction(
      (hardState: HardState | undefined, entries: Entry[], status: NodeStatus | undefined) => {
        if (hardState !== undefined) this.#writeHardState(hardState);
        if (entries.length > 0) this.#writeEntries(entries);
        if (status !== undefined) this.#writeStatus(status);
      },
    );
  }

  /**
   * open opens (creating if needed) the database `<dir>/keel.db`, migrating an older
   * schema version (see `migration`). It throws if the database was written by a newer
   * keel or is not a keel database, and StorageCorruptionError if the current snapshot's
   * file is missing, of the wrong size, or its checksums fail.
   */
  static open(dir: string): SqliteStorage {
    const path = join(dir, databaseFileName);
    mkdirSync(dir, { recursive: true });
    const lock = lockDataDir(dir);
    const isNew = statSync(path, { throwIfNoEntry: false }) === undefined;
    let db: Database;
    try {
      db = new Database(path, { create: true, strict: true, safeIntegers: true });
    } catch (error: unknown) {
      lock.close();
      throw error;
    }
    let snapshotsDir: string;
    let migration: MigrationReport | undefined;
    try {
      db.run(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      const mode = db.query<{ journal_mode: string }, []>("PRAGMA journal_mode = WAL").get();
      if (mode?.journal_mode !== "wal") {
        throw new Error(`Database "${path}" cannot use WAL mode (got "${mode?.journal_mode}")`);
      }
      db.run("PRAGMA synchronous = NORMAL");
      // macOS: fsync() does not flush the drive's cache; F_FULLFSYNC does. No-op elsewhere.
      db.run("PRAGMA fullfsync = ON");
      db.run("PRAGMA checkpoint_fullfsync = ON");
      db.run(`PRAGMA journal_size_limit = ${walBytesMax}`);
      migration = migrate(db, path, dir);
      snapshotsDir = ensureSnapshotsDir(dir);
      // A write makes SQLite create the WAL file (if this open did not), so it can be
      // opened and synced from here on.
      db.run(
        "INSERT INTO probe (id, written_at) VALUES (1, ?) " +
          "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
        [new Date().toISOString()],
      );
    } catch (error: unknown) {
      db.close();
      lock.close();
      throw error;
    }
    // With synchronous=NORMAL SQLite does not sync the directory when it creates the WAL,
    // nor does anything sync the database file's entry or the data dir's: sync them so
    // the files survive power loss.
    fsyncDirectory(dir);
    if (isNew) fsyncDirectory(dirname(dir));
    const storage = new SqliteStorage(path, db, snapshotsDir, lock);
    storage.#migration = migration;
    try {
      storage.#syncWal();
      storage.#openSnapshots();
    } catch (error: unknown) {
      storage.close();
      throw error;
    }
    return storage;
  }

  /**
   * migration says what opening this data dir did to an older schema version (for the
   * caller's log), or is undefined if it was new or current.
   */
  get migration(): MigrationReport | undefined {
    return this.#migration;
  }

  /** migratedFrom is the schema version this data dir had before open() migrated it. */
  get migratedFrom(): number | undefined {
    return this.#migration?.fromVersion;
  }

  identity(name: string): Identity {
    assert(name !== "", "member name must not be empty");
    const identity = this.#db.transaction((): Identity => {
      const row = this.#readMeta();
      if (row === undefined) {
        const identity: Identity = { name, incarnation: newIncarnation(), status: "normal" };
        this.#sql.insertMeta.run({
          name,
          incarnation: identity.incarnation,
          status: identity.status,
          created_at: new Date().toISOString(),
          checksum: metaChecksum(name, identity.incarnation, identity.status),
        });
        return identity;
      }
      if (row.name !== name) {
        throw new Error(
          `Data dir "${dirname(this.path)}" belongs to member "${row.name}", not "${name}": ` +
            `start it as "${row.name}" or give "${name}" its own data dir`,
        );
      }
      return { name: row.name, incarnation: row.incarnation, status: toStatus(row.status) };
    }).immediate();
    this.#syncWal();
    return identity;
  }

  reincarnate(): Identity {
    const identity = this.#db.transaction((): Identity => {
      const row = this.#readMeta();
      assert(row !== undefined, "identity must be created before it is replaced");
      const incarnation = newIncarnation();
      this.#db.run(
        "UPDATE meta SET incarnation = ?, status = 'recovering', checksum = ? WHERE id = 1",
        [incarnation, metaChecksum(row.name, incarnation, "recovering")],
      );
      return { name: row.name, incarnation, status: "recovering" };
    }).immediate();
    this.#syncWal();
    return identity;
  }

  setStatus(status: NodeStatus): void {
    this.#db.transaction(() => this.#writeStatus(status)).immediate();
    this.#syncWal();
  }

  isEmpty(): boolean {
    const row = this.#sql.selectNonEmpty.get();
    assert(row !== null, "an aggregate query returns one row");
    return row.non_empty === 0n;
  }

  // Every row is verified before it is interpreted: the meta too, though load does not
  // return it, as a node must not run on an identity it cannot trust. Then the log's
  // shape: rows that each pass their checksum but leave a gap, or disagree with the
  // snapshot, mean rows were lost or misplaced (or a bug wrote them): the log cannot be
  // trusted either, and that is StorageCorruptionError too, naming the first bad index.
  load(): RestoredState {
    this.#readMeta();
    const hardState = this.#readHardState() ?? { term: 0, votedFor: null, commitIndex: 0 };
    const snapshot = this.#readSnapshot()?.meta;
    const rows = this.#sql.selectEntries.all();
    const entries: Entry[] = new Array(rows.length);
    const check = (condition: boolean, index: number, message: string): void => {
      if (condition) return;
      throw this.#corruption(
        "log-entry",
        `Log in "${this.path}" ${message}: the data dir is damaged`,
        { index },
      );
    };
    const snapshotText = snapshot === undefined ? "none" : describe(snapshot);
    for (let i = 0; i < rows.length; i++) {
      const entry = this.#verifiedEntry(rows[i]!);
      const previous = entries[i - 1];
      if (previous === undefined) {
        // Without a snapshot the log starts at 1; with one, it may keep entries before the
        // snapshot (compactLog) but must reach it.
        const startMax = snapshot === undefined ? 1 : snapshot.index + 1;
        check(
          entry.index <= startMax && (snapshot !== undefined || entry.index === 1),
          snapshot === undefined ? 1 : Math.max(1, Math.min(startMax, entry.index - 1)),
          `must start at 1 or reach the snapshot: it starts at ${entry.index}, ` +
            `snapshot ${snapshotText}`,
        );
      } else {
        check(
          entry.index === previous.index + 1,
          previous.index + 1,
          `must be contiguous: expected index ${previous.index + 1}, found ${entry.index}`,
        );
        check(
          entry.term >= previous.term,
          entry.index,
          `terms must not decrease: entry ${entry.index} has term ${entry.term} after ` +
            `${previous.term}`,
        );
      }
      if (snapshot !== undefined && entry.index === snapshot.index) {
        check(
          entry.term === snapshot.term,
          entry.index,
          `entry ${entry.index} has term ${entry.term}, not the snapshot's (${snapshotText})`,
        );
      }
      if (snapshot !== undefined && entry.index === snapshot.index + 1) {
        check(
          entry.term >= snapshot.term,
          entry.index,
          `entry ${entry.index} has term ${entry.term}, before the snapshot's (${snapshotText})`,
        );
      }
      entries[i] = entry;
    }
    const last = entries.at(-1);
    if (last !== undefined && snapshot !== undefined) {
      check(
        last.index >= snapshot.index,
        last.index + 1,
        `ends at ${last.index}, before the snapshot at ${snapshot.index}`,
      );
    }
    this.#known = {
      hardState: { ...hardState },
      lastEntry: last === undefined ? undefined : { index: last.index, term: last.term },
    };
    return { hardState, snapshot, entries };
  }

  persist(batch: PersistBatch): void {
    if (this.write(batch)) this.#syncWal();
  }

  write(batch: PersistBatch): boolean {
    if (batch.hardState === undefined && batch.entries.length === 0 && batch.status === undefined) {
      return false;
    }
    this.#persist.immediate(batch.hardState, batch.entries, batch.status);
    if (batch.hardState !== undefined) this.#known.hardState = { ...batch.hardState };
    const last = batch.entries.at(-1);
    if (last !== undefined) this.#known.lastEntry = { index: last.index, term: last.term };
    return true;
  }

  sync(): Promise<void> {
    assert(!this.#closed, "sync after close");
    const wal = this.#currentWal();
    wal.syncing++;
    return new Promise<void>((resolve, reject) => {
      fdatasync(wal.fd, (error) => {
        wal.syncing--;
        // The fd outlived its file (closed, or the WAL replaced): close it now.
        if (wal.syncing === 0 && (this.#closed || wal !== this.#wal)) closeSync(wal.fd);
        if (error !== null) reject(error);
        else resolve();
      });
    });
  }

  // Crash ordering (see the file comment): file bytes, fdatasync, directory fsync; then the
  // row commit and the WAL's fdatasync; only then is the old file removed.
  saveSnapshot(meta: SnapshotMeta, data: Uint8Array): void {
    checkSnapshotMeta(meta);
    assert(data.length === meta.bytes, "snapshot data length must equal meta.bytes");
    this.#checkSnapshotFits(meta);
    const hasher = new BlockHasher(meta.bytes);
    hasher.update(data);
    const sums = hasher.finish();
    const file = this.#createSnapshotFile(meta);
    try {
      writeAt(file.fd, file.path, data, 0);
      this.#makeDurable(file);
      this.#sql.upsertSnapshot.run(snapshotParams(file, sums));
    } catch (error: unknown) {
      this.#discard(file);
      throw error;
    }
    this.#replaceCurrent(file, sums);
  }

  async saveSnapshotInBackground(
    meta: SnapshotMeta,
    parts: readonly Uint8Array[],
  ): Promise<boolean> {
    checkSnapshotMeta(meta);
    let bytes = 0;
    for (const part of parts) bytes += part.length;
    assert(bytes === meta.bytes, "snapshot data length must equal meta.bytes");
    this.#checkSnapshotFits(meta);
    const file = this.#createSnapshotFile(meta);
    const hasher = new BlockHasher(meta.bytes);
    try {
      // The checksums are of the bytes as given, hashed on the loop while the thread
      // pool writes them.
      await Promise.all([
        hashInBackground(hasher, parts),
        writeInBackground(file.fd, file.path, parts),
      ]);
      await syncDataInBackground(file.fd, file.path);
    } catch (error: unknown) {
      this.#discard(file);
      throw error;
    }
    // The world may have moved while the bytes were written: closed, or a snapshot at
    // or past this one installed (which also replaced the log this one was checked with).
    const current = this.#current;
    if (this.#closed || (current !== undefined && current.meta.index >= meta.index)) {
      this.#discard(file);
      return false;
    }
    this.#checkSnapshotFits(meta);
    const sums = hasher.finish();
    try {
      fsyncDirectory(this.#snapshotsDir);
      this.#sql.upsertSnapshot.run(snapshotParams(file, sums));
    } catch (error: unknown) {
      this.#discard(file);
      throw error;
    }
    this.#replaceCurrent(file, sums);
    return true;
  }

  /**
   * checkSnapshotFits: a snapshot of applied state never moves back, and covers entries
   * this node has: it agrees with the log, or (with the log gone after an install) with
   * the snapshot it replaces.
   */
  #checkSnapshotFits(meta: SnapshotMeta): void {
    const current = this.#readSnapshot();
    assert(
      current === undefined || meta.index >= current.meta.index,
      `a snapshot must not move back: ${meta.index} < ${current?.meta.index}`,
    );
    const entry = this.#readEntry(meta.index);
    if (entry !== undefined) {
      assert(
        entry.term === meta.term,
        `snapshot term ${meta.term} must match the log's term at index ${meta.index}`,
      );
    } else {
      assert(
        current !== undefined && current.meta.index === meta.index &&
          current.meta.term === meta.term,
        `snapshot at ${meta.index} must cover an entry this node has`,
      );
    }
  }

  compactLog(index: number): void {
    assert(Number.isSafeInteger(index) && index >= 1, "compaction index must be >= 1");
    this.#db.transaction(() => {
      const snapshot = this.#readSnapshot()?.meta;
      assert(
        snapshot !== undefined && index <= snapshot.index,
        `the log can be compacted only up to the snapshot: ${index} > ${snapshot?.index}`,
      );
      this.#sql.deleteEntriesBefore.run({ index });
    }).immediate();
    this.#syncWal();
  }

  latestSnapshot(): SnapshotMeta | undefined {
    return this.#readSnapshot()?.meta;
  }

  readSnapshot(): { meta: SnapshotMeta; data: Uint8Array } | undefined {
    const current = this.#currentFile();
    if (current === undefined) return undefined;
    return { meta: current.meta, data: this.#readVerified(current, 0, current.meta.bytes) };
  }

  readSnapshotChunk(index: number, offset: number, length: number): Uint8Array {
    const current = this.#currentFile();
    if (current === undefined || current.meta.index !== index) {
      throw new Error(
        `Snapshot at index ${index} is not the current snapshot (current: ${
          current?.meta.index ?? "none"
        })`,
      );
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > current.meta.bytes) {
      throw new RangeError(
        `Snapshot offset ${offset} is outside the snapshot's ${current.meta.bytes} bytes`,
      );
    }
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`Snapshot chunk length ${length} must be a non-negative integer`);
    }
    const end = Math.min(current.meta.bytes, offset + length);
    return this.#readVerified(current, offset, end - offset);
  }

  // Staging writes the file without syncing it and keeps its progress in memory only:
  // installStagedSnapshot syncs the file before anything names it, and a process that
  // stops before then leaves a file the next open removes (Raft starts the transfer over).
  stageSnapshotChunk(meta: SnapshotMeta, offset: number, data: Uint8Array): void {
    checkSnapshotMeta(meta);
    const continued = offset === 0 ? undefined : this.#continuedStaging(meta, offset);
    const received = offset + data.length;
    if (received > meta.bytes) {
      throw new RangeError(
        `Snapshot chunk ends at byte ${received}, past the snapshot's ${meta.bytes} bytes`,
      );
    }
    // Checked before anything changes: a refused chunk leaves the staging as it was.
    const staged = continued ?? this.#restartStaging(meta);
    writeAt(staged.fd, staged.path, data, offset);
    staged.hasher.update(data);
    staged.received = received;
    staged.unflushed += data.length;
    if (staged.unflushed >= stagedFlushBytes && !staged.flushing) flushBehind(staged);
  }

  installStagedSnapshot(meta: SnapshotMeta): void {
    checkSnapshotMeta(meta);
    const staged = this.#staged;
    assert(
      staged !== undefined && sameSnapshot(staged.meta, meta),
      `the staged snapshot must be ${describe(meta)} to install it`,
    );
    const stagedFileBytes = fstatSync(staged.fd).size;
    assert(
      staged.received === meta.bytes && stagedFileBytes === meta.bytes,
      `staged snapshot bytes must be complete (${staged.received} of ${meta.bytes}, ` +
        `file "${staged.path}" has ${stagedFileBytes})`,
    );
    const current = this.#readSnapshot();
    assert(
      current === undefined || meta.index >= current.meta.index,
      `an installed snapshot must not move back: ${meta.index} < ${current?.meta.index}`,
    );
    if (staged.flushError !== undefined) {
      throw new Error(
        `Cannot sync staged snapshot file "${staged.path}": ${staged.flushError.message}`,
        { cause: staged.flushError },
      );
    }
    const sums = staged.hasher.finish();
    this.#makeDurable(staged);
    this.#db.transaction(() => {
      this.#sql.upsertSnapshot.run(snapshotParams(staged, sums));
      this.#sql.deleteAllEntries.run();
      const hardState = this.#readHardState() ?? { term: 0, votedFor: null, commitIndex: 0 };
      if (hardState.commitIndex < meta.index) {
        this.#upsertHardState({ ...hardState, commitIndex: meta.index });
      }
    }).immediate();
    this.#staged = undefined;
    this.#known = { hardState: undefined, lastEntry: undefined };
    this.#replaceCurrent(staged, sums);
  }

  // ---- Scrubbing ----------------------------------------------------------------------

  // A pass verifies, in order: the meta, hard state and snapshot rows (with the block
  // checksums on disk, and the snapshot file's size and name), every log entry in index
  // order, then every block of the current snapshot's file. Writes between steps are
  // fine: the log is walked by index (entries appended or replaced behind the cursor wait
  // for the next pass; they were verified-by-construction when written), and a snapshot
  // replaced mid-pass is verified from its first block.
  scrubStep(bytesBudget: number): ScrubStepResult {
    assert(!this.#closed, "scrubStep after close");
    assert(
      Number.isSafeInteger(bytesBudget) && bytesBudget >= 1,
      "the scrub budget must be >= 1 byte",
    );
    const problems: StorageCorruptionError[] = [];
    let bytes = 0;
    let done = false;
    const cursor = this.#scrub;
    while (!done && bytes < bytesBudget) {
      if (cursor.phase === "records") {
        bytes += this.#scrubRecords(problems);
        cursor.phase = "log";
        cursor.afterIndex = 0n;
      } else if (cursor.phase === "log") {
        const step = this.#scrubLog(bytesBudget - bytes, problems);
        bytes += step.bytes;
        if (step.finished) {
          cursor.phase = "snapshot";
          cursor.snapshot = undefined;
        }
      } else {
        const step = this.#scrubSnapshot(bytesBudget - bytes, problems);
        bytes += step.bytes;
        if (step.finished) {
          cursor.phase = "records";
          cursor.snapshot = undefined;
          done = true;
        }
      }
    }
    const totals = this.#scrubTotals;
    totals.bytesVerified += bytes;
    totals.passBytesVerified += bytes;
    totals.problemsFound += problems.length;
    if (done) {
      totals.passesCompleted++;
      totals.passBytesVerified = 0;
    }
    return { done, bytesVerified: bytes, problems };
  }

  scrubCounters(): ScrubCounters {
    return { ...this.#scrubTotals, corruptionsFound: { ...this.#corruptionsFound } };
  }

  /** scrubRecords verifies the single rows and the snapshot file's identity; bytes read. */
  #scrubRecords(problems: StorageCorruptionError[]): number {
    let bytes = 0;
    collectCorruption(problems, () => {
      const row = this.#readMeta();
      if (row !== undefined) {
        bytes += rowOverheadBytes + row.name.length + row.incarnation.length + row.status.length;
      }
    });
    collectCorruption(problems, () => {
      if (this.#readHardState() !== undefined) bytes += rowOverheadBytes;
    });
    collectCorruption(problems, () => {
      const stored = this.#readSnapshot();
      if (stored === undefined) return;
      const sums = this.#readBlockChecksums(stored);
      bytes += rowOverheadBytes + sums.blockChecksums.length;
      const current = this.#current;
      assert(
        current !== undefined && current.generation === stored.generation &&
          current.sums.fileChecksum === sums.fileChecksum,
        "the snapshot row changes only with the storage's current file",
      );
      // The open fd reads the file even if its name is gone or now names another file;
      // the next open would not.
      const named = statSync(current.path, { throwIfNoEntry: false });
      const open = fstatSync(current.fd);
      if (named === undefined || named.ino !== open.ino) {
        throw this.#corruption(
          "snapshot",
          `Snapshot file "${current.path}" of snapshot ${describe(current.meta)} is ` +
            `${named === undefined ? "missing" : "another file"}: the data dir is damaged`,
          { path: current.path, index: current.meta.index },
        );
      }
      if (open.size !== current.meta.bytes) {
        throw this.#corruption(
          "snapshot",
          `Snapshot file "${current.path}" has ${open.size} bytes, but snapshot ` +
            `${describe(current.meta)} has ${current.meta.bytes}: the data dir is damaged`,
          { path: current.path, index: current.meta.index },
        );
      }
    });
    return bytes;
  }

  /** scrubLog verifies log entries after the cursor, about `budget` bytes of them. */
  #scrubLog(
    budget: number,
    problems: StorageCorruptionError[],
  ): { bytes: number; finished: boolean } {
    let bytes = 0;
    while (bytes < budget) {
      const rows = this.#sql.selectEntriesAfter.all(this.#scrub.afterIndex, scrubRowsPerQuery);
      for (const row of rows) {
        collectCorruption(problems, () => this.#verifiedEntry(row));
        bytes += rowOverheadBytes + row.data.length;
        this.#scrub.afterIndex = row.index;
        if (bytes >= budget) return { bytes, finished: false };
      }
      if (rows.length < scrubRowsPerQuery) return { bytes, finished: true };
    }
    return { bytes, finished: false };
  }

  /** scrubSnapshot verifies the current snapshot file's next blocks, about `budget` bytes. */
  #scrubSnapshot(
    budget: number,
    problems: StorageCorruptionError[],
  ): { bytes: number; finished: boolean } {
    const file = this.#current;
    if (file === undefined) return { bytes: 0, finished: true };
    let cursor = this.#scrub.snapshot;
    if (cursor === undefined || cursor.generation !== file.generation) {
      cursor = this.#scrub.snapshot = { generation: file.generation, nextBlock: 0 };
    }
    const blocks = blockCount(file.meta.bytes);
    let bytes = 0;
    while (cursor.nextBlock < blocks && bytes < budget) {
      const block = cursor.nextBlock++;
      const start = block * snapshotBlockBytes;
      const length = Math.min(snapshotBlockBytes, file.meta.bytes - start);
      let data: Uint8Array | undefined;
      collectCorruption(problems, () => (data = this.#readFile(file, start, length)));
      if (data === undefined) {
        // Cut short: the blocks past the end cannot be read either.
        cursor.nextBlock = blocks;
        break;
      }
      const problem = this.#verifyBlock(file, block, data);
      if (problem !== undefined) problems.push(problem);
      bytes += length;
    }
    return { bytes, finished: cursor.nextBlock >= blocks };
  }

  probeWrite(): void {
    this.#sql.writeProbe.run({ written_at: new Date().toISOString() });
    this.#syncWal();
  }

  sizeBytes(): number {
    return fileBytes(this.path) + fileBytes(`${this.path}-wal`) +
      directoryBytes(this.#snapshotsDir);
  }

  /** durabilitySettings reads back the settings this connection writes with. */
  durabilitySettings(): DurabilitySettings {
    const mode = this.#db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get();
    const sync = this.#db.query<{ synchronous: bigint }, []>("PRAGMA synchronous").get();
    assert(mode !== null && sync !== null, "PRAGMA queries return one row");
    return {
      journalMode: mode.journal_mode,
      synchronous: toSafeInteger(sync.synchronous, "synchronous"),
      walSync: "fdatasync",
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const statement of Object.values(this.#sql)) statement.finalize();
    this.#db.close();
    // A background fdatasync still running closes the fd when it ends.
    if (this.#wal.syncing === 0) closeSync(this.#wal.fd);
    if (this.#current !== undefined) closeSync(this.#current.fd);
    this.#current = undefined;
    // A staging does not outlive the storage: remove its file now rather than at next open.
    if (this.#staged !== undefined) this.#discard(this.#staged);
    this.#staged = undefined;
    this.#lock.close();
  }

  /** syncWal makes every write so far durable before it returns. */
  #syncWal(): void {
    fdatasyncSync(this.#currentWal().fd);
  }

  /**
   * currentWal is the WAL's fd, reopened if the file was replaced (SQLite keeps one WAL
   * file while the database is open, but a stale fd would sync the wrong file silently).
   */
  #currentWal(): WalFile {
    // A stat per sync is measurable on the hot path: look at most every walCheckMs.
    const now = performance.now();
    if (now - this.#walCheckedAt < walCheckMs) return this.#wal;
    this.#walCheckedAt = now;
    const ino = statSync(`${this.path}-wal`, { throwIfNoEntry: false })?.ino;
    if (ino !== this.#wal.ino) {
      assert(ino !== undefined, `the WAL of "${this.path}" must exist while it is open`);
      if (this.#wal.syncing === 0) closeSync(this.#wal.fd);
      this.#wal = openWal(this.path);
      fsyncDirectory(dirname(this.path));
    }
    return this.#wal;
  }

  // ---- Inside transactions -----------------------------------------------------------

  /** readMeta reads and verifies the identity row (not only inside transactions). */
  #readMeta(): MetaRow | undefined {
    const row = this.#sql.selectMeta.get();
    if (row === null) return undefined;
    const computed = metaChecksum(row.name, row.incarnation, row.status);
    if (computed !== row.checksum) {
      throw this.#corruption(
        "meta",
        `Meta row (the identity) in "${this.path}" fails its checksum: stored ` +
          `${hex(row.checksum)}, computed ${hex(computed)} over name ${
            JSON.stringify(row.name)
          }, incarnation ${JSON.stringify(row.incarnation)}, status ${
            JSON.stringify(row.status)
          }: the data dir is damaged`,
        {},
      );
    }
    return row;
  }

  /** writeStatus sets the identity's status, with the checksum of the row it makes. */
  #writeStatus(status: NodeStatus): void {
    const row = this.#readMeta();
    assert(row !== undefined, "identity must be created before its status is set");
    const checksum = metaChecksum(row.name, row.incarnation, status);
    const changes = this.#sql.updateStatus.run({ status, checksum }).changes;
    assert(changes === 1, "identity must be created before its status is set");
  }

  #readHardState(): HardState | undefined {
    const row = this.#sql.selectHardState.get();
    if (row === null) return undefined;
    const computed = hardStateChecksum(row.term, row.voted_for, row.commit_index);
    if (computed !== row.checksum) {
      throw this.#corruption(
        "hard-state",
        `Hard state in "${this.path}" fails its checksum: stored ${hex(row.checksum)}, ` +
          `computed ${hex(computed)} over term ${row.term}, votedFor ${
            JSON.stringify(row.voted_for)
          }, commitIndex ${row.commit_index}: the data dir is damaged`,
        {},
      );
    }
    return {
      term: toSafeInteger(row.term, "term"),
      votedFor: row.voted_for,
      commitIndex: toSafeInteger(row.commit_index, "commitIndex"),
    };
  }

  #upsertHardState(hardState: HardState): void {
    this.#sql.upsertHardState.run({
      term: hardState.term,
      voted_for: hardState.votedFor,
      commit_index: hardState.commitIndex,
      checksum: hardStateChecksum(hardState.term, hardState.votedFor, hardState.commitIndex),
    });
  }

  /** readEntry reads and verifies the entry at `index`, if the log holds it. */
  #readEntry(index: number): Entry | undefined {
    const row = this.#sql.selectEntry.get({ index });
    return row === null ? undefined : this.#verifiedEntry(row);
  }

  /** verifiedEntry checks a log row against its checksum, then converts it. */
  #verifiedEntry(row: EntryRow): Entry {
    const computed = entryChecksum(row.index, row.term, row.kind, row.data);
    if (computed !== row.checksum) {
      throw this.#corruption(
        "log-entry",
        `Log entry ${row.index} in "${this.path}" fails its checksum: stored ` +
          `${hex(row.checksum)}, computed ${hex(computed)} over index ${row.index}, term ` +
          `${row.term}, kind ${JSON.stringify(row.kind)} and ${row.data.length} bytes of ` +
          `data: the data dir is damaged`,
        { index: safeOrUndefined(row.index) },
      );
    }
    return toEntry(row);
  }

  // Invariants checked here (Raft §5.1, §5.2): the term never decreases, and a vote cast
  // in a term is never changed within that term.
  #writeHardState(hardState: HardState): void {
    checkCount(hardState.term, "term");
    checkCount(hardState.commitIndex, "commitIndex");
    assert(hardState.votedFor !== "", "votedFor must be a member name or null");
    const stored = this.#known.hardState ?? this.#readHardState();
    if (stored !== undefined) {
      assert(
        hardState.term >= stored.term,
        `term must not decrease: ${hardState.term} < ${stored.term}`,
      );
      assert(
        hardState.term > stored.term || stored.votedFor === null ||
          hardState.votedFor === stored.votedFor,
        `vote in term ${stored.term} must not change from "${stored.votedFor}" to "${hardState.votedFor}"`,
      );
    }
    this.#upsertHardState(hardState);
  }

  // Invariant: the stored log stays contiguous, reaches the snapshot, and its terms never
  // decrease. entries[0] may overwrite stored entries (a conflict, §5.3): those from its
  // index on are dropped first. It must not reach into the snapshot, which holds only
  // committed entries.
  #writeEntries(entries: Entry[]): void {
    const first = entries[0]!;
    checkEntry(first);
    // The current snapshot's meta as committed (the row, verified when it was read or
    // written; the scrubber re-reads it).
    const snapshot = this.#current?.meta;
    const snapshotIndex = snapshot?.index ?? 0;
    assert(
      first.index > snapshotIndex,
      `entry ${first.index} must come after the snapshot at ${snapshotIndex}`,
    );
    let previousTerm = 0;
    // The common case appends after the last entry written. Otherwise the entry is read
    // whole and verified: its term decides an invariant, and rot must not pass for a bug
    // (an AssertionError) or hide one.
    const known = this.#known.lastEntry;
    const previousEntry = known !== undefined && known.index === first.index - 1
      ? known
      : first.index > 1
      ? this.#readEntry(first.index - 1)
      : undefined;
    if (previousEntry !== undefined) {
      previousTerm = previousEntry.term;
    } else if (snapshot !== undefined && first.index - 1 === snapshot.index) {
      previousTerm = snapshot.term;
    } else {
      assert(first.index === 1, `entry ${first.index} must follow a stored entry (log gap)`);
    }
    assert(first.term >= previousTerm, `term must not decrease at entry ${first.index}`);

    this.#sql.deleteEntriesFrom.run({ index: first.index });
    const insert = this.#sql.insertEntry;
    let previous = first;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (i > 0) {
        checkEntry(entry);
        assert(entry.index === previous.index + 1, "entries in a batch must be contiguous");
        assert(entry.term >= previous.term, `term must not decrease at entry ${entry.index}`);
      }
      insert.run(
        entry.index,
        entry.term,
        entry.kind,
        entry.data,
        entryChecksum(entry.index, entry.term, entry.kind, entry.data),
      );
      previous = entry;
    }
  }

  /**
   * readSnapshot reads and verifies the snapshot row. Its block checksums are not read
   * (the row's checksum covers them through file_checksum): readBlockChecksums does that.
   */
  #readSnapshot(): StoredSnapshot | undefined {
    const row = this.#sql.selectSnapshot.get();
    if (row === null) return undefined;
    const computed = snapshotRowChecksum({
      index: row.index,
      term: row.term,
      bytes: row.bytes,
      generation: row.generation,
      blockBytes: row.block_bytes,
      fileChecksum: row.file_checksum,
    });
    if (computed !== row.checksum) {
      throw this.#corruption(
        "snapshot",
        `Snapshot row in "${this.path}" fails its checksum: stored ${hex(row.checksum)}, ` +
          `computed ${hex(computed)} over index ${row.index}, term ${row.term}, ` +
          `${row.bytes} bytes, generation ${row.generation}, blocks of ${row.block_bytes} ` +
          `bytes, file checksum ${hex(row.file_checksum)}: the data dir is damaged`,
        { index: safeOrUndefined(row.index) },
      );
    }
    assert(
      row.block_bytes === BigInt(snapshotBlockBytes),
      `snapshot blocks must be of ${snapshotBlockBytes} bytes, found ${row.block_bytes}`,
    );
    return {
      meta: {
        index: toSafeInteger(row.index, "snapshot index"),
        term: toSafeInteger(row.term, "snapshot term"),
        bytes: toSafeInteger(row.bytes, "snapshot bytes"),
      },
      generation: toSafeInteger(row.generation, "snapshot generation"),
      fileChecksum: row.file_checksum,
    };
  }

  /** readBlockChecksums reads the snapshot row's block checksums, verified. */
  #readBlockChecksums(stored: StoredSnapshot): SnapshotSums {
    const row = this.#sql.selectSnapshotBlocks.get();
    assert(row !== null, "the snapshot row is read with its blocks");
    const blockChecksums = row.block_checksums;
    const computed = fileChecksum(blockChecksums, stored.meta.bytes);
    const expectedBytes = blockCount(stored.meta.bytes) * 8;
    if (computed !== stored.fileChecksum || blockChecksums.length !== expectedBytes) {
      throw this.#corruption(
        "snapshot",
        `Block checksums of snapshot ${describe(stored.meta)} in "${this.path}" fail the ` +
          `file checksum: stored ${hex(stored.fileChecksum)}, computed ${hex(computed)} over ` +
          `${blockChecksums.length} bytes (expected ${expectedBytes}): the data dir is damaged`,
        { index: stored.meta.index },
      );
    }
    return { blockChecksums, fileChecksum: stored.fileChecksum };
  }

  /**
   * corruption makes the error for damage found (counting it); the caller throws it or,
   * scrubbing, reports it.
   */
  #corruption(
    kind: CorruptionKind,
    message: string,
    where: { path?: string; index?: number | undefined; offset?: number },
  ): StorageCorruptionError {
    this.#corruptionsFound[kind]++;
    return new StorageCorruptionError(kind, message, { path: this.path, ...where });
  }

  // ---- Snapshot files ----------------------------------------------------------------

  /**
   * openSnapshots opens the current snapshot's file and removes every other snapshot file:
   * those a crash or a failed removal left, and a staging the last process did not install.
   */
  #openSnapshots(): void {
    const stored = this.#readSnapshot();
    if (stored !== undefined) this.#current = this.#openCurrent(stored);
    this.#nextGeneration = (stored?.generation ?? 0) + 1;
    const keep = stored === undefined
      ? undefined
      : snapshotFileName(stored.meta, stored.generation);
    removeOrphans(this.#snapshotsDir, keep);
  }

  /**
   * openCurrent opens the file the snapshot row names; it must hold the row's bytes. Its
   * bytes are verified as they are read (readVerified), not here: the node reads the
   * whole snapshot at start anyway.
   */
  #openCurrent(stored: StoredSnapshot): CurrentSnapshot {
    const sums = this.#readBlockChecksums(stored);
    const path = join(this.#snapshotsDir, snapshotFileName(stored.meta, stored.generation));
    if (statSync(path, { throwIfNoEntry: false }) === undefined) {
      throw this.#corruption(
        "snapshot",
        `Snapshot file "${path}" of snapshot ${describe(stored.meta)} is missing: ` +
          `the data dir is damaged`,
        { path, index: stored.meta.index },
      );
    }
    const fd = openSync(path, "r");
    const bytes = fstatSync(fd).size;
    if (bytes !== stored.meta.bytes) {
      closeSync(fd);
      throw this.#corruption(
        "snapshot",
        `Snapshot file "${path}" has ${bytes} bytes, but snapshot ${describe(stored.meta)} ` +
          `has ${stored.meta.bytes}: the data dir is damaged`,
        { path, index: stored.meta.index },
      );
    }
    return { meta: stored.meta, generation: stored.generation, path, fd, sums };
  }

  /**
   * readVerified reads bytes [offset, offset + length) of the current snapshot's file,
   * verifying every block they touch (a read that is not block-aligned reads the whole
   * blocks at its ends), and returns them only if all pass.
   */
  #readVerified(file: CurrentSnapshot, offset: number, length: number): Uint8Array {
    if (length === 0) return new Uint8Array(0);
    const firstBlock = Math.floor(offset / snapshotBlockBytes);
    const endBlock = Math.ceil((offset + length) / snapshotBlockBytes);
    const start = firstBlock * snapshotBlockBytes;
    const end = Math.min(endBlock * snapshotBlockBytes, file.meta.bytes);
    const data = this.#readFile(file, start, end - start);
    for (let block = firstBlock; block < endBlock; block++) {
      const from = block * snapshotBlockBytes - start;
      const problem = this.#verifyBlock(
        file,
        block,
        data.subarray(from, from + snapshotBlockBytes),
      );
      if (problem !== undefined) throw problem;
    }
    return data.subarray(offset - start, offset - start + length);
  }

  /** readFile reads a range of the snapshot file; a file cut short is corruption. */
  #readFile(file: SnapshotFile, position: number, length: number): Uint8Array {
    const data = readUpTo(file.fd, file.path, length, position);
    if (data.length < length) {
      throw this.#corruption(
        "snapshot",
        `Snapshot file "${file.path}" ends at byte ${position + data.length}, before byte ` +
          `${position + length} that snapshot ${describe(file.meta)} holds: the data dir is ` +
          `damaged`,
        { path: file.path, index: file.meta.index },
      );
    }
    return data;
  }

  /** verifyBlock checks one block's bytes against its checksum; undefined if they pass. */
  #verifyBlock(
    file: CurrentSnapshot,
    block: number,
    data: Uint8Array,
  ): StorageCorruptionError | undefined {
    const stored = checksumAt(file.sums.blockChecksums, block);
    const computed = blockChecksum(data, block);
    if (computed === stored) return undefined;
    const offset = block * snapshotBlockBytes;
    return this.#corruption(
      "snapshot-chunk",
      `Snapshot file "${file.path}" of snapshot ${describe(file.meta)}: bytes ${offset} to ` +
        `${offset + data.length} (block ${block}) fail their checksum: stored ${
          hex(stored)
        }, computed ${hex(computed)}: the data dir is damaged`,
      { path: file.path, index: file.meta.index, offset },
    );
  }

  /** currentFile is the current snapshot's open file, or undefined without a snapshot. */
  #currentFile(): CurrentSnapshot | undefined {
    const stored = this.#readSnapshot();
    const current = this.#current;
    assert(
      stored?.generation === current?.generation &&
        (stored === undefined || current === undefined || sameSnapshot(stored.meta, current.meta)),
      "the snapshot row changes only with the storage's current file",
    );
    return current;
  }

  /** createSnapshotFile creates the file of a new snapshot, under a new generation. */
  #createSnapshotFile(meta: SnapshotMeta): SnapshotFile {
    const generation = this.#nextGeneration++;
    const path = join(this.#snapshotsDir, snapshotFileName(meta, generation));
    return { meta, generation, path, fd: createFile(path) };
  }

  /** continuedStaging is the staging a chunk at `offset` > 0 continues; it throws if none. */
  #continuedStaging(meta: SnapshotMeta, offset: number): StagedSnapshot {
    const staged = this.#staged;
    if (staged === undefined || !sameSnapshot(staged.meta, meta)) {
      throw new Error(
        `Snapshot chunk at offset ${offset} for snapshot ${describe(meta)} has no staged ` +
          `start (staged: ${staged === undefined ? "none" : describe(staged.meta)})`,
      );
    }
    if (offset !== staged.received) {
      throw new Error(
        `Snapshot chunk at offset ${offset} is not contiguous with the ${staged.received} ` +
          `bytes staged for snapshot ${describe(meta)}`,
      );
    }
    return staged;
  }

  /** restartStaging discards any staging and starts a new one, with a new empty file. */
  #restartStaging(meta: SnapshotMeta): StagedSnapshot {
    if (this.#staged !== undefined) this.#discard(this.#staged);
    this.#staged = undefined;
    const file = this.#createSnapshotFile(meta);
    this.#staged = {
      ...file,
      hasher: new BlockHasher(meta.bytes),
      received: 0,
      unflushed: 0,
      flushing: false,
      flushError: undefined,
    };
    return this.#staged;
  }

  /** makeDurable syncs a file's bytes and its directory entry, before a row names it. */
  #makeDurable(file: SnapshotFile): void {
    syncData(file.fd, file.path);
    fsyncDirectory(this.#snapshotsDir);
  }

  /**
   * replaceCurrent follows the commit that made `file` the current snapshot: it syncs that
   * commit, then removes the old file. Not before the sync: a power loss could take the
   * commit back, and the old row would name a file that is gone.
   */
  #replaceCurrent(file: SnapshotFile, sums: SnapshotSums): void {
    const old = this.#current;
    this.#current = {
      meta: file.meta,
      generation: file.generation,
      path: file.path,
      fd: file.fd,
      sums,
    };
    this.#syncWal();
    if (old !== undefined) this.#discard(old);
  }

  /**
   * discard removes a file that does not count (or no longer does) and closes it. Freeing
   * a big file's blocks takes the filesystem tens of milliseconds (~70 ms for 100 MB on
   * ext4): unlinked first, the file is freed by the close, which runs off the event loop.
   */
  #discard(file: SnapshotFile): void {
    removeQuietly(file.path);
    closeInBackground(file.fd);
  }
}

function prepareStatements(db: Database) {
  // Statement<Row, [params]>: params are named ($name), bound without the prefix (strict).
  type Params = Record<string, string | number | bigint | Uint8Array | null>;
  const prepare = <Row>(sql: string): Statement<Row, [Params]> => db.prepare<Row, [Params]>(sql);
  const prepareNoParams = <Row>(sql: string): Statement<Row, []> => db.prepare<Row, []>(sql);
  return {
    selectMeta: prepareNoParams<MetaRow>(
      "SELECT name, incarnation, status, checksum FROM meta WHERE id = 1",
    ),
    insertMeta: prepare<never>(
      "INSERT INTO meta (id, name, incarnation, status, created_at, checksum) " +
        "VALUES (1, $name, $incarnation, $status, $created_at, $checksum)",
    ),
    updateStatus: prepare<never>(
      "UPDATE meta SET status = $status, checksum = $checksum WHERE id = 1",
    ),
    selectNonEmpty: prepareNoParams<{ non_empty: bigint }>(
      "SELECT EXISTS (SELECT 1 FROM hard_state WHERE term > 0) " +
        "OR EXISTS (SELECT 1 FROM log) " +
        "OR EXISTS (SELECT 1 FROM snapshot) AS non_empty",
    ),
    selectHardState: prepareNoParams<HardStateRow>(
      "SELECT term, voted_for, commit_index, checksum FROM hard_state WHERE id = 1",
    ),
    upsertHardState: prepare<never>(
      "INSERT INTO hard_state (id, term, voted_for, commit_index, checksum) " +
        "VALUES (1, $term, $voted_for, $commit_index, $checksum) ON CONFLICT (id) DO UPDATE " +
        "SET term = excluded.term, voted_for = excluded.voted_for, " +
        "commit_index = excluded.commit_index, checksum = excluded.checksum",
    ),
    selectEntries: prepareNoParams<EntryRow>(
      'SELECT "index", term, kind, data, checksum FROM log ORDER BY "index"',
    ),
    selectEntry: prepare<EntryRow>(
      'SELECT "index", term, kind, data, checksum FROM log WHERE "index" = $index',
    ),
    selectEntriesAfter: db.prepare<EntryRow, [bigint, number]>(
      'SELECT "index", term, kind, data, checksum FROM log WHERE "index" > ?1 ' +
        'ORDER BY "index" LIMIT ?2',
    ),
    // Positional: binding an object per entry is measurably slower on the hot path.
    insertEntry: db.prepare<never, [number, number, EntryKind, Uint8Array, bigint]>(
      'INSERT INTO log ("index", term, kind, data, checksum) VALUES (?1, ?2, ?3, ?4, ?5)',
    ),
    deleteEntriesFrom: prepare<never>('DELETE FROM log WHERE "index" >= $index'),
    deleteEntriesBefore: prepare<never>('DELETE FROM log WHERE "index" < $index'),
    deleteAllEntries: prepareNoParams<never>("DELETE FROM log"),
    selectSnapshot: prepareNoParams<SnapshotRow>(
      'SELECT "index", term, bytes, generation, block_bytes, file_checksum, checksum ' +
        "FROM snapshot WHERE id = 1",
    ),
    selectSnapshotBlocks: prepareNoParams<{ block_checksums: Uint8Array }>(
      "SELECT block_checksums FROM snapshot WHERE id = 1",
    ),
    upsertSnapshot: prepare<never>(
      'INSERT INTO snapshot (id, "index", term, bytes, generation, block_bytes, ' +
        "block_checksums, file_checksum, checksum) VALUES (1, $index, $term, $bytes, " +
        "$generation, $block_bytes, $block_checksums, $file_checksum, $checksum) " +
        'ON CONFLICT (id) DO UPDATE SET "index" = excluded."index", term = excluded.term, ' +
        "bytes = excluded.bytes, generation = excluded.generation, " +
        "block_bytes = excluded.block_bytes, block_checksums = excluded.block_checksums, " +
        "file_checksum = excluded.file_checksum, checksum = excluded.checksum",
    ),
    writeProbe: prepare<never>(
      "INSERT INTO probe (id, written_at) VALUES (1, $written_at) " +
        "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
    ),
  };
}

function checkCount(value: number, what: string): void {
  assert(Number.isSafeInteger(value) && value >= 0, `${what} must be a safe integer >= 0`);
}

function checkEntry(entry: Entry): void {
  assert(Number.isSafeInteger(entry.index) && entry.index >= 1, "entry index must be >= 1");
  assert(Number.isSafeInteger(entry.term) && entry.term >= 1, "entry term must be >= 1");
}

function checkSnapshotMeta(meta: SnapshotMeta): void {
  assert(Number.isSafeInteger(meta.index) && meta.index >= 1, "snapshot index must be >= 1");
  assert(Number.isSafeInteger(meta.term) && meta.term >= 1, "snapshot term must be >= 1");
  checkCount(meta.bytes, "snapshot bytes");
}

/** flushBehind starts a background fdatasync of the staged file's bytes written so far. */
function flushBehind(staged: StagedSnapshot): void {
  staged.flushing = true;
  staged.unflushed = 0;
  flushInBackground(staged.path, (error) => {
    staged.flushing = false;
    // After a discard the file may be gone (ENOENT): the staging no longer matters then.
    if (error !== null) staged.flushError ??= error;
  });
}

/** snapshotParams binds a snapshot file's meta, generation and checksums to its row. */
function snapshotParams(
  file: SnapshotFile,
  sums: SnapshotSums,
): Record<string, number | bigint | Uint8Array> {
  const { index, term, bytes } = file.meta;
  const fields = {
    index,
    term,
    bytes,
    generation: file.generation,
    blockBytes: snapshotBlockBytes,
    fileChecksum: sums.fileChecksum,
  };
  return {
    index,
    term,
    bytes,
    generation: file.generation,
    block_bytes: snapshotBlockBytes,
    block_checksums: sums.blockChecksums,
    file_checksum: sums.fileChecksum,
    checksum: snapshotRowChecksum(fields),
  };
}

/**
 * hashInBackground feeds the parts to the hasher a slice at a time, letting the event
 * loop run between slices.
 */
async function hashInBackground(hasher: BlockHasher, parts: readonly Uint8Array[]): Promise<void> {
  for (const part of parts) {
    for (let offset = 0; offset < part.length; offset += hashSliceBytes) {
      if (offset > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      hasher.update(part.subarray(offset, offset + hashSliceBytes));
    }
  }
}

/** collectCorruption runs `work`, adding a StorageCorruptionError it throws to `problems`. */
function collectCorruption(problems: StorageCorruptionError[], work: () => unknown): void {
  try {
    work();
  } catch (error: unknown) {
    if (!(error instanceof StorageCorruptionError)) throw error;
    problems.push(error);
  }
}

/** safeOrUndefined is a stored integer as a number, or undefined if rot made it unsafe. */
function safeOrUndefined(value: bigint): number | undefined {
  const number = Number(value);
  return Number.isSafeInteger(number) ? number : undefined;
}

function sameSnapshot(a: SnapshotMeta, b: SnapshotMeta): boolean {
  return a.index === b.index && a.term === b.term && a.bytes === b.bytes;
}

function describe(meta: SnapshotMeta): string {
  return `{index ${meta.index}, term ${meta.term}, ${meta.bytes} bytes}`;
}

function toEntry(row: EntryRow): Entry {
  return {
    index: toSafeInteger(row.index, "entry index"),
    term: toSafeInteger(row.term, "entry term"),
    kind: toKind(row.kind),
    data: row.data,
  };
}

function toKind(kind: string): EntryKind {
  assert(kind === "noop" || kind === "command" || kind === "fence", `unknown kind "${kind}"`);
  return kind;
}

function toStatus(status: string): NodeStatus {
  assert(status === "normal" || status === "recovering", `unknown status "${status}"`);
  return status;
}

/** newIncarnation is 128 random bits as 32 hex digits. */
/**
 * newIncarnation: 48 bits of creation time (ms, hex) then 80 random bits, 32 hex digits.
 * Incarnations of one member thus order by creation (consensus/fences.ts): a replaced
 * host's incarnation is older than its replacement's.
 */
export function newIncarnation(now: number = Date.now()): string {
  const time = Math.floor(now).toString(16).padStart(12, "0").slice(-12);
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return time + Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function fileBytes(path: string): number {
  return statSync(path, { throwIfNoEntry: false })?.size ?? 0;
}

/** WalFile is our fd on the WAL, its inode, and how many fdatasyncs on it are running. */
interface WalFile {
  fd: number;
  ino: number;
  syncing: number;
}

/** lockFileName is the data dir's lock, held by the one process that has it open. */
export const lockFileName = "keel.lock";

/**
 * lockDataDir takes the data dir's lock: an exclusive SQLite transaction, kept open, on
 * `<dir>/keel.lock` (a POSIX lock the kernel drops when the process dies). Two keel
 * processes on one data dir would be one member twice; the second is refused here. The
 * database itself stays readable by an operator's sqlite3.
 */
function lockDataDir(dir: string): Database {
  const path = join(dir, lockFileName);
  const lock = new Database(path, { create: true });
  try {
    lock.run("PRAGMA locking_mode = EXCLUSIVE");
    lock.run("BEGIN EXCLUSIVE");
  } catch (error: unknown) {
    lock.close();
    const code = (error as { code?: unknown }).code;
    if (code === "SQLITE_BUSY" || /locked/.test(String(error))) {
      throw new Error(
        `Data dir "${dir}" is in use by another keel process (it holds ${path}): stop that ` +
          "one first, or give this one its own data dir",
        { cause: error },
      );
    }
    throw error;
  }
  return lock;
}

/** quarantinePrefix starts the name of the directory a quarantined data dir's files go to. */
export const quarantinePrefix = "quarantined-";

/** QuarantineReport says where quarantineDataDir put the files, and which. */
export interface QuarantineReport {
  /** The directory holding them: `<dir>/quarantined-<time>`. */
  path: string;
  moved: string[];
}

/**
 * quarantineDataDir moves the storage's files (the database, its WAL and shared memory,
 * the snapshots) out of the way, into `<dir>/quarantined-<time>/` with a note of `reason`,
 * so that the next SqliteStorage.open(dir) finds an empty data dir. Nothing is deleted:
 * the files are kept for forensics (and nothing keel does removes them). They move
 * within the data dir, which works where it is a mount point of its own (a sibling could
 * not be renamed onto); the space they take is not freed. It takes the data dir's lock,
 * so the storage must be closed first; the renames and the directory are synced before
 * it returns.
 */
export function quarantineDataDir(
  dir: string,
  reason: string,
  now: Date = new Date(),
): QuarantineReport {
  const lock = lockDataDir(dir);
  try {
    const stamp = now.toISOString().replace(/[:.]/g, "-");
    let path = join(dir, `${quarantinePrefix}${stamp}`);
    for (let n = 1; existsSync(path); n++) path = join(dir, `${quarantinePrefix}${stamp}-${n}`);
    mkdirSync(path);
    writeFileSync(
      join(path, "REASON.txt"),
      `Quarantined by keel at ${now.toISOString()}: ${reason}\n`,
      { flush: true },
    );
    const moved: string[] = [];
    // Crash part way: with the snapshots gone first, a database that had one refuses to
    // open (its file is missing), so the caller quarantines again; with the database
    // gone, SQLite makes a new one and discards the WAL left behind (its frames are not
    // the new file's): the data dir is empty, never an older state of itself.
    const names = [
      snapshotsDirName,
      databaseFileName,
      `${databaseFileName}-wal`,
      `${databaseFileName}-shm`,
    ];
    for (const name of names) {
      if (!existsSync(join(dir, name))) continue;
      renameSync(join(dir, name), join(path, name));
      moved.push(name);
    }
    fsyncDirectory(path);
    fsyncDirectory(dir);
    return { path, moved };
  } finally {
    lock.close();
  }
}

/** openWal opens the database's WAL file for fdatasync. */
function openWal(path: string): WalFile {
  const fd = openSync(`${path}-wal`, "r");
  return { fd, ino: fstatSync(fd).ino, syncing: 0 };
}
