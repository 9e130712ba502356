// SqliteStorage keeps a node's durable state in one SQLite database, `<dir>/keel.db`.
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

import { Database, type Statement } from "bun:sqlite";
import {
  closeSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
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
import { migrate, snapshotChunkBytesMax } from "./schema.ts";

/** databaseFileName is the database's file name inside the data dir. */
export const databaseFileName = "keel.db";

/** busyTimeoutMs bounds how long a statement waits for a lock held by another connection. */
const busyTimeoutMs = 5_000;

/**
 * walCheckMs: how often (at most) a sync checks that our fd is still the WAL file's. SQLite
 * keeps one WAL file while the database is open, so this is a guard, not a mechanism.
 */
const walCheckMs = 1_000;

/** walBytesMax is what a WAL file is truncated to after a checkpoint (after big snapshots). */
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
  id: bigint;
  index: bigint;
  term: bigint;
  bytes: bigint;
  received: bigint;
}

interface ChunkRow {
  byte_offset: bigint;
  data: Uint8Array;
}

interface MetaRow {
  name: string;
  incarnation: string;
  status: string;
}

type SnapshotState = "current" | "staged";

/** StoredSnapshot is a snapshot row: its meta, bytes received, and the id keying its chunks. */
interface StoredSnapshot {
  id: number;
  meta: SnapshotMeta;
  received: number;
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
  /** The WAL file, opened by us to fdatasync it (SQLite keeps it while the db is open). */
  #wal: WalFile;
  #walCheckedAt = 0;

  private constructor(path: string, db: Database) {
    this.path = path;
    this.#db = db;
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
    const isNew = statSync(path, { throwIfNoEntry: false }) === undefined;
    const db = new Database(path, { create: true, strict: true, safeIntegers: true });
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
      migrate(db, path);
      // A write makes SQLite create the WAL file (if this open did not), so it can be
      // opened and synced from here on.
      db.run(
        "INSERT INTO probe (id, written_at) VALUES (1, ?) " +
          "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
        [new Date().toISOString()],
      );
    } catch (error: unknown) {
      db.close();
      throw error;
    }
    // With synchronous=NORMAL SQLite does not sync the directory when it creates the WAL,
    // nor does anything sync the database file's entry or the data dir's: sync them so
    // the files survive power loss.
    fsyncDirectory(dir);
    if (isNew) fsyncDirectory(dirname(dir));
    const storage = new SqliteStorage(path, db);
    storage.#syncWal();
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
    const snapshot = this.#readSnapshot("current")?.meta;
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

