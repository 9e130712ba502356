import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import {
  cpSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Entry, EntryKind, SnapshotMeta } from "../../src/consensus/types.ts";
import { AssertionError } from "../../src/lib/assert.ts";
import { entryChecksum, hardStateChecksum } from "../../src/storage/checksum.ts";
import { migrate, schemaVersion } from "../../src/storage/schema.ts";
import { databaseFileName, lockFileName, SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { StorageCorruptionError } from "../../src/storage/storage.ts";
import { TempDirs } from "../support/storage_temp_dir.ts";

const mib = 1024 * 1024;

const dirs = new TempDirs();
const opened: SqliteStorage[] = [];

afterEach(() => {
  for (const storage of opened.splice(0)) storage.close();
  dirs.removeAll();
});

function open(dir: string): SqliteStorage {
  const storage = SqliteStorage.open(dir);
  opened.push(storage);
  return storage;
}

/** reopen closes a storage and opens its dir again, so reads come from the file. */
function reopen(storage: SqliteStorage): SqliteStorage {
  storage.close();
  return open(join(storage.path, ".."));
}

function entry(index: number, term: number, kind: EntryKind = "command"): Entry {
  return { index, term, kind, data: new TextEncoder().encode(`entry ${index} of term ${term}`) };
}

function entries(first: number, last: number, term: number): Entry[] {
  const result: Entry[] = [];
  for (let index = first; index <= last; index++) result.push(entry(index, term));
  return result;
}

/** patterned returns bytes whose value depends on their position, so misplaced bytes show. */
function patterned(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + (i >>> 8) * 7 + seed) & 0xff;
  return bytes;
}

/** rawQuery reads the database file with a second connection, as an operator would. */
function rawQuery<Row>(storage: SqliteStorage, sql: string): Row[] {
  const db = new Database(storage.path, { strict: true, safeIntegers: true });
  try {
    return db.query<Row, []>(sql).all();
  } finally {
    db.close();
  }
}

/** snapshotFiles lists the data dir's snapshot files, as an operator would. */
function snapshotFiles(dir: string): string[] {
  return readdirSync(join(dir, "snapshots")).sort();
}

function dirOf(storage: SqliteStorage): string {
  return join(storage.path, "..");
}

/** corruptionOf runs `work`, which must throw StorageCorruptionError, and returns it. */
function corruptionOf(work: () => unknown): StorageCorruptionError {
  try {
    work();
  } catch (error: unknown) {
    if (error instanceof StorageCorruptionError) return error;
    throw error;
  }
  throw new Error("expected a StorageCorruptionError, nothing was thrown");
}

function rawRun(path: string, sql: string): void {
  const db = new Database(path, { strict: true });
  try {
    db.run(sql);
  } finally {
    db.close();
  }
}

describe("opening", () => {
  test("a new data dir is empty and loads a zero hard state", () => {
    const storage = open(join(dirs.make(), "nested", "data"));
    expect(storage.isEmpty()).toBe(true);
    expect(storage.load()).toEqual({
      hardState: { term: 0, votedFor: null, commitIndex: 0 },
      snapshot: undefined,
      entries: [],
    });
    expect(storage.latestSnapshot()).toBeUndefined();
    expect(storage.readSnapshot()).toBeUndefined();
  });

  test("the connection writes through a WAL that keel fdatasyncs itself", () => {
    const storage = open(dirs.make());
    expect(storage.durabilitySettings()).toEqual({
      journalMode: "wal",
      synchronous: 1,
      walSync: "fdatasync",
    });
  });

  test("write() is seen at once and sync() resolves once it is durable", async () => {
    const dir = dirs.make();
    const storage = open(dir);
    storage.identity("node-a");
    expect(storage.write({ hardState: undefined, entries: [] })).toBe(false);
    expect(
      storage.write({
        hardState: { term: 2, votedFor: "node-a", commitIndex: 0 },
        entries: [entry(1, 1), entry(2, 2)],
      }),
    ).toBe(true);
    const synced = storage.sync();
    // A second write while the first sync runs is covered by the next sync.
    storage.write({ hardState: undefined, entries: [entry(3, 2)] });
    await synced;
    await storage.sync();
    expect(storage.load().entries.map((e) => e.index)).toEqual([1, 2, 3]);
    storage.close();
    const reopened = SqliteStorage.open(dir);
    expect(reopened.load().hardState).toEqual({ term: 2, votedFor: "node-a", commitIndex: 0 });
    expect(reopened.load().entries.map((e) => e.index)).toEqual([1, 2, 3]);
    reopened.close();
  });

  test("close() while a sync runs lets the sync finish", async () => {
    const storage = open(dirs.make());
    storage.identity("node-a");
    storage.write({ hardState: undefined, entries: [entry(1, 1)] });
    const synced = storage.sync();
    storage.close();
    await synced;
  });

  test("a data dir is open in one process at a time", () => {
    const dir = dirs.make();
    const first = open(dir);
    expect(() => SqliteStorage.open(dir)).toThrow(
      /Data dir ".*" is in use by another keel process \(it holds .*keel\.lock\)/,
    );
    first.close();
    open(dir).close();
  });

  test("a database from a newer keel is refused", () => {
    const dir = dirs.make();
    open(dir).close();
    rawRun(join(dir, databaseFileName), "PRAGMA user_version = 99");
    expect(() => SqliteStorage.open(dir)).toThrow(
      `schema version 99, newer than version ${schemaVersion}`,
    );
  });

  test("a database that keel did not create is refused", () => {
    const dir = dirs.make();
    rawRun(join(dir, databaseFileName), "CREATE TABLE other (x INTEGER)");
    expect(() => SqliteStorage.open(dir)).toThrow(/is not a keel database/);
  });
});

