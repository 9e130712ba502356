// The one-way migration from schema version 2 (no checksums) to the current version, on a
// data dir that keel's version 2 code wrote (testdata/v2, see testdata/README.md).

import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { cpSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RestoredState } from "../../src/consensus/types.ts";
import { migrate, schemaVersion } from "../../src/storage/schema.ts";
import { databaseFileName, SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { StorageCorruptionError } from "../../src/storage/storage.ts";
import { openedStorages } from "../support/opened_storages.ts";

const fixture = join(import.meta.dir, "testdata", "v2");
const { dirs, open, close } = openedStorages();

/**
 * copyFixture copies the version 2 data dir (its database and snapshot file only):
 * opening one migrates it in place.
 */
function copyFixture(): string {
  const dir = join(dirs.make(), "node-a");
  mkdirSync(join(dir, "snapshots"), { recursive: true });
  cpSync(join(fixture, databaseFileName), join(dir, databaseFileName));
  cpSync(join(fixture, "snapshots", "3-1-1.snap"), join(dir, "snapshots", "3-1-1.snap"));
  return dir;
}

const text = (value: string) => new TextEncoder().encode(value);

function snapshotBytes(): Uint8Array {
  const bytes = new Uint8Array(70_000);
  const line = text("snapshot-line-0123456789\n");
  for (let i = 0; i < bytes.length; i++) bytes[i] = line[i % line.length]!;
  return bytes;
}

function rawQuery<Row>(path: string, sql: string): Row[] {
  const db = new Database(path, { readonly: true, safeIntegers: true });
  try {
    return db.query<Row, []>(sql).all();
  } finally {
    db.close();
  }
}

test("the fixture is a version 2 data dir", () => {
  expect(schemaVersion).toBe(3);
  // Read from the header (user_version: 4 bytes at offset 60), not through SQLite, which
  // would leave a -wal and -shm file beside the fixture.
  const header = readFileSync(join(fixture, databaseFileName)).subarray(0, 100);
  expect(new DataView(header.buffer, header.byteOffset).getUint32(60)).toBe(2);
});

test("opening a version 2 data dir migrates it, says so, and keeps everything", () => {
  const dir = copyFixture();
  let storage = open(dir);
  expect(storage.migratedFrom).toBe(2);
  expect(storage.migration).toEqual({
    fromVersion: 2,
    toVersion: 3,
    notes: [
      "computed checksums of the meta (1 row), the hard state (1 row), 5 log entries and " +
      `the 70000-byte snapshot at index 3 (file "${join(dir, "snapshots", "3-1-1.snap")}")`,
    ],
  });
  expect(storage.identity("node-a")).toEqual({
    name: "node-a",
    incarnation: "01a253c1f74631176f0cd9e7b752f1e6",
    status: "normal",
  });
  const expected: RestoredState = {
    hardState: { term: 2, votedFor: "node-b", commitIndex: 5 },
    snapshot: { index: 3, term: 1, bytes: 70_000 },
    entries: [
      { index: 2, term: 1, kind: "command", data: text("good-value-0002") },
      { index: 3, term: 1, kind: "command", data: text("good-value-0003") },
      { index: 4, term: 2, kind: "noop", data: new Uint8Array(0) },
      { index: 5, term: 2, kind: "fence", data: text("fence-node-c") },
      { index: 6, term: 2, kind: "command", data: text("good-value-0006") },
    ],
  };
  expect(storage.load()).toEqual(expected);
  expect(storage.readSnapshot()).toEqual({
    meta: { index: 3, term: 1, bytes: 70_000 },
    data: snapshotBytes(),
  });
  const scrub = storage.scrubStep(1_000_000);
  expect(scrub).toMatchObject({ done: true, problems: [] });
  expect(scrub.bytesVerified).toBeGreaterThan(70_000);

  // Every checksummed table now has a checksum column that must be given.
  const path = join(dir, databaseFileName);
  expect(rawQuery(path, "PRAGMA user_version")).toEqual([{ user_version: 3n }]);
  for (const table of ["meta", "hard_state", "log", "snapshot"]) {
    const columns = rawQuery<{ name: string; notnull: bigint; dflt_value: unknown }>(
      path,
      `PRAGMA table_info(${table})`,
    );
    expect(columns.find((column) => column.name === "checksum")).toMatchObject({
      notnull: 1n,
      dflt_value: null,
    });
  }

  // Once: the next open finds the current version.
  close(storage);
  storage = open(dir);
  expect(storage.migration).toBeUndefined();
  expect(storage.migratedFrom).toBeUndefined();
  expect(storage.load()).toEqual(expected);
});

test("the checksums that the migration computed catch a byte flipped afterwards", () => {
  const dir = copyFixture();
  close(open(dir));
  const path = join(dir, databaseFileName);
  const bytes = readFileSync(path);
  const at = bytes.indexOf("good-value-0003");
  expect(at).toBeGreaterThan(0);
  bytes[at] = "b".charCodeAt(0);
  writeFileSync(path, bytes);
  const storage = open(dir);
  expect(() => storage.load()).toThrow(StorageCorruptionError);
  expect(() => storage.load()).toThrow(`Log entry 3 in "${path}" fails its checksum`);
});

test("a version 2 data dir whose snapshot file is cut short is not migrated", () => {
  const dir = copyFixture();
  const snapshot = join(dir, "snapshots", "3-1-1.snap");
  truncateSync(snapshot, 1000);
  let error: unknown;
  try {
    SqliteStorage.open(dir);
  } catch (caught: unknown) {
    error = caught;
  }
  expect(error).toBeInstanceOf(StorageCorruptionError);
  expect(error).toMatchObject({ kind: "snapshot", index: 3, path: snapshot });
  expect((error as Error).message).toContain(
    `Snapshot file "${snapshot}" ends at byte 1000, before the 70000 bytes of snapshot 3`,
  );
  // The migration's transaction rolled back: still version 2, as it was.
  expect(rawQuery(join(dir, databaseFileName), "PRAGMA user_version")).toEqual([
    { user_version: 2n },
  ]);
});

test("a new data dir reports no migration", () => {
  const storage = open(dirs.make());
  expect(storage.migration).toBeUndefined();
});

test("a version 1 data dir migrates through version 2, and says so", () => {
  const dir = dirs.make();
  const path = join(dir, databaseFileName);
  const db = new Database(path, { create: true, strict: true, safeIntegers: true });
  db.run("PRAGMA journal_mode = WAL");
  migrate(db, path, dir, 1);
  db.run("INSERT INTO hard_state VALUES (1, 4, NULL, 0)");
  db.close();
  const storage = open(dir);
  expect(storage.migration).toEqual({
    fromVersion: 1,
    toVersion: 3,
    notes: [
      "computed checksums of the meta (0 rows), the hard state (1 row), 0 log entries and " +
      "no snapshot",
    ],
  });
  expect(storage.load().hardState).toEqual({ term: 4, votedFor: null, commitIndex: 0 });
});
