// The on-disk layout of a keel data dir's database, and its migrations.
//
// The schema version lives in SQLite's `user_version` header field. Each migration runs in
// one transaction together with the version bump, so a crash leaves either the old or the
// new schema, never half of one. A keel that finds a newer version refuses to open it:
// an older binary must not guess at a layout it does not know.

import type { Database } from "bun:sqlite";
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import type { SnapshotMeta } from "../consensus/types.ts";
import { assert } from "../lib/assert.ts";
import {
  BlockHasher,
  entryChecksum,
  hardStateChecksum,
  metaChecksum,
  snapshotBlockBytes,
  snapshotRowChecksum,
} from "./checksum.ts";
import {
  createFile,
  ensureSnapshotsDir,
  fsyncDirectory,
  readUpTo,
  snapshotFileName,
  snapshotsDirName,
  syncData,
  writeAt,
} from "./snapshot_files.ts";
import { StorageCorruptionError } from "./storage.ts";

/** Migration is one step from a schema version to the next. */
interface Migration {
  /**
   * prepare runs before the transaction, for work outside the database (files). A crash
   * may stop it, or come after it but before the transaction commits; the next open then
   * runs it again, so it must be harmless to repeat.
   */
  prepare?: (db: Database, dataDir: string) => void;
  /** sql runs in the transaction that bumps the version. */
  sql?: string;
  /**
   * run runs after sql, in the same transaction, for what SQL alone cannot do (computing
   * checksums); it returns what it did, in words, for the caller's log.
   */
  run?: (db: Database, dataDir: string) => string;
  /** vacuum: the migration frees much of the file, so it is rewritten once committed. */
  vacuum?: boolean;
}

/**
 * migratedGeneration is the generation of the snapshot file that the migration to version 2
 * exports: the only file at that point, so any generation would do.
 */
const migratedGeneration = 1;

/**
 * migrations[i] moves the schema from version i to version i + 1.
 *
 * Version 3 (the current layout):
 * - meta: the identity (R0), one row.
 * - hard_state: term, vote and commit index, one row.
 * - log: entries keyed by their Raft index (the rowid, so range deletes are cheap).
 * - snapshot: the current snapshot's meta, at most one row. Its bytes are the file
 *   `snapshots/<index>-<term>-<generation>.snap` (snapshot_files.ts); committing the row is
 *   what makes a written file the current snapshot. An incoming snapshot being staged has
 *   no row: staging does not outlive the process (its file is not synced, and Raft starts
 *   a transfer over after a restart).
 * - probe: written by probeWrite() for health checks.
 * Every row of meta, hard_state, log and snapshot carries a `checksum` (checksum.ts) of
 * its values; the snapshot row also holds the checksums of its file's 64 KiB blocks
 * (`block_checksums`, 8 bytes each) and a `file_checksum` over those.
 *
 * Version 2 was version 3 without the checksums. Moving to version 3 rebuilds the four
 * tables with them, computed from what is stored (reading the current snapshot's file).
 *
 * Version 1 kept snapshot bytes in the database: snapshot rows 'current' and 'staged', and
 * their bytes in snapshot_chunk (1 MiB rows). Moving to version 2 writes the current
 * snapshot's bytes to its file first (prepare), then swaps the tables.
 *
 * Every table is STRICT: an integer column refuses a non-integer instead of coercing it.
 */