describe("identity", () => {
  test("the first call creates the identity and later calls return it", () => {
    let storage = open(dirs.make());
    const created = storage.identity("node-a");
    expect(created.name).toBe("node-a");
    expect(created.status).toBe("normal");
    expect(created.incarnation).toMatch(/^[0-9a-f]{32}$/);
    expect(storage.identity("node-a")).toEqual(created);
    storage = reopen(storage);
    expect(storage.identity("node-a")).toEqual(created);
    // An identity alone is not cluster state: the node is still empty (R1).
    expect(storage.isEmpty()).toBe(true);
  });

  test("each data dir gets its own incarnation", () => {
    const a = open(dirs.make()).identity("node-a");
    const b = open(dirs.make()).identity("node-a");
    expect(a.incarnation).not.toBe(b.incarnation);
  });

  test("setStatus persists the status", () => {
    let storage = open(dirs.make());
    const created = storage.identity("node-a");
    storage.setStatus("recovering");
    storage = reopen(storage);
    expect(storage.identity("node-a")).toEqual({ ...created, status: "recovering" });
  });

  test("setStatus before the identity exists is a bug", () => {
    const storage = open(dirs.make());
    expect(() => storage.setStatus("recovering")).toThrow(AssertionError);
  });

  test("a data dir created by another member is refused, naming both members", () => {
    const dir = dirs.make();
    const storage = open(dir);
    storage.identity("node-a");
    storage.close();
    const other = open(dir);
    expect(() => other.identity("node-b")).toThrow(
      /belongs to member "node-a", not "node-b"/,
    );
  });
});

