// The on-disk layout of a keel data dir's database, and its migrations.
//
// The schema version lives in SQLite's `user_version` header field. Each migration runs in
// one transaction together with the version bump, so a crash leaves either the old or the
// new schema, never half of one. A keel that finds a newer version refuses to open it:
// an older binary must not guess at a layout it does not know.

import type { Database } from "bun:sqlite";

/** snapshotChunkBytesMax bounds one stored piece of snapshot bytes (one row). */
export const snapshotChunkBytesMax = 1024 * 1024;

/**
 * migrations[i] moves the schema from version i to version i + 1.
 *
 * Version 1:
 * - meta: the identity (R0), one row.
 * - hard_state: term, vote and commit index, one row.
 * - log: entries keyed by their Raft index (the rowid, so range deletes are cheap).
 * - snapshot: at most two rows, the 'current' snapshot and one 'staged' (incoming) one.
 *   Their bytes live in snapshot_chunk under the snapshot's id, so installing a staged
 *   snapshot only relabels a row and never copies its bytes.
 * - probe: written by probeWrite() for health checks.
 *
 * Every table is STRICT: an integer column refuses a non-integer instead of coercing it.
 */
const migrations: readonly string[] = [
  `
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
    data BLOB NOT NULL CHECK (length(data) BETWEEN 1 AND ${snapshotChunkBytesMax}),
    PRIMARY KEY (snapshot_id, byte_offset)
  ) STRICT;

  CREATE TABLE probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    written_at TEXT NOT NULL
  ) STRICT;
  `,
];

/** schemaVersion is the version this build creates and understands. */
export const schemaVersion = migrations.length;

/**
 * migrate brings the database at `path` to schemaVersion. It throws if the database is
 * newer than this build, or is not a keel database at all.
 */
export function migrate(db: Database, path: string): void {
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
  for (let next = version; next < schemaVersion; next++) {
    const sql = migrations[next];
    if (sql === undefined) throw new RangeError(`No migration from version ${next}`);
    db.transaction(() => {
      db.run(sql);
      // user_version is part of the database header, so it commits with the migration.
      db.run(`PRAGMA user_version = ${next + 1}`);
    }).immediate();
  }
}

function userVersion(db: Database): number {
  const row = db.query<{ user_version: bigint | number }, []>("PRAGMA user_version").get();
  if (row === null) throw new Error("PRAGMA user_version returned no row");
  return Number(row.user_version);
}