const migrations: readonly Migration[] = [
  {
    sql: `
    CREATE TABLE meta (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      name TEXT NOT NULL CHECK (name <> ''),
      incarnation TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('normal', 'recovering')),
      created_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE hard_state (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      term INTEGER NOT NULL CHECK (term >= 0),
      voted_for TEXT,
      commit_index INTEGER NOT NULL CHECK (commit_index >= 0)
    ) STRICT;

    CREATE TABLE log (
      "index" INTEGER PRIMARY KEY CHECK ("index" >= 1),
      term INTEGER NOT NULL CHECK (term >= 1),
      kind TEXT NOT NULL CHECK (kind IN ('noop', 'command', 'fence')),
      data BLOB NOT NULL
    ) STRICT;

    CREATE TABLE snapshot (
      id INTEGER PRIMARY KEY,
      state TEXT NOT NULL UNIQUE CHECK (state IN ('current', 'staged')),
      "index" INTEGER NOT NULL CHECK ("index" >= 1),
      term INTEGER NOT NULL CHECK (term >= 1),
      bytes INTEGER NOT NULL CHECK (bytes >= 0),
      received INTEGER NOT NULL CHECK (received >= 0 AND received <= bytes)
    ) STRICT;

    CREATE TABLE snapshot_chunk (
      snapshot_id INTEGER NOT NULL REFERENCES snapshot (id),
      byte_offset INTEGER NOT NULL CHECK (byte_offset >= 0),
      data BLOB NOT NULL CHECK (length(data) BETWEEN 1 AND 1048576),
      PRIMARY KEY (snapshot_id, byte_offset)
    ) STRICT;

    CREATE TABLE probe (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      written_at TEXT NOT NULL
    ) STRICT;
    `,
  },
  {
    prepare: exportVersion1Snapshot,
    // A staged (incoming) snapshot is dropped: its transfer starts over.
    sql: `
    DROP TABLE snapshot_chunk;

    CREATE TABLE snapshot_file (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      "index" INTEGER NOT NULL CHECK ("index" >= 1),
      term INTEGER NOT NULL CHECK (term >= 1),
      bytes INTEGER NOT NULL CHECK (bytes >= 0),
      generation INTEGER NOT NULL CHECK (generation >= 1)
    ) STRICT;

    INSERT INTO snapshot_file (id, "index", term, bytes, generation)
      SELECT 1, "index", term, bytes, ${migratedGeneration} FROM snapshot
      WHERE state = 'current';

    DROP TABLE snapshot;
    ALTER TABLE snapshot_file RENAME TO snapshot;
    `,
    vacuum: true,
  },
  {
    sql: `
    CREATE TABLE meta_v3 (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      name TEXT NOT NULL CHECK (name <> ''),
      incarnation TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('normal', 'recovering')),
      created_at TEXT NOT NULL,
      checksum INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE hard_state_v3 (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      term INTEGER NOT NULL CHECK (term >= 0),
      voted_for TEXT,
      commit_index INTEGER NOT NULL CHECK (commit_index >= 0),
      checksum INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE log_v3 (
      "index" INTEGER PRIMARY KEY CHECK ("index" >= 1),
      term INTEGER NOT NULL CHECK (term >= 1),
      kind TEXT NOT NULL CHECK (kind IN ('noop', 'command', 'fence')),
      data BLOB NOT NULL,
      checksum INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE snapshot_v3 (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      "index" INTEGER NOT NULL CHECK ("index" >= 1),
      term INTEGER NOT NULL CHECK (term >= 1),
      bytes INTEGER NOT NULL CHECK (bytes >= 0),
      generation INTEGER NOT NULL CHECK (generation >= 1),
      block_bytes INTEGER NOT NULL CHECK (block_bytes >= 1),
      block_checksums BLOB NOT NULL,
      file_checksum INTEGER NOT NULL,
      checksum INTEGER NOT NULL
    ) STRICT;
    `,
    run: addChecksums,
    vacuum: true,
  },
];

/** schemaVersion is the version this build creates and understands. */
export const schemaVersion = migrations.length;

/** MigrationReport says what opening a data dir of an older schema version did to it. */
export interface MigrationReport {
  fromVersion: number;
  toVersion: number;
  /** What the steps did, in words (one per step that says anything). */
  notes: string[];
}

/**
 * migrate brings the database at `path`, in data dir `dataDir`, to `targetVersion` (tests
 * build older layouts with it). It throws if the database is newer than this build, or is
 * not a keel database at all. It returns what it did to an existing database, or
 * undefined if there was nothing to do or the database was new (version 0).
 */