describe("persist and load", () => {
  test("entries and hard state read back after reopening", () => {
    let storage = open(dirs.make());
    const written = [entry(1, 1, "noop"), entry(2, 1), entry(3, 2, "fence"), entry(4, 2)];
    storage.persist({
      hardState: { term: 2, votedFor: "node-b", commitIndex: 3 },
      entries: written,
    });
    storage = reopen(storage);
    expect(storage.isEmpty()).toBe(false);
    const state = storage.load();
    expect(state.hardState).toEqual({ term: 2, votedFor: "node-b", commitIndex: 3 });
    expect(state.snapshot).toBeUndefined();
    expect(state.entries).toEqual(written);
  });

  test("a batch may carry only a hard state, or only entries", () => {
    const storage = open(dirs.make());
    storage.persist({ hardState: { term: 0, votedFor: null, commitIndex: 0 }, entries: [] });
    expect(storage.isEmpty()).toBe(true);
    storage.persist({ hardState: { term: 1, votedFor: null, commitIndex: 0 }, entries: [] });
    expect(storage.isEmpty()).toBe(false);
    storage.persist({ hardState: undefined, entries: entries(1, 3, 1) });
    storage.persist({ hardState: undefined, entries: [] });
    expect(storage.load()).toEqual({
      hardState: { term: 1, votedFor: null, commitIndex: 0 },
      snapshot: undefined,
      entries: entries(1, 3, 1),
    });
  });

  // Reference: §5.3 "If an existing entry conflicts with a new one (same index but
  // different terms), delete the existing entry and all that follow it".
  test("entries from the first new index on are replaced", () => {
    let storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 6, 1) });
    storage.persist({ hardState: undefined, entries: [entry(4, 2), entry(5, 2)] });
    storage = reopen(storage);
    expect(storage.load().entries).toEqual([...entries(1, 3, 1), entry(4, 2), entry(5, 2)]);
  });

  test("an empty entry data reads back as empty bytes", () => {
    const storage = open(dirs.make());
    storage.persist({
      hardState: undefined,
      entries: [{ index: 1, term: 1, kind: "noop", data: new Uint8Array(0) }],
    });
    expect(storage.load().entries).toEqual([
      { index: 1, term: 1, kind: "noop", data: new Uint8Array(0) },
    ]);
  });

  test("a broken invariant writes nothing of its batch", () => {
    const storage = open(dirs.make());
    storage.persist({
      hardState: { term: 1, votedFor: "node-a", commitIndex: 1 },
      entries: entries(1, 2, 1),
    });
    const before = storage.load();
    const bad = [
      // A gap in the log.
      { hardState: { term: 2, votedFor: null, commitIndex: 2 }, entries: entries(4, 5, 2) },
      // A gap inside the batch.
      {
        hardState: { term: 2, votedFor: null, commitIndex: 2 },
        entries: [entry(3, 2), entry(5, 2)],
      },
      // A term that goes back.
      { hardState: { term: 0, votedFor: null, commitIndex: 2 }, entries: [] },
      // A second vote in the same term.
      { hardState: { term: 1, votedFor: "node-c", commitIndex: 2 }, entries: entries(3, 3, 1) },
      // A log term lower than the entry before it.
      { hardState: undefined, entries: [entry(3, 2), entry(4, 1)] },
      // An index that is not a safe integer.
      { hardState: undefined, entries: [entry(3.5, 1)] },
    ];
    for (const batch of bad) {
      expect(() => storage.persist(batch)).toThrow(AssertionError);
      expect(storage.load()).toEqual(before);
    }
  });

  test("a vote may be cast once per term and moves with a new term", () => {
    const storage = open(dirs.make());
    storage.persist({ hardState: { term: 3, votedFor: null, commitIndex: 0 }, entries: [] });
    storage.persist({ hardState: { term: 3, votedFor: "node-b", commitIndex: 0 }, entries: [] });
    storage.persist({ hardState: { term: 3, votedFor: "node-b", commitIndex: 0 }, entries: [] });
    storage.persist({ hardState: { term: 4, votedFor: "node-c", commitIndex: 0 }, entries: [] });
    expect(storage.load().hardState).toEqual({ term: 4, votedFor: "node-c", commitIndex: 0 });
  });

  test("terms and indexes near 2^53 read back exactly", () => {
    const top = Number.MAX_SAFE_INTEGER; // 2^53 - 1
    let storage = open(dirs.make());
    const meta = { index: top - 10, term: top - 2, bytes: 3 };
    storage.stageSnapshotChunk(meta, 0, patterned(3));
    storage.installStagedSnapshot(meta);
    const written = [entry(top - 9, top - 2), entry(top - 8, top - 1)];
    for (let index = top - 7; index <= top; index++) written.push(entry(index, top));
    storage.persist({
      hardState: { term: top, votedFor: "node-a", commitIndex: top },
      entries: written,
    });
    storage = reopen(storage);
    const state = storage.load();
    expect(state.hardState).toEqual({ term: top, votedFor: "node-a", commitIndex: top });
    expect(state.snapshot).toEqual(meta);
    expect(state.entries).toEqual(written);
    expect(state.entries.at(-1)?.index).toBe(9007199254740991);
    // Neighbours that a double would merge stay distinct.
    expect(state.entries.at(-2)?.index).toBe(9007199254740990);
  });

  test("an integer beyond 2^53 on disk crashes load instead of rounding", () => {
    let storage = open(dirs.make());
    storage.persist({ hardState: { term: 1, votedFor: null, commitIndex: 0 }, entries: [] });
    storage.close();
    // With a checksum that matches, so the value is what keel wrote: a bug, not rot.
    const term = 9007199254740993n;
    const checksum = hardStateChecksum(term, null, 0n);
    rawRun(storage.path, `UPDATE hard_state SET term = ${term}, checksum = ${checksum}`);
    storage = open(join(storage.path, ".."));
    expect(() => storage.load()).toThrow(/beyond the safe integer range/);
  });

  test("a gap in the stored log is damage: load throws naming the missing index", () => {
    let storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 5, 1) });
    storage.close();
    rawRun(storage.path, 'DELETE FROM log WHERE "index" = 3');
    storage = open(join(storage.path, ".."));
    const error = corruptionOf(() => storage.load());
    expect(error).toMatchObject({ kind: "log-entry", index: 3, path: storage.path });
    expect(error.message).toContain("must be contiguous: expected index 3, found 4");
  });

  test("a log that does not reach the snapshot is damage", () => {
    let storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 8, 1) });
    storage.saveSnapshot({ index: 4, term: 1, bytes: 0 }, new Uint8Array(0));
    storage.close();
    rawRun(storage.path, 'DELETE FROM log WHERE "index" < 6');
    storage = open(join(storage.path, ".."));
    expect(corruptionOf(() => storage.load()).message).toMatch(
      /must start at 1 or reach the snapshot: it starts at 6/,
    );
    storage.close();
    rawRun(storage.path, 'DELETE FROM log WHERE "index" >= 1');
    const checksum = entryChecksum(1, 1, "noop", new Uint8Array(0));
    rawRun(storage.path, `INSERT INTO log VALUES (1, 1, 'noop', x'', ${checksum})`);
    storage = open(join(storage.path, ".."));
    expect(corruptionOf(() => storage.load()).message).toMatch(
      /ends at 1, before the snapshot at 4/,
    );
  });
});

