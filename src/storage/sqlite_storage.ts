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

import { Database, type Statement } from "bun:sqlite";
import {
  close as closeInBackground,
  closeSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  mkdirSync,
  openSync,
  statSync,
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
import type { Identity, NodeStatus, NodeStorage, PersistBatch } from "./storage.ts";
import { migrate, toSafeInteger } from "./schema.ts";
import {
  createFile,
  directoryBytes,
  ensureSnapshotsDir,
  flushInBackground,
  fsyncDirectory,
  readAt,
  removeOrphans,
  removeQuietly,
  snapshotFileName,
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

interface HardStateRow {
  term: bigint;
  voted_for: string | null;
  commit_index: bigint;
}

interface EntryRow {
  index: bigint;
  term: bigint;
  kind: string;
  data: Uint8Array;
}

interface SnapshotRow {
  index: bigint;
  term: bigint;
  bytes: bigint;
  generation: bigint;
}

interface MetaRow {
  name: string;
  incarnation: string;
  status: string;
}

/** StoredSnapshot is the snapshot row: the meta, and the generation naming its file. */
interface StoredSnapshot {
  meta: SnapshotMeta;
  generation: number;
}

/** SnapshotFile is an open snapshot file: the current snapshot's, or one being staged. */
interface SnapshotFile {
  meta: SnapshotMeta;
  generation: number;
  path: string;
  fd: number;
}

/** StagedSnapshot is an incoming snapshot's file and how many of its bytes have arrived. */
interface StagedSnapshot extends SnapshotFile {
  received: number;
  /** Bytes written since the last background flush started. */
  unflushed: number;
  flushing: boolean;
  /** The first error a background flush met: the staged bytes may not be on disk. */
  flushError: Error | undefined;
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
  #current: SnapshotFile | undefined;
  /** The incoming snapshot being staged. Not in the database: it ends with the storage. */
  #staged: StagedSnapshot | undefined;
  /**
   * nextGeneration names the next snapshot file: above the current snapshot's generation,
   * and new for every file this process writes, so a new file never takes the name of one
   * that counts. (It may take a leftover's name, which no row names: that file is
   * truncated and rewritten.)
   */
  #nextGeneration = 1;

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
        if (status !== undefined) {
          const changes = this.#sql.updateStatus.run({ status }).changes;
          assert(changes === 1, "identity must be created before its status is set");
        }
      },
    );
  }

  /**
   * open opens (creating if needed) the database `<dir>/keel.db`. It throws if the
   * database was written by a newer keel or is not a keel database.
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
      migrate(db, path, dir);
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
    try {
      storage.#syncWal();
      storage.#openSnapshots();
    } catch (error: unknown) {
      storage.close();
      throw error;
    }
    return storage;
  }

  identity(name: string): Identity {
    assert(name !== "", "member name must not be empty");
    const identity = this.#db.transaction((): Identity => {
      const row = this.#sql.selectMeta.get();
      if (row === null) {
        const identity: Identity = { name, incarnation: newIncarnation(), status: "normal" };
        this.#sql.insertMeta.run({
          name,
          incarnation: identity.incarnation,
          status: identity.status,
          created_at: new Date().toISOString(),
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
      const row = this.#sql.selectMeta.get();
      assert(row !== null, "identity must be created before it is replaced");
      const incarnation = newIncarnation();
      this.#db.run("UPDATE meta SET incarnation = ?, status = 'recovering' WHERE id = 1", [
        incarnation,
      ]);
      return { name: row.name, incarnation, status: "recovering" };
    }).immediate();
    this.#syncWal();
    return identity;
  }

  setStatus(status: NodeStatus): void {
    const changes = this.#sql.updateStatus.run({ status }).changes;
    assert(changes === 1, "identity must be created before its status is set");
    this.#syncWal();
  }

  isEmpty(): boolean {
    const row = this.#sql.selectNonEmpty.get();
    assert(row !== null, "an aggregate query returns one row");
    return row.non_empty === 0n;
  }

  load(): RestoredState {
    const hardState = this.#readHardState() ?? { term: 0, votedFor: null, commitIndex: 0 };
    const snapshot = this.#readSnapshot()?.meta;
    const rows = this.#sql.selectEntries.all();
    const entries: Entry[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const entry = toEntry(rows[i]!);
      const previous = entries[i - 1];
      if (previous === undefined) {
        // Without a snapshot the log starts at 1; with one, it may keep entries before the
        // snapshot (compactLog) but must reach it.
        const startMax = snapshot === undefined ? 1 : snapshot.index + 1;
        assert(
          entry.index <= startMax && (snapshot !== undefined || entry.index === 1),
          `stored log must start at 1 or reach the snapshot: it starts at ${entry.index}, ` +
            `snapshot ${snapshot === undefined ? "none" : describe(snapshot)}`,
        );
      } else {
        assert(
          entry.index === previous.index + 1,
          `stored log must be contiguous: expected index ${
            previous.index + 1
          }, found ${entry.index}`,
        );
        assert(entry.term >= previous.term, `stored log terms must not decrease at ${entry.index}`);
      }
      if (snapshot !== undefined && entry.index === snapshot.index) {
        assert(entry.term === snapshot.term, `entry ${entry.index} must match the snapshot's term`);
      }
      if (snapshot !== undefined && entry.index === snapshot.index + 1) {
        assert(entry.term >= snapshot.term, `term must not decrease after the snapshot`);
      }
      entries[i] = entry;
    }
    const last = entries.at(-1);
    assert(
      last === undefined || snapshot === undefined || last.index >= snapshot.index,
      `stored log ends at ${last?.index}, before the snapshot at ${snapshot?.index}`,
    );
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
    const file = this.#createSnapshotFile(meta);
    try {
      writeAt(file.fd, file.path, data, 0);
      this.#makeDurable(file);
      this.#sql.upsertSnapshot.run(snapshotParams(file));
    } catch (error: unknown) {
      this.#discard(file);
      throw error;
    }
    this.#replaceCurrent(file);
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
    try {
      await writeInBackground(file.fd, file.path, parts);
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
    try {
      fsyncDirectory(this.#snapshotsDir);
      this.#sql.upsertSnapshot.run(snapshotParams(file));
    } catch (error: unknown) {
      this.#discard(file);
      throw error;
    }
    this.#replaceCurrent(file);
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
    const entry = this.#sql.selectEntryTerm.get({ index: meta.index });
    if (entry !== null) {
      assert(
        toSafeInteger(entry.term, "term") === meta.term,
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
    return { meta: current.meta, data: readAt(current.fd, current.path, current.meta.bytes, 0) };
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
    return readAt(current.fd, current.path, end - offset, offset);
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
    this.#makeDurable(staged);
    this.#db.transaction(() => {
      this.#sql.upsertSnapshot.run(snapshotParams(staged));
      this.#sql.deleteAllEntries.run();
      this.#sql.raiseCommitIndex.run({ commit_index: meta.index });
    }).immediate();
    this.#staged = undefined;
    this.#replaceCurrent(staged);
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

  #readHardState(): HardState | undefined {
    const row = this.#sql.selectHardState.get();
    if (row === null) return undefined;
    return {
      term: toSafeInteger(row.term, "term"),
      votedFor: row.voted_for,
      commitIndex: toSafeInteger(row.commit_index, "commitIndex"),
    };
  }

  // Invariants checked here (Raft §5.1, §5.2): the term never decreases, and a vote cast
  // in a term is never changed within that term.
  #writeHardState(hardState: HardState): void {
    checkCount(hardState.term, "term");
    checkCount(hardState.commitIndex, "commitIndex");
    assert(hardState.votedFor !== "", "votedFor must be a member name or null");
    const stored = this.#readHardState();
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
    this.#sql.upsertHardState.run({
      term: hardState.term,
      voted_for: hardState.votedFor,
      commit_index: hardState.commitIndex,
    });
  }

  // Invariant: the stored log stays contiguous, reaches the snapshot, and its terms never
  // decrease. entries[0] may overwrite stored entries (a conflict, §5.3): those from its
  // index on are dropped first. It must not reach into the snapshot, which holds only
  // committed entries.
  #writeEntries(entries: Entry[]): void {
    const first = entries[0]!;
    checkEntry(first);
    const snapshot = this.#readSnapshot()?.meta;
    const snapshotIndex = snapshot?.index ?? 0;
    assert(
      first.index > snapshotIndex,
      `entry ${first.index} must come after the snapshot at ${snapshotIndex}`,
    );
    let previousTerm = 0;
    const previousEntry = this.#sql.selectEntryTerm.get({ index: first.index - 1 });
    if (previousEntry !== null) {
      previousTerm = toSafeInteger(previousEntry.term, "term");
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
      insert.run(entry.index, entry.term, entry.kind, entry.data);
      previous = entry;
    }
  }

  #readSnapshot(): StoredSnapshot | undefined {
    const row = this.#sql.selectSnapshot.get();
    if (row === null) return undefined;
    return {
      meta: {
        index: toSafeInteger(row.index, "snapshot index"),
        term: toSafeInteger(row.term, "snapshot term"),
        bytes: toSafeInteger(row.bytes, "snapshot bytes"),
      },
      generation: toSafeInteger(row.generation, "snapshot generation"),
    };
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

  /** openCurrent opens the file the snapshot row names; it must hold the row's bytes. */
  #openCurrent(stored: StoredSnapshot): SnapshotFile {
    const path = join(this.#snapshotsDir, snapshotFileName(stored.meta, stored.generation));
    if (statSync(path, { throwIfNoEntry: false }) === undefined) {
      throw new Error(
        `Snapshot file "${path}" of snapshot ${describe(stored.meta)} is missing: ` +
          `the data dir is damaged`,
      );
    }
    const fd = openSync(path, "r");
    const bytes = fstatSync(fd).size;
    if (bytes !== stored.meta.bytes) {
      closeSync(fd);
      throw new Error(
        `Snapshot file "${path}" has ${bytes} bytes, but snapshot ${describe(stored.meta)} ` +
          `has ${stored.meta.bytes}: the data dir is damaged`,
      );
    }
    return { meta: stored.meta, generation: stored.generation, path, fd };
  }

  /** currentFile is the current snapshot's open file, or undefined without a snapshot. */
  #currentFile(): SnapshotFile | undefined {
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
    this.#staged = { ...file, received: 0, unflushed: 0, flushing: false, flushError: undefined };
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
  #replaceCurrent(file: SnapshotFile): void {
    const old = this.#current;
    this.#current = { meta: file.meta, generation: file.generation, path: file.path, fd: file.fd };
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
  type Params = Record<string, string | number | Uint8Array | null>;
  const prepare = <Row>(sql: string): Statement<Row, [Params]> => db.prepare<Row, [Params]>(sql);
  const prepareNoParams = <Row>(sql: string): Statement<Row, []> => db.prepare<Row, []>(sql);
  return {
    selectMeta: prepareNoParams<MetaRow>(
      "SELECT name, incarnation, status FROM meta WHERE id = 1",
    ),
    insertMeta: prepare<never>(
      "INSERT INTO meta (id, name, incarnation, status, created_at) " +
        "VALUES (1, $name, $incarnation, $status, $created_at)",
    ),
    updateStatus: prepare<never>("UPDATE meta SET status = $status WHERE id = 1"),
    selectNonEmpty: prepareNoParams<{ non_empty: bigint }>(
      "SELECT EXISTS (SELECT 1 FROM hard_state WHERE term > 0) " +
        "OR EXISTS (SELECT 1 FROM log) " +
        "OR EXISTS (SELECT 1 FROM snapshot) AS non_empty",
    ),
    selectHardState: prepareNoParams<HardStateRow>(
      "SELECT term, voted_for, commit_index FROM hard_state WHERE id = 1",
    ),
    upsertHardState: prepare<never>(
      "INSERT INTO hard_state (id, term, voted_for, commit_index) " +
        "VALUES (1, $term, $voted_for, $commit_index) ON CONFLICT (id) DO UPDATE SET " +
        "term = excluded.term, voted_for = excluded.voted_for, " +
        "commit_index = excluded.commit_index",
    ),
    raiseCommitIndex: prepare<never>(
      "INSERT INTO hard_state (id, term, voted_for, commit_index) " +
        "VALUES (1, 0, NULL, $commit_index) ON CONFLICT (id) DO UPDATE SET " +
        "commit_index = max(commit_index, excluded.commit_index)",
    ),
    selectEntries: prepareNoParams<EntryRow>(
      'SELECT "index", term, kind, data FROM log ORDER BY "index"',
    ),
    selectEntryTerm: prepare<{ term: bigint }>('SELECT term FROM log WHERE "index" = $index'),
    // Positional: binding an object per entry is measurably slower on the hot path.
    insertEntry: db.prepare<never, [number, number, EntryKind, Uint8Array]>(
      'INSERT INTO log ("index", term, kind, data) VALUES (?1, ?2, ?3, ?4)',
    ),
    deleteEntriesFrom: prepare<never>('DELETE FROM log WHERE "index" >= $index'),
    deleteEntriesBefore: prepare<never>('DELETE FROM log WHERE "index" < $index'),
    deleteAllEntries: prepareNoParams<never>("DELETE FROM log"),
    selectSnapshot: prepareNoParams<SnapshotRow>(
      'SELECT "index", term, bytes, generation FROM snapshot WHERE id = 1',
    ),
    upsertSnapshot: prepare<never>(
      'INSERT INTO snapshot (id, "index", term, bytes, generation) ' +
        "VALUES (1, $index, $term, $bytes, $generation) ON CONFLICT (id) DO UPDATE SET " +
        '"index" = excluded."index", term = excluded.term, bytes = excluded.bytes, ' +
        "generation = excluded.generation",
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

/** snapshotParams binds a snapshot file's meta and generation to the snapshot row. */
function snapshotParams(file: SnapshotFile): Record<string, number> {
  const { index, term, bytes } = file.meta;
  return { index, term, bytes, generation: file.generation };
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

/** openWal opens the database's WAL file for fdatasync. */
function openWal(path: string): WalFile {
  const fd = openSync(`${path}-wal`, "r");
  return { fd, ino: fstatSync(fd).ino, syncing: 0 };
}