export function migrate(
  db: Database,
  path: string,
  dataDir: string,
  targetVersion: number = schemaVersion,
): MigrationReport | undefined {
  assert(targetVersion <= schemaVersion, `no schema version ${targetVersion}`);
  const version = userVersion(db);
  if (version > schemaVersion) {
    throw new Error(
      `Database "${path}" has schema version ${version}, newer than version ${schemaVersion} ` +
        `that this keel understands: run a newer keel`,
    );
  }
  if (version === 0) {
    const row = db.query<{ count: bigint }, []>(
      "SELECT count(*) AS count FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
    ).get();
    if (row !== null && row.count !== 0n) {
      throw new Error(`Database "${path}" is not a keel database: it has tables but no version`);
    }
  }
  const notes: string[] = [];
  for (let next = version; next < targetVersion; next++) {
    const migration = migrations[next];
    if (migration === undefined) throw new RangeError(`No migration from version ${next}`);
    migration.prepare?.(db, dataDir);
    db.transaction(() => {
      if (migration.sql !== undefined) db.run(migration.sql);
      const note = migration.run?.(db, dataDir);
      if (note !== undefined && version > 0) notes.push(note);
      // user_version is part of the database header, so it commits with the migration.
      db.run(`PRAGMA user_version = ${next + 1}`);
    }).immediate();
    if (migration.vacuum === true) {
      // Outside any transaction, as VACUUM must be; a crash before it only leaves free
      // pages. In WAL mode the file shrinks at a checkpoint: run one now.
      db.run("VACUUM");
      db.run("PRAGMA wal_checkpoint(TRUNCATE)");
    }
  }
  if (version === 0 || version >= targetVersion) return undefined;
  return { fromVersion: version, toVersion: targetVersion, notes };
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

function userVersion(db: Database): number {
  const row = db.query<{ user_version: bigint | number }, []>("PRAGMA user_version").get();
  if (row === null) throw new Error("PRAGMA user_version returned no row");
  return Number(row.user_version);
}

/**
 * exportVersion1Snapshot writes a version 1 database's current snapshot out to the file
 * that version 2 names for it, durably, before the migration drops its chunks. Repeating
 * it (after a crash) rewrites the same file with the same bytes. The file is named by no
 * row until the migration commits, and the migration's commit needs no sync of its own:
 * if a power loss takes it back, the chunks are still there and the export runs again.
 */
function exportVersion1Snapshot(db: Database, dataDir: string): void {
  const row = db.query<{ id: bigint; index: bigint; term: bigint; bytes: bigint }, []>(
    `SELECT id, "index", term, bytes FROM snapshot WHERE state = 'current'`,
  ).get();
  if (row === null) return;
  const meta: SnapshotMeta = {
    index: toSafeInteger(row.index, "snapshot index"),
    term: toSafeInteger(row.term, "snapshot term"),
    bytes: toSafeInteger(row.bytes, "snapshot bytes"),
  };
  const dir = ensureSnapshotsDir(dataDir);
  const path = join(dir, snapshotFileName(meta, migratedGeneration));
  const chunks = db.query<{ byte_offset: bigint; data: Uint8Array }, [{ id: bigint }]>(
    "SELECT byte_offset, data FROM snapshot_chunk WHERE snapshot_id = $id ORDER BY byte_offset",
  );
  const fd = createFile(path);
  try {
    let position = 0;
    for (const chunk of chunks.iterate({ id: row.id })) {
      const offset = toSafeInteger(chunk.byte_offset, "byte offset");
      assert(
        offset === position,
        `snapshot ${meta.index} pieces must be contiguous at ${position}`,
      );
      writeAt(fd, path, chunk.data, position);
      position += chunk.data.length;
    }
    assert(
      position === meta.bytes,
      `snapshot ${meta.index} must hold ${meta.bytes} bytes, found ${position}`,
    );
    syncData(fd, path);
  } finally {
    closeSync(fd);
    chunks.finalize();
  }
  fsyncDirectory(dir);
}

/**
 * addChecksums fills version 3's tables from version 2's, computing every row's checksum
 * from what is stored, and the current snapshot's block checksums from its file. It
 * cannot tell bytes that rotted before it ran from good ones: it vouches for the data dir
 * as it finds it. The tables are rebuilt rather than altered so that `checksum` is NOT
 * NULL with no default: a row written without one is refused, not given a wrong one.
 */
function addChecksums(db: Database, dataDir: string): string {
  const metas = db.query<
    { id: bigint; name: string; incarnation: string; status: string; created_at: string },
    []
  >("SELECT id, name, incarnation, status, created_at FROM meta").all();
  for (const row of metas) {
    db.run(
      "INSERT INTO meta_v3 (id, name, incarnation, status, created_at, checksum) " +
        "VALUES (?, ?, ?, ?, ?, ?)",
      [
        row.id,
        row.name,
        row.incarnation,
        row.status,
        row.created_at,
        metaChecksum(row.name, row.incarnation, row.status),
      ],
    );
  }
  const hardStates = db.query<
    { id: bigint; term: bigint; voted_for: string | null; commit_index: bigint },
    []
  >("SELECT id, term, voted_for, commit_index FROM hard_state").all();
  for (const row of hardStates) {
    db.run(
      "INSERT INTO hard_state_v3 (id, term, voted_for, commit_index, checksum) " +
        "VALUES (?, ?, ?, ?, ?)",
      [
        row.id,
        row.term,
        row.voted_for,
        row.commit_index,
        hardStateChecksum(row.term, row.voted_for, row.commit_index),
      ],
    );
  }
  const entries = db.query<{ index: bigint; term: bigint; kind: string; data: Uint8Array }, []>(
    'SELECT "index", term, kind, data FROM log ORDER BY "index"',
  );
  const insertEntry = db.prepare<never, [bigint, bigint, string, Uint8Array, bigint]>(
    'INSERT INTO log_v3 ("index", term, kind, data, checksum) VALUES (?1, ?2, ?3, ?4, ?5)',
  );
  let entryCount = 0;
  for (const row of entries.iterate()) {
    insertEntry.run(
      row.index,
      row.term,
      row.kind,
      row.data,
      entryChecksum(row.index, row.term, row.kind, row.data),
    );
    entryCount++;
  }
  entries.finalize();
  insertEntry.finalize();
  const snapshot = db.query<
    { id: bigint; index: bigint; term: bigint; bytes: bigint; generation: bigint },
    []
  >('SELECT id, "index", term, bytes, generation FROM snapshot').get();
  let snapshotNote = "no snapshot";
  if (snapshot !== null) {
    const meta: SnapshotMeta = {
      index: toSafeInteger(snapshot.index, "snapshot index"),
      term: toSafeInteger(snapshot.term, "snapshot term"),
      bytes: toSafeInteger(snapshot.bytes, "snapshot bytes"),
    };
    const generation = toSafeInteger(snapshot.generation, "snapshot generation");
    const path = join(dataDir, snapshotsDirName, snapshotFileName(meta, generation));
    const { blockChecksums, fileChecksum } = hashSnapshotFile(path, meta);
    db.run(
      'INSERT INTO snapshot_v3 (id, "index", term, bytes, generation, block_bytes, ' +
        "block_checksums, file_checksum, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      [
        snapshot.id,
        snapshot.index,
        snapshot.term,
        snapshot.bytes,
        snapshot.generation,
        snapshotBlockBytes,
        blockChecksums,
        fileChecksum,
        snapshotRowChecksum({
          index: snapshot.index,
          term: snapshot.term,
          bytes: snapshot.bytes,
          generation: snapshot.generation,
          blockBytes: snapshotBlockBytes,
          fileChecksum,
        }),
      ],
    );
    snapshotNote = `the ${meta.bytes}-byte snapshot at index ${meta.index} (file "${path}")`;
  }
  db.run(`
    DROP TABLE meta;
    DROP TABLE hard_state;
    DROP TABLE log;
    DROP TABLE snapshot;
    ALTER TABLE meta_v3 RENAME TO meta;
    ALTER TABLE hard_state_v3 RENAME TO hard_state;
    ALTER TABLE log_v3 RENAME TO log;
    ALTER TABLE snapshot_v3 RENAME TO snapshot;
  `);
  const rows = (count: number) => `${count} row${count === 1 ? "" : "s"}`;
  return `computed checksums of the meta (${rows(metas.length)}), the hard state ` +
    `(${rows(hardStates.length)}), ${entryCount} log entries and ${snapshotNote}`;
}

/** hashSnapshotFile computes a snapshot file's block checksums by reading it. */
function hashSnapshotFile(
  path: string,
  meta: SnapshotMeta,
): ReturnType<BlockHasher["finish"]> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error: unknown) {
    throw new StorageCorruptionError(
      "snapshot",
      `Snapshot file "${path}" of snapshot ${meta.index} cannot be opened to compute its ` +
        `checksums: ${error instanceof Error ? error.message : String(error)}`,
      { path, index: meta.index },
    );
  }
  try {
    const hasher = new BlockHasher(meta.bytes);
    const pieceBytes = 16 * snapshotBlockBytes;
    for (let position = 0; position < meta.bytes; position += pieceBytes) {
      const length = Math.min(pieceBytes, meta.bytes - position);
      const piece = readUpTo(fd, path, length, position);
      if (piece.length < length) {
        throw new StorageCorruptionError(
          "snapshot",
          `Snapshot file "${path}" ends at byte ${position + piece.length}, before the ` +
            `${meta.bytes} bytes of snapshot ${meta.index}: the data dir is damaged`,
          { path, index: meta.index },
        );
      }
      hasher.update(piece);
    }
    return hasher.finish();
  } finally {
    closeSync(fd);
  }
}