describe("snapshots", () => {
  test("saveSnapshot replaces the snapshot and keeps the log", () => {
    let storage = open(dirs.make());
    const written = [...entries(1, 5, 1), ...entries(6, 10, 2)];
    storage.persist({ hardState: { term: 2, votedFor: null, commitIndex: 8 }, entries: written });
    storage.saveSnapshot({ index: 4, term: 1, bytes: 10 }, patterned(10, 1));
    const meta = { index: 7, term: 2, bytes: 20 };
    storage.saveSnapshot(meta, patterned(20, 2));
    storage = reopen(storage);
    expect(storage.latestSnapshot()).toEqual(meta);
    expect(storage.readSnapshot()).toEqual({ meta, data: patterned(20, 2) });
    expect(storage.load()).toEqual({
      hardState: { term: 2, votedFor: null, commitIndex: 8 },
      snapshot: meta,
      entries: written,
    });
    // Only one snapshot's bytes are kept: the replaced file is gone.
    expect(snapshotFiles(dirOf(storage))).toEqual(["7-2-2.snap"]);
  });

  test("saveSnapshotInBackground writes the parts off the loop, then makes them current", async () => {
    let storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 10, 1) });
    storage.saveSnapshot({ index: 3, term: 1, bytes: 4 }, patterned(4, 9));
    const data = patterned(3000, 5);
    const meta = { index: 8, term: 1, bytes: data.length };
    const saving = storage.saveSnapshotInBackground(meta, [
      data.subarray(0, 1000),
      data.subarray(1000),
    ]);
    // Until it is durable and committed, the old snapshot stays current and readable.
    expect(storage.latestSnapshot()).toEqual({ index: 3, term: 1, bytes: 4 });
    expect(await saving).toBe(true);
    expect(storage.latestSnapshot()).toEqual(meta);
    storage = reopen(storage);
    expect(storage.readSnapshot()).toEqual({ meta, data });
    expect(snapshotFiles(dirOf(storage))).toHaveLength(1);
  });

  test("a background save overtaken by a newer snapshot, or by close, is dropped", async () => {
    const storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 10, 1) });
    const older = storage.saveSnapshotInBackground({ index: 5, term: 1, bytes: 8 }, [
      patterned(8, 1),
    ]);
    storage.saveSnapshot({ index: 9, term: 1, bytes: 8 }, patterned(8, 2));
    expect(await older).toBe(false);
    expect(storage.latestSnapshot()).toEqual({ index: 9, term: 1, bytes: 8 });
    const closed = storage.saveSnapshotInBackground({ index: 10, term: 1, bytes: 8 }, [
      patterned(8, 3),
    ]);
    storage.close();
    expect(await closed).toBe(false);
    expect(snapshotFiles(dirOf(storage)).filter((name) => name.startsWith("10-"))).toEqual([]);
  });

  test("compactLog drops the entries before its index and keeps the one at it", () => {
    let storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: [...entries(1, 5, 1), ...entries(6, 10, 2)] });
    storage.saveSnapshot({ index: 7, term: 2, bytes: 1 }, patterned(1));
    storage.compactLog(4);
    storage = reopen(storage);
    expect(storage.load().entries).toEqual([...entries(4, 5, 1), ...entries(6, 10, 2)]);
    // Compacting up to the snapshot keeps the entry at the snapshot's index for its term.
    storage.compactLog(7);
    storage.persist({ hardState: undefined, entries: entries(11, 12, 3) });
    storage = reopen(storage);
    expect(storage.load().entries).toEqual([...entries(7, 10, 2), ...entries(11, 12, 3)]);
    expect(storage.isEmpty()).toBe(false);
  });

  test("compactLog past the snapshot, or without one, is a bug", () => {
    const storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 5, 1) });
    expect(() => storage.compactLog(2)).toThrow(AssertionError);
    storage.saveSnapshot({ index: 3, term: 1, bytes: 0 }, new Uint8Array(0));
    expect(() => storage.compactLog(4)).toThrow(AssertionError);
    expect(storage.load().entries).toEqual(entries(1, 5, 1));
  });

  test("a snapshot that disagrees with the log, moves back or runs ahead of it is a bug", () => {
    const storage = open(dirs.make());
    storage.persist({ hardState: undefined, entries: entries(1, 5, 1) });
    const empty = new Uint8Array(0);
    expect(() => storage.saveSnapshot({ index: 3, term: 2, bytes: 0 }, empty))
      .toThrow(AssertionError);
    expect(() => storage.saveSnapshot({ index: 6, term: 1, bytes: 0 }, empty))
      .toThrow(AssertionError);
    storage.saveSnapshot({ index: 4, term: 1, bytes: 0 }, empty);
    expect(() => storage.saveSnapshot({ index: 3, term: 1, bytes: 0 }, empty))
      .toThrow(AssertionError);
    // Entries inside the snapshot can no longer be written.
    expect(() => storage.persist({ hardState: undefined, entries: [entry(4, 1)] }))
      .toThrow(AssertionError);
    expect(storage.latestSnapshot()).toEqual({ index: 4, term: 1, bytes: 0 });
  });

  test("snapshot bytes are stored in one file and read by any range", () => {
    let storage = open(dirs.make());
    const bytes = 2 * mib + 12345;
    const data = patterned(bytes, 3);
    storage.persist({ hardState: undefined, entries: entries(1, 9, 1) });
    const meta = { index: 9, term: 1, bytes };
    storage.saveSnapshot(meta, data);
    storage = reopen(storage);

    // The file is named for the snapshot's index, term and generation, and holds its bytes.
    expect(snapshotFiles(dirOf(storage))).toEqual(["9-1-1.snap"]);
    expect(readFileSync(join(dirOf(storage), "snapshots", "9-1-1.snap"))).toEqual(
      Buffer.from(data),
    );

    const ranges: Array<[number, number]> = [
      [0, 10],
      [mib - 5, 10],
      [mib, 1],
      [mib - 1, mib + 2],
      [bytes - 7, 7], // the last bytes
      [bytes - 7, 1000], // clipped at the end
      [bytes, 100], // at the end: nothing
      [123, 0],
    ];
    for (const [offset, length] of ranges) {
      const end = Math.min(bytes, offset + length);
      expect(storage.readSnapshotChunk(9, offset, length)).toEqual(data.subarray(offset, end));
    }
    expect(storage.readSnapshot()).toEqual({ meta, data });
  });

  test("a snapshot file cut short behind the storage's back fails the reads past its end", () => {
    const storage = open(dirs.make());
    const bytes = 3 * mib;
    const data = patterned(bytes, 4);
    storage.persist({ hardState: undefined, entries: entries(1, 2, 1) });
    storage.saveSnapshot({ index: 2, term: 1, bytes }, data);
    const path = join(dirOf(storage), "snapshots", "2-1-1.snap");
    truncateSync(path, 2 * mib);
    // A chunk read reads only its own range of the file (and its checksums' blocks).
    expect(storage.readSnapshotChunk(2, mib, mib)).toEqual(data.subarray(mib, 2 * mib));
    // A read that needs the missing bytes is an error naming the file, not a short read;
    // it reads the whole 64 KiB block that its last byte is in.
    const error = corruptionOf(() => storage.readSnapshotChunk(2, 2 * mib - 1, 2));
    expect(error).toMatchObject({ kind: "snapshot", index: 2, path });
    expect(error.message).toContain(
      `Snapshot file "${path}" ends at byte ${2 * mib}, before byte ${2 * mib + 64 * 1024}`,
    );
    expect(() => storage.readSnapshot()).toThrow(/the data dir is damaged/);
  });

  test("open refuses a data dir whose snapshot file is missing or has the wrong size", () => {
    const dir = dirs.make();
    const storage = open(dir);
    storage.persist({ hardState: undefined, entries: entries(1, 2, 1) });
    storage.saveSnapshot({ index: 2, term: 1, bytes: 100 }, patterned(100));
    storage.close();
    const path = join(dir, "snapshots", "2-1-1.snap");
    truncateSync(path, 99);
    expect(() => SqliteStorage.open(dir)).toThrow(
      `Snapshot file "${path}" has 99 bytes, but snapshot {index 2, term 1, 100 bytes} has ` +
        `100: the data dir is damaged`,
    );
    unlinkSync(path);
    expect(() => SqliteStorage.open(dir)).toThrow(
      `Snapshot file "${path}" of snapshot {index 2, term 1, 100 bytes} is missing: ` +
        `the data dir is damaged`,
    );
  });

  test("saving again at the snapshot's own index writes a new file, then drops the old", () => {
    let storage = open(dirs.make());
    const meta = { index: 5, term: 2, bytes: 10 };
    storage.stageSnapshotChunk(meta, 0, patterned(10, 1));
    storage.installStagedSnapshot(meta);
    // With the log gone, the snapshot may be saved again only at its own point.
    const again = { index: 5, term: 2, bytes: 12 };
    storage.saveSnapshot(again, patterned(12, 2));
    expect(snapshotFiles(dirOf(storage))).toEqual(["5-2-2.snap"]);
    storage = reopen(storage);
    expect(storage.readSnapshot()).toEqual({ meta: again, data: patterned(12, 2) });
    // Generations go on from the stored one after a reopen.
    storage.saveSnapshot(again, patterned(12, 3));
    expect(snapshotFiles(dirOf(storage))).toEqual(["5-2-3.snap"]);
  });

  test("open removes snapshot files that no row names, and only keel's", () => {
    const dir = dirs.make();
    let storage = open(dir);
    storage.persist({ hardState: undefined, entries: entries(1, 4, 1) });
    storage.saveSnapshot({ index: 3, term: 1, bytes: 20 }, patterned(20));
    storage.close();
    const snapshots = join(dir, "snapshots");
    // A crash before the row commit leaves the new file (here a partial one); a crash
    // after it, before the removal, leaves the old one.
    writeFileSync(join(snapshots, "4-1-2.snap"), patterned(7));
    writeFileSync(join(snapshots, "2-1-0.snap"), patterned(20));
    writeFileSync(join(snapshots, "notes.txt"), "an operator's file");
    storage = open(dir);
    expect(snapshotFiles(dir)).toEqual(["3-1-1.snap", "notes.txt"]);
    expect(storage.readSnapshot()).toEqual({
      meta: { index: 3, term: 1, bytes: 20 },
      data: patterned(20),
    });
    // The next file gets a generation no leftover could have had.
    storage.saveSnapshot({ index: 4, term: 1, bytes: 5 }, patterned(5, 9));
    expect(snapshotFiles(dir)).toEqual(["4-1-2.snap", "notes.txt"]);
  });

  test("reading a chunk of a snapshot that is not the current one throws", () => {
    const storage = open(dirs.make());
    expect(() => storage.readSnapshotChunk(5, 0, 10)).toThrow(
      "Snapshot at index 5 is not the current snapshot (current: none)",
    );
    storage.persist({ hardState: undefined, entries: entries(1, 6, 1) });
    storage.saveSnapshot({ index: 6, term: 1, bytes: 4 }, patterned(4));
    expect(() => storage.readSnapshotChunk(5, 0, 10)).toThrow(
      "Snapshot at index 5 is not the current snapshot (current: 6)",
    );
    expect(() => storage.readSnapshotChunk(6, 5, 1)).toThrow(RangeError);
    expect(() => storage.readSnapshotChunk(6, -1, 1)).toThrow(RangeError);
  });
});