  saveSnapshot(meta: SnapshotMeta, data: Uint8Array): void {
    checkSnapshotMeta(meta);
    assert(data.length === meta.bytes, "snapshot data length must equal meta.bytes");
    this.#db.transaction(() => {
      const current = this.#readSnapshot("current");
      assert(
        current === undefined || meta.index >= current.meta.index,
        `a snapshot must not move back: ${meta.index} < ${current?.meta.index}`,
      );
      // A snapshot of applied state covers entries this node has: it agrees with the log,
      // or (with the log gone after an install) with the snapshot it replaces.
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
      if (current !== undefined) this.#deleteSnapshot(current.id);
      const id = this.#insertSnapshot("current", meta, meta.bytes);
      this.#writeChunks(id, 0, data);
    }).immediate();
    this.#syncWal();
  }

  compactLog(index: number): void {
    assert(Number.isSafeInteger(index) && index >= 1, "compaction index must be >= 1");
    this.#db.transaction(() => {
      const snapshot = this.#readSnapshot("current")?.meta;
      assert(
        snapshot !== undefined && index <= snapshot.index,
        `the log can be compacted only up to the snapshot: ${index} > ${snapshot?.index}`,
      );
      this.#sql.deleteEntriesBefore.run({ index });
    }).immediate();
    this.#syncWal();
  }

  latestSnapshot(): SnapshotMeta | undefined {
    return this.#readSnapshot("current")?.meta;
  }

  readSnapshot(): { meta: SnapshotMeta; data: Uint8Array } | undefined {
    const current = this.#readSnapshot("current");
    if (current === undefined) return undefined;
    return { meta: current.meta, data: this.#readChunks(current, 0, current.meta.bytes) };
  }

  readSnapshotChunk(index: number, offset: number, length: number): Uint8Array {
    const current = this.#readSnapshot("current");
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
    return this.#readChunks(current, offset, Math.min(current.meta.bytes, offset + length));
  }

  stageSnapshotChunk(meta: SnapshotMeta, offset: number, data: Uint8Array): void {
    checkSnapshotMeta(meta);
    this.#db.transaction(() => {
      let staged = this.#readSnapshot("staged");
      if (offset === 0) {
        if (staged !== undefined) this.#deleteSnapshot(staged.id);
        const id = this.#insertSnapshot("staged", meta, 0);
        staged = { id, meta, received: 0 };
      } else if (staged === undefined || !sameSnapshot(staged.meta, meta)) {
        throw new Error(
          `Snapshot chunk at offset ${offset} for snapshot ${describe(meta)} has no staged ` +
            `start (staged: ${staged === undefined ? "none" : describe(staged.meta)})`,
        );
      } else if (offset !== staged.received) {
        throw new Error(
          `Snapshot chunk at offset ${offset} is not contiguous with the ${staged.received} ` +
            `bytes staged for snapshot ${describe(meta)}`,
        );
      }
      const received = offset + data.length;
      if (received > meta.bytes) {
        throw new RangeError(
          `Snapshot chunk ends at byte ${received}, past the snapshot's ${meta.bytes} bytes`,
        );
      }
      this.#writeChunks(staged.id, offset, data);
      this.#sql.updateReceived.run({ id: staged.id, received });
    }).immediate();
  }

  installStagedSnapshot(meta: SnapshotMeta): void {
    checkSnapshotMeta(meta);
    this.#db.transaction(() => {
      const staged = this.#readSnapshot("staged");
      assert(
        staged !== undefined && sameSnapshot(staged.meta, meta),
        `the staged snapshot must be ${describe(meta)} to install it`,
      );
      const stagedBytes = this.#sql.selectChunkBytes.get({ id: staged.id });
      assert(
        staged.received === meta.bytes &&
          stagedBytes !== null && toSafeInteger(stagedBytes.bytes, "bytes") === meta.bytes,
        `staged snapshot bytes must be complete (${staged.received} of ${meta.bytes})`,
      );
      const current = this.#readSnapshot("current");
      assert(
        current === undefined || meta.index >= current.meta.index,
        `an installed snapshot must not move back: ${meta.index} < ${current?.meta.index}`,
      );
      if (current !== undefined) this.#deleteSnapshot(current.id);
      this.#sql.promoteStaged.run({ id: staged.id });
      this.#sql.deleteAllEntries.run();
      this.#sql.raiseCommitIndex.run({ commit_index: meta.index });
    }).immediate();
    this.#syncWal();
  }

  probeWrite(): void {
    this.#sql.writeProbe.run({ written_at: new Date().toISOString() });
    this.#syncWal();
  }

  sizeBytes(): number {
    return fileBytes(this.path) + fileBytes(`${this.path}-wal`);
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
    const snapshot = this.#readSnapshot("current")?.meta;
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

  #readSnapshot(state: SnapshotState): StoredSnapshot | undefined {
    const row = this.#sql.selectSnapshot.get({ state });
    if (row === null) return undefined;
    return {
      id: toSafeInteger(row.id, "snapshot id"),
      meta: {
        index: toSafeInteger(row.index, "snapshot index"),
        term: toSafeInteger(row.term, "snapshot term"),
        bytes: toSafeInteger(row.bytes, "snapshot bytes"),
      },
      received: toSafeInteger(row.received, "snapshot received"),
    };
  }

  #insertSnapshot(state: SnapshotState, meta: SnapshotMeta, received: number): number {
    const row = this.#sql.insertSnapshot.get({
      state,
      index: meta.index,
      term: meta.term,
      bytes: meta.bytes,
      received,
    });
    assert(row !== null, "INSERT ... RETURNING returns the row");
    return toSafeInteger(row.id, "snapshot id");
  }

  #deleteSnapshot(id: number): void {
    this.#sql.deleteChunks.run({ id });
    this.#sql.deleteSnapshot.run({ id });
  }

  #writeChunks(id: number, offset: number, data: Uint8Array): void {
    for (let start = 0; start < data.length; start += snapshotChunkBytesMax) {
      const piece = data.subarray(start, start + snapshotChunkBytesMax);
      this.#sql.insertChunk.run({ id, byte_offset: offset + start, data: piece });
    }
  }

  // readChunks reads bytes [start, end) of a snapshot, touching only the pieces that
  // overlap that range: the last piece starting at or before `start`, and those after it.
  #readChunks(snapshot: StoredSnapshot, start: number, end: number): Uint8Array {
    const result = new Uint8Array(end - start);
    if (end === start) return result;
    const rows = this.#sql.selectChunks.all({ id: snapshot.id, start, end });
    let position = start;
    for (const row of rows) {
      const pieceOffset = toSafeInteger(row.byte_offset, "byte offset");
      const from = position - pieceOffset;
      assert(
        from >= 0 && from < row.data.length,
        `snapshot ${snapshot.meta.index} pieces must be contiguous at byte ${position}`,
      );
      const piece = row.data.subarray(from, Math.min(row.data.length, from + end - position));
      result.set(piece, position - start);
      position += piece.length;
    }
    assert(
      position === end,
      `snapshot ${snapshot.meta.index} must hold bytes up to ${end}, found ${position}`,
    );
    return result;
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
        "OR EXISTS (SELECT 1 FROM snapshot WHERE state = 'current') AS non_empty",
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
    selectSnapshot: prepare<SnapshotRow>(
      'SELECT id, "index", term, bytes, received FROM snapshot WHERE state = $state',
    ),
    insertSnapshot: prepare<{ id: bigint }>(
      'INSERT INTO snapshot (state, "index", term, bytes, received) ' +
        "VALUES ($state, $index, $term, $bytes, $received) RETURNING id",
    ),
    updateReceived: prepare<never>("UPDATE snapshot SET received = $received WHERE id = $id"),
    promoteStaged: prepare<never>("UPDATE snapshot SET state = 'current' WHERE id = $id"),
    deleteSnapshot: prepare<never>("DELETE FROM snapshot WHERE id = $id"),
    insertChunk: prepare<never>(
      "INSERT INTO snapshot_chunk (snapshot_id, byte_offset, data) " +
        "VALUES ($id, $byte_offset, $data)",
    ),
    selectChunks: prepare<ChunkRow>(
      "SELECT byte_offset, data FROM snapshot_chunk WHERE snapshot_id = $id " +
        "AND byte_offset < $end AND byte_offset >= coalesce((SELECT max(byte_offset) " +
        "FROM snapshot_chunk WHERE snapshot_id = $id AND byte_offset <= $start), 0) " +
        "ORDER BY byte_offset",
    ),
    selectChunkBytes: prepare<{ bytes: bigint }>(
      "SELECT coalesce(sum(length(data)), 0) AS bytes FROM snapshot_chunk " +
        "WHERE snapshot_id = $id",
    ),
    deleteChunks: prepare<never>("DELETE FROM snapshot_chunk WHERE snapshot_id = $id"),
    writeProbe: prepare<never>(
      "INSERT INTO probe (id, written_at) VALUES (1, $written_at) " +
        "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
    ),
  };
}

/** toSafeInteger converts an integer read from SQLite, crashing if it is not exact. */
export function toSafeInteger(value: unknown, what: string): number {
  assert(typeof value === "bigint", `${what} must be stored as an integer, found ${typeof value}`);
  assert(
    value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER),
    `${what} ${value} is beyond the safe integer range`,
  );
  return Number(value);
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

/** openWal opens the database's WAL file for fdatasync. */
function openWal(path: string): WalFile {
  const fd = openSync(`${path}-wal`, "r");
  return { fd, ino: fstatSync(fd).ino, syncing: 0 };
}

function fsyncDirectory(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