describe("staged snapshots", () => {
  const meta: SnapshotMeta = { index: 50, term: 4, bytes: mib + 300_000 };
  const data = patterned(meta.bytes, 5);

  function stageAll(storage: SqliteStorage, chunkBytes: number): void {
    for (let offset = 0; offset < meta.bytes; offset += chunkBytes) {
      storage.stageSnapshotChunk(meta, offset, data.subarray(offset, offset + chunkBytes));
    }
  }

  test("staged chunks install as the snapshot, replacing the whole log", () => {
    let storage = open(dirs.make());
    storage.persist({
      hardState: { term: 4, votedFor: "node-a", commitIndex: 10 },
      entries: [...entries(1, 20, 3), ...entries(21, 60, 4)],
    });
    storage.saveSnapshot({ index: 5, term: 3, bytes: 3 }, patterned(3));
    // A first chunk of more than 1 MiB, then 256 KiB ones.
    storage.stageSnapshotChunk(meta, 0, data.subarray(0, mib + 10));
    for (let offset = mib + 10; offset < meta.bytes; offset += 256 * 1024) {
      storage.stageSnapshotChunk(meta, offset, data.subarray(offset, offset + 256 * 1024));
    }
    // Staging does not touch the current snapshot.
    expect(storage.latestSnapshot()).toEqual({ index: 5, term: 3, bytes: 3 });
    expect(storage.readSnapshot()).toEqual({
      meta: { index: 5, term: 3, bytes: 3 },
      data: patterned(3),
    });
    expect(snapshotFiles(dirOf(storage))).toEqual(["5-3-1.snap", "50-4-2.snap"]);
    storage.installStagedSnapshot(meta);
    storage = reopen(storage);
    expect(storage.load()).toEqual({
      hardState: { term: 4, votedFor: "node-a", commitIndex: 50 },
      snapshot: meta,
      entries: [],
    });
    expect(storage.readSnapshot()).toEqual({ meta, data });
    expect(storage.readSnapshotChunk(50, 1000, 2_000_000)).toEqual(data.subarray(1000));
    // The old snapshot's file is gone; the staged file is now the current one.
    expect(snapshotFiles(dirOf(storage))).toEqual(["50-4-2.snap"]);
    const rows = rawQuery<{ index: bigint; generation: bigint }>(
      storage,
      'SELECT "index", generation FROM snapshot',
    );
    expect(rows).toEqual([{ index: 50n, generation: 2n }]);
    storage.persist({ hardState: undefined, entries: entries(51, 52, 4) });
    expect(storage.load().entries).toEqual(entries(51, 52, 4));
  });

  test("installing keeps a higher commit index", () => {
    const storage = open(dirs.make());
    storage.persist({ hardState: { term: 4, votedFor: null, commitIndex: 70 }, entries: [] });
    stageAll(storage, 512 * 1024);
    storage.installStagedSnapshot(meta);
    expect(storage.load().hardState).toEqual({ term: 4, votedFor: null, commitIndex: 70 });
  });

  test("installing on an empty node sets the commit index", () => {
    const storage = open(dirs.make());
    stageAll(storage, mib);
    storage.installStagedSnapshot(meta);
    expect(storage.isEmpty()).toBe(false);
    expect(storage.load().hardState).toEqual({ term: 0, votedFor: null, commitIndex: 50 });
  });

  test("a chunk that does not continue the staged bytes throws", () => {
    const storage = open(dirs.make());
    storage.stageSnapshotChunk(meta, 0, data.subarray(0, 100));
    expect(() => storage.stageSnapshotChunk(meta, 200, data.subarray(200, 300))).toThrow(
      /offset 200 is not contiguous with the 100 bytes staged/,
    );
    expect(() => storage.stageSnapshotChunk(meta, 50, data.subarray(50, 150))).toThrow(
      /not contiguous/,
    );
    const other = { ...meta, term: 5 };
    expect(() => storage.stageSnapshotChunk(other, 100, data.subarray(100, 200))).toThrow(
      /has no staged start/,
    );
    expect(() => storage.stageSnapshotChunk(meta, 100, new Uint8Array(meta.bytes))).toThrow(
      RangeError,
    );
    // The failed calls left the staging as it was: it continues from byte 100.
    storage.stageSnapshotChunk(meta, 100, data.subarray(100, meta.bytes));
    storage.installStagedSnapshot(meta);
    expect(storage.readSnapshot()?.data).toEqual(data);
  });

  test("offset 0 restarts the staging", () => {
    const storage = open(dirs.make());
    const older = { index: 40, term: 4, bytes: 1000 };
    storage.stageSnapshotChunk(older, 0, patterned(500));
    expect(snapshotFiles(dirOf(storage))).toEqual(["40-4-1.snap"]);
    stageAll(storage, 300_000);
    // The earlier staging's file is gone with it.
    expect(snapshotFiles(dirOf(storage))).toEqual(["50-4-2.snap"]);
    // A same snapshot restarted at offset 0 starts from an empty file.
    storage.stageSnapshotChunk(meta, 0, data.subarray(0, 10));
    expect(() => storage.installStagedSnapshot(meta)).toThrow(AssertionError);
    stageAll(storage, 300_000);
    storage.installStagedSnapshot(meta);
    expect(storage.readSnapshot()).toEqual({ meta, data });
    expect(snapshotFiles(dirOf(storage))).toEqual(["50-4-4.snap"]);
  });

  // Raft forgets a transfer in progress when the process restarts, and the staged file was
  // never synced (a power loss may have lost any of it): staging starts over.
  test("staging ends with the storage: after a reopen the transfer starts over", () => {
    const dir = dirs.make();
    let storage = open(dir);
    storage.stageSnapshotChunk(meta, 0, data.subarray(0, 1000));
    storage = reopen(storage);
    expect(snapshotFiles(dir)).toEqual([]);
    expect(() => storage.stageSnapshotChunk(meta, 1000, data.subarray(1000))).toThrow(
      /has no staged start \(staged: none\)/,
    );
    expect(() => storage.installStagedSnapshot(meta)).toThrow(AssertionError);
    stageAll(storage, mib);
    storage.installStagedSnapshot(meta);
    expect(storage.readSnapshot()).toEqual({ meta, data });
  });

  test("a staged file left by a killed process is removed at open", () => {
    const dir = dirs.make();
    const storage = open(dir);
    storage.persist({ hardState: undefined, entries: entries(1, 2, 1) });
    storage.saveSnapshot({ index: 2, term: 1, bytes: 3 }, patterned(3));
    storage.stageSnapshotChunk(meta, 0, data.subarray(0, 1000));
    expect(snapshotFiles(dir)).toEqual(["2-1-1.snap", "50-4-2.snap"]);
    // A copy of the dir now is what a killed process leaves (its lock goes with it).
    const copy = dirs.make();
    cpSync(dir, copy, { recursive: true, filter: (path) => !path.endsWith(lockFileName) });
    const second = open(copy);
    expect(snapshotFiles(copy)).toEqual(["2-1-1.snap"]);
    expect(second.readSnapshot()?.meta).toEqual({ index: 2, term: 1, bytes: 3 });
    storage.close();
  });

  test("installing an incomplete or different staged snapshot is a bug", () => {
    const storage = open(dirs.make());
    expect(() => storage.installStagedSnapshot(meta)).toThrow(AssertionError);
    storage.stageSnapshotChunk(meta, 0, data.subarray(0, 1000));
    expect(() => storage.installStagedSnapshot(meta)).toThrow(AssertionError);
    storage.stageSnapshotChunk(meta, 1000, data.subarray(1000));
    expect(() => storage.installStagedSnapshot({ ...meta, index: 51 })).toThrow(AssertionError);
    expect(storage.latestSnapshot()).toBeUndefined();
  });
});

describe("migration from version 1 (snapshot bytes in the database)", () => {
  const bytes = 2 * mib + 12345;
  const data = patterned(bytes, 6);
  const incarnation = "0123456789abcdef0123456789abcdef";

  /** createVersion1 builds a data dir as keel 1 left it, with the v1 schema and raw SQL. */
  function createVersion1(dir: string, sql: string): void {
    const path = join(dir, databaseFileName);
    const db = new Database(path, { create: true, strict: true, safeIntegers: true });
    try {
      db.run("PRAGMA journal_mode = WAL");
      migrate(db, path, dir, 1);
      db.run(sql);
    } finally {
      db.close();
    }
  }

  /** version1Chunks is the SQL that stores `bytes` under snapshot id in 1 MiB rows. */
  function version1Chunks(id: number, bytes: Uint8Array): string {
    const rows: string[] = [];
    for (let offset = 0; offset < bytes.length; offset += mib) {
      const piece = Buffer.from(bytes.subarray(offset, offset + mib)).toString("hex");
      rows.push(`(${id}, ${offset}, x'${piece}')`);
    }
    return `INSERT INTO snapshot_chunk (snapshot_id, byte_offset, data) VALUES ${rows.join(", ")};`;
  }

  const version1State = `
    INSERT INTO meta VALUES (1, 'node-a', '${incarnation}', 'normal', '2024-01-01T00:00:00Z');
    INSERT INTO hard_state VALUES (1, 3, 'node-b', 11);
    INSERT INTO log VALUES
      (8, 3, 'command', x'08'), (9, 3, 'command', x'09'), (10, 3, 'noop', x''),
      (11, 3, 'command', x'0b'), (12, 3, 'fence', x'0c');
    INSERT INTO snapshot VALUES (1, 'current', 9, 3, ${bytes}, ${bytes});
    INSERT INTO snapshot VALUES (2, 'staged', 40, 3, 5000, 1000);
    ${version1Chunks(1, data)}
    ${version1Chunks(2, patterned(1000, 7))}
  `;

  test("the current snapshot moves to its file; the staged one and the chunks are dropped", () => {
    const dir = dirs.make();
    createVersion1(dir, version1State);
    let storage = open(dir);
    expect(storage.identity("node-a")).toEqual({ name: "node-a", incarnation, status: "normal" });
    const meta = { index: 9, term: 3, bytes };
    expect(storage.load()).toEqual({
      hardState: { term: 3, votedFor: "node-b", commitIndex: 11 },
      snapshot: meta,
      entries: [
        { index: 8, term: 3, kind: "command", data: new Uint8Array([8]) },
        { index: 9, term: 3, kind: "command", data: new Uint8Array([9]) },
        { index: 10, term: 3, kind: "noop", data: new Uint8Array(0) },
        { index: 11, term: 3, kind: "command", data: new Uint8Array([11]) },
        { index: 12, term: 3, kind: "fence", data: new Uint8Array([12]) },
      ],
    });
    expect(storage.readSnapshot()).toEqual({ meta, data });
    expect(storage.readSnapshotChunk(9, mib - 3, 6)).toEqual(data.subarray(mib - 3, mib + 3));
    expect(snapshotFiles(dir)).toEqual(["9-3-1.snap"]);
    expect(rawQuery(storage, "PRAGMA user_version")).toEqual([
      { user_version: BigInt(schemaVersion) },
    ]);
    expect(
      rawQuery(storage, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"),
    ).toEqual([
      { name: "hard_state" },
      { name: "log" },
      { name: "meta" },
      { name: "probe" },
      { name: "snapshot" },
    ]);
    // The chunks' pages are given back: the database is small again.
    expect(statSync(storage.path).size).toBeLessThan(mib);
    // The next snapshot takes the next generation and replaces the migrated file.
    storage.saveSnapshot({ index: 12, term: 3, bytes: 4 }, patterned(4));
    expect(snapshotFiles(dir)).toEqual(["12-3-2.snap"]);
    storage = reopen(storage);
    expect(storage.readSnapshot()).toEqual({
      meta: { index: 12, term: 3, bytes: 4 },
      data: patterned(4),
    });
  });

  test("an export that a crash interrupted is done again", () => {
    const dir = dirs.make();
    createVersion1(dir, version1State);
    // A crash during the export (or after it, before the migration committed) leaves a
    // partial file under the name the export writes; older leftovers may be there too.
    const snapshots = join(dir, "snapshots");
    mkdirSync(snapshots);
    writeFileSync(join(snapshots, "9-3-1.snap"), data.subarray(0, mib + 7));
    writeFileSync(join(snapshots, "40-3-2.snap"), patterned(1000, 7));
    const storage = open(dir);
    expect(storage.readSnapshot()).toEqual({ meta: { index: 9, term: 3, bytes }, data });
    expect(snapshotFiles(dir)).toEqual(["9-3-1.snap"]);
  });

  test("a version 1 database without a current snapshot migrates to none", () => {
    const dir = dirs.make();
    createVersion1(
      dir,
      `INSERT INTO snapshot VALUES (2, 'staged', 40, 3, 5000, 1000);
       ${version1Chunks(2, patterned(1000, 7))}`,
    );
    const storage = open(dir);
    expect(storage.isEmpty()).toBe(true);
    expect(storage.readSnapshot()).toBeUndefined();
    expect(snapshotFiles(dir)).toEqual([]);
  });
});

describe("health", () => {
  test("probeWrite writes and sizeBytes counts the database, its WAL and snapshot files", () => {
    const storage = open(dirs.make());
    storage.probeWrite();
    const before = storage.sizeBytes();
    expect(before).toBeGreaterThan(0);
    const bytes = 3 * mib;
    storage.persist({ hardState: undefined, entries: entries(1, 1, 1) });
    storage.saveSnapshot({ index: 1, term: 1, bytes }, patterned(bytes));
    const saved = storage.sizeBytes();
    expect(saved).toBeGreaterThan(before + bytes);
    // A snapshot being received takes disk space too.
    storage.stageSnapshotChunk({ index: 9, term: 1, bytes }, 0, patterned(mib));
    expect(storage.sizeBytes()).toBeGreaterThanOrEqual(saved + mib);
    storage.probeWrite();
  });

  test("probeWrite throws when the database cannot be written", () => {
    const storage = open(dirs.make());
    storage.close();
    expect(() => storage.probeWrite()).toThrow();
  });
});

test("incarnations order by creation time, so a replacement's is newer than its predecessor's", async () => {
  const { newIncarnation } = await import("../../src/storage/sqlite_storage.ts");
  const older = newIncarnation(1_700_000_000_000);
  const newer = newIncarnation(1_700_000_000_001);
  expect(older).toMatch(/^[0-9a-f]{32}$/);
  expect(newer > older).toBe(true);
  expect(newIncarnation(1_700_000_000_000) === older).toBe(false); // the random part differs
});
