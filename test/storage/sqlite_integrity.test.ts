// Integrity of SqliteStorage: bytes changed on disk behind its back are never returned.
//
// The damage is done as a disk would do it: bytes of the real files (keel.db, a snapshot
// file) are changed in place while the storage is closed, and the data dir is opened
// again. Where SQL is used instead (a row rewritten by another connection, as a
// misdirected write would leave it), the test says so. Every read that feeds apply,
// replication, a snapshot send or a vote must then throw StorageCorruptionError naming
// what is damaged, and the scrubber must find it.

import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import {
  closeSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Entry } from "../../src/consensus/types.ts";
import {
  databaseFileName,
  quarantineDataDir,
  SqliteStorage,
} from "../../src/storage/sqlite_storage.ts";
import { type CorruptionKind, StorageCorruptionError } from "../../src/storage/storage.ts";
import { openedStorages } from "../support/opened_storages.ts";

const blockBytes = 64 * 1024;
const { dirs, open, close } = openedStorages();

const encoder = new TextEncoder();

/** value is a 56-byte committed value, as in the report. */
function value(index: number): Uint8Array {
  const text = `good-value-${String(index).padStart(4, "0")}-`;
  return encoder.encode(text.padEnd(56, "x"));
}

function entry(index: number, term: number): Entry {
  return { index, term, kind: "command", data: value(index) };
}

/** patterned returns bytes whose value depends on their position. */
function patterned(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + (i >>> 8) * 7 + seed) & 0xff;
  return bytes;
}

/**
 * patchFile replaces the one occurrence of `find` in the file with `replace` (same
 * length), in place: the same inode, as a disk's damage would leave it.
 */
function patchFile(path: string, find: string, replace: string): void {
  expect(replace.length).toBe(find.length);
  const bytes = readFileSync(path);
  const at = bytes.indexOf(find);
  expect(at).toBeGreaterThanOrEqual(0);
  expect(bytes.indexOf(find, at + 1)).toBe(-1);
  writeBytesAt(path, at, encoder.encode(replace));
}

/** flipByte inverts one bit of the byte at `position` of the file, in place. */
function flipByte(path: string, position: number): void {
  const fd = openSync(path, "r+");
  try {
    const byte = new Uint8Array(1);
    expect(readSync(fd, byte, 0, 1, position)).toBe(1);
    byte[0] = byte[0]! ^ 0x04;
    writeSync(fd, byte, 0, 1, position);
  } finally {
    closeSync(fd);
  }
}

function writeBytesAt(path: string, position: number, bytes: Uint8Array): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, bytes, 0, bytes.length, position);
  } finally {
    closeSync(fd);
  }
}

/** rawRun changes the database with a second connection (as a misdirected write would). */
function rawRun(path: string, sql: string): void {
  const db = new Database(path, { strict: true });
  try {
    db.run(sql);
  } finally {
    db.close();
  }
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

/** Fixture: a closed data dir with entries 1-12, a vote, and a 3.5-block snapshot at 6. */
const snapshotBytes = 3 * blockBytes + 1000;
const snapshotData = patterned(snapshotBytes, 9);
function makeDataDir(): { dir: string; db: string; snapshot: string; incarnation: string } {
  const dir = dirs.make();
  const storage = open(dir);
  const { incarnation } = storage.identity("node-a");
  const log: Entry[] = [];
  for (let index = 1; index <= 12; index++) log.push(entry(index, index <= 6 ? 1 : 2));
  storage.persist({ hardState: { term: 2, votedFor: "voter-b", commitIndex: 10 }, entries: log });
  storage.saveSnapshot({ index: 6, term: 1, bytes: snapshotBytes }, snapshotData);
  close(storage);
  return {
    dir,
    db: join(dir, databaseFileName),
    snapshot: join(dir, "snapshots", "6-1-1.snap"),
    incarnation,
  };
}

/** scrubPass runs scrub steps of `budget` bytes until a pass is done. */
function scrubPass(storage: SqliteStorage, budget: number) {
  const problems: StorageCorruptionError[] = [];
  let steps = 0;
  let bytes = 0;
  for (;;) {
    const step = storage.scrubStep(budget);
    steps++;
    bytes += step.bytesVerified;
    problems.push(...step.problems);
    if (step.done) return { steps, bytes, problems };
    expect(steps).toBeLessThan(10_000);
  }
}

function kinds(problems: StorageCorruptionError[]): Array<[CorruptionKind, number | undefined]> {
  return problems.map((problem) => [problem.kind, problem.index]);
}

describe("a flipped byte in a log entry", () => {
  test("makes load() throw naming the entry, its index and the file", () => {
    const { dir, db } = makeDataDir();
    patchFile(db, "good-value-0009-", "baad-value-0009-");
    const storage = open(dir);
    const error = corruptionOf(() => storage.load());
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("StorageCorruptionError");
    expect(error).toMatchObject({ kind: "log-entry", index: 9, path: db });
    expect(error.message).toContain(`Log entry 9 in "${db}" fails its checksum`);
    expect(error.message).toContain('over index 9, term 2, kind "command" and 56 bytes of data');
    expect(storage.scrubCounters().corruptionsFound["log-entry"]).toBe(1);
  });

  test("in the kind is damage, not a bug (no AssertionError on an unknown kind)", () => {
    const { dir, db } = makeDataDir();
    // The first entry stored after the others' rows is the one whose kind follows its
    // value; any "command" will do as long as only one is changed: change it via a value.
    const bytes = readFileSync(db);
    const at = bytes.indexOf("good-value-0011-");
    const kindAt = bytes.lastIndexOf("command", at);
    expect(kindAt).toBeGreaterThan(0);
    expect(at - kindAt).toBeLessThan(16);
    writeBytesAt(db, kindAt, encoder.encode("commanx"));
    const storage = open(dir);
    expect(corruptionOf(() => storage.load())).toMatchObject({ kind: "log-entry", index: 11 });
  });

  test("written at the wrong index or term is caught (a row rewritten by SQL)", () => {
    const { dir, db } = makeDataDir();
    // Entry 8's row now holds term 3: what a write that landed in the wrong row leaves.
    rawRun(db, 'UPDATE log SET term = 3 WHERE "index" = 8');
    const storage = open(dir);
    expect(corruptionOf(() => storage.load())).toMatchObject({ kind: "log-entry", index: 8 });
  });

  test("fails a write that checks against the damaged entry, and the write changes nothing", () => {
    const { dir, db } = makeDataDir();
    patchFile(db, "good-value-0012-", "good-valuf-0012-");
    const storage = open(dir);
    // A new entry 13 is checked against entry 12's term.
    const error = corruptionOf(() =>
      storage.persist({ hardState: undefined, entries: [entry(13, 2)] })
    );
    expect(error).toMatchObject({ kind: "log-entry", index: 12 });
    const raw = new Database(db, { readonly: true });
    expect(raw.query('SELECT count(*) AS count FROM log WHERE "index" = 13').get()).toEqual({
      count: 0,
    });
    raw.close();
    expect(storage.scrubStep(1_000_000).problems.map((problem) => problem.index)).toEqual([12]);
  });

  test("an intact log loads and scrubs clean", () => {
    const { dir } = makeDataDir();
    const storage = open(dir);
    expect(storage.load().entries.map((stored) => stored.data)).toEqual(
      Array.from({ length: 12 }, (_, i) => value(i + 1)),
    );
    const pass = scrubPass(storage, 1_000_000);
    expect(pass.problems).toEqual([]);
    expect(storage.scrubCounters().corruptionsFound).toEqual({
      "log-entry": 0,
      "hard-state": 0,
      meta: 0,
      snapshot: 0,
      "snapshot-chunk": 0,
    });
  });
});

describe("the hard state and meta", () => {
  test("a flipped byte in the hard state's vote makes load() throw", () => {
    const { dir, db } = makeDataDir();
    patchFile(db, "voter-b", "voter-c");
    const storage = open(dir);
    const error = corruptionOf(() => storage.load());
    expect(error).toMatchObject({ kind: "hard-state", index: undefined, path: db });
    expect(error.message).toContain(`Hard state in "${db}" fails its checksum`);
    expect(error.message).toContain('votedFor "voter-c", commitIndex 10');
  });

  test("a changed term in the hard state makes load() and the next write throw", () => {
    const { dir, db } = makeDataDir();
    rawRun(db, "UPDATE hard_state SET term = 1");
    const storage = open(dir);
    expect(corruptionOf(() => storage.load()).kind).toBe("hard-state");
    // A vote is never cast from (nor checked against) a damaged hard state.
    const error = corruptionOf(() =>
      storage.persist({
        hardState: { term: 3, votedFor: "node-a", commitIndex: 10 },
        entries: [],
      })
    );
    expect(error.kind).toBe("hard-state");
  });

  test("a flipped byte in the incarnation makes identity() and load() throw", () => {
    const { dir, db, incarnation } = makeDataDir();
    const changed = incarnation[31] === "0" ? "1" : "0";
    patchFile(db, incarnation, incarnation.slice(0, 31) + changed);
    const storage = open(dir);
    const error = corruptionOf(() => storage.identity("node-a"));
    expect(error).toMatchObject({ kind: "meta", path: db });
    expect(error.message).toContain(`Meta row (the identity) in "${db}" fails its checksum`);
    expect(corruptionOf(() => storage.load()).kind).toBe("meta");
    expect(corruptionOf(() => storage.setStatus("recovering")).kind).toBe("meta");
    expect(corruptionOf(() => storage.reincarnate()).kind).toBe("meta");
  });

  test("a changed status is caught (a row rewritten by SQL)", () => {
    const { dir, db } = makeDataDir();
    rawRun(db, "UPDATE meta SET status = 'recovering'");
    const storage = open(dir);
    expect(corruptionOf(() => storage.identity("node-a")).kind).toBe("meta");
  });

  test("status changes and reincarnations keep the meta row's checksum right", () => {
    const { dir } = makeDataDir();
    let storage = open(dir);
    storage.setStatus("recovering");
    storage.persist({ hardState: undefined, entries: [], status: "normal" });
    const reborn = storage.reincarnate();
    close(storage);
    storage = open(dir);
    expect(storage.identity("node-a")).toEqual(reborn);
    expect(scrubPass(storage, 1_000_000).problems).toEqual([]);
  });
});

describe("snapshot files", () => {
  test("a flipped byte fails the reads of its block, and only those", () => {
    const { dir, snapshot } = makeDataDir();
    const damagedAt = 2 * blockBytes + 500;
    flipByte(snapshot, damagedAt);
    const storage = open(dir);
    // The blocks before it still read (a chunk send of intact bytes may go on).
    expect(storage.readSnapshotChunk(6, 0, 2 * blockBytes)).toEqual(
      snapshotData.subarray(0, 2 * blockBytes),
    );
    expect(storage.readSnapshotChunk(6, 3 * blockBytes, 1000)).toEqual(
      snapshotData.subarray(3 * blockBytes),
    );
    const error = corruptionOf(() => storage.readSnapshotChunk(6, 2 * blockBytes + 10, 20));
    expect(error).toMatchObject({
      kind: "snapshot-chunk",
      index: 6,
      offset: 2 * blockBytes,
      path: snapshot,
    });
    expect(error.message).toContain(
      `Snapshot file "${snapshot}" of snapshot {index 6, term 1, ${snapshotBytes} bytes}: ` +
        `bytes ${2 * blockBytes} to ${3 * blockBytes} (block 2) fail their checksum`,
    );
    // The node's start, rollback and install read the whole snapshot: never the damage.
    expect(corruptionOf(() => storage.readSnapshot()).kind).toBe("snapshot-chunk");
  });

  test("a flipped byte in the last, short block is caught", () => {
    const { dir, snapshot } = makeDataDir();
    flipByte(snapshot, snapshotBytes - 1);
    const storage = open(dir);
    expect(corruptionOf(() => storage.readSnapshotChunk(6, snapshotBytes - 1, 1))).toMatchObject({
      kind: "snapshot-chunk",
      offset: 3 * blockBytes,
    });
  });

  test("a truncated file refuses the open, or fails the reads when cut while open", () => {
    const { dir, snapshot } = makeDataDir();
    truncateSync(snapshot, blockBytes + 7);
    const error = corruptionOf(() => SqliteStorage.open(dir));
    expect(error).toMatchObject({ kind: "snapshot", index: 6, path: snapshot });
    expect(error.message).toContain(`has ${blockBytes + 7} bytes, but snapshot`);

    const fresh = makeDataDir();
    const storage = open(fresh.dir);
    truncateSync(fresh.snapshot, blockBytes + 7);
    expect(storage.readSnapshotChunk(6, 0, blockBytes)).toEqual(
      snapshotData.subarray(0, blockBytes),
    );
    expect(corruptionOf(() => storage.readSnapshotChunk(6, blockBytes, blockBytes))).toMatchObject(
      { kind: "snapshot", index: 6 },
    );
  });

  test("a changed snapshot row or block checksum list refuses the open", () => {
    const first = makeDataDir();
    rawRun(first.db, "UPDATE snapshot SET term = 2");
    const rowError = corruptionOf(() => SqliteStorage.open(first.dir));
    expect(rowError).toMatchObject({ kind: "snapshot", index: 6, path: first.db });
    expect(rowError.message).toContain(`Snapshot row in "${first.db}" fails its checksum`);

    const second = makeDataDir();
    // Block 1's checksum in the list zeroed, as a torn write of the row would leave it.
    const db = new Database(second.db, { strict: true });
    const row = db.query<{ block_checksums: Uint8Array }, []>(
      "SELECT block_checksums FROM snapshot",
    ).get();
    const list = new Uint8Array(row!.block_checksums);
    list.fill(0, 8, 16);
    db.run("UPDATE snapshot SET block_checksums = ?", [list]);
    db.close();
    const listError = corruptionOf(() => SqliteStorage.open(second.dir));
    expect(listError).toMatchObject({ kind: "snapshot", index: 6 });
    expect(listError.message).toContain("fail the file checksum");
  });

  test("staged and background-saved snapshots are checksummed as they arrive", async () => {
    const { dir } = makeDataDir();
    let storage = open(dir);
    // Staged in chunks that do not line up with the blocks.
    const staged = { index: 20, term: 2, bytes: 2 * blockBytes + 3 };
    const stagedData = patterned(staged.bytes, 4);
    for (const [from, to] of [[0, 1000], [1000, blockBytes + 5], [blockBytes + 5, staged.bytes]]) {
      storage.stageSnapshotChunk(staged, from!, stagedData.subarray(from, to));
    }
    storage.installStagedSnapshot(staged);
    expect(storage.readSnapshot()).toEqual({ meta: staged, data: stagedData });
    storage.persist({ hardState: undefined, entries: [entry(21, 2), entry(22, 2)] });
    const saved = { index: 22, term: 2, bytes: blockBytes + 9 };
    const savedData = patterned(saved.bytes, 5);
    const parts = [
      savedData.subarray(0, 10),
      savedData.subarray(10, blockBytes + 1),
      savedData.subarray(blockBytes + 1),
    ];
    expect(await storage.saveSnapshotInBackground(saved, parts)).toBe(true);
    close(storage);
    storage = open(dir);
    expect(storage.readSnapshot()).toEqual({ meta: saved, data: savedData });
    expect(scrubPass(storage, 1_000_000).problems).toEqual([]);
    close(storage);
    flipByte(join(dir, "snapshots", "22-2-3.snap"), blockBytes);
    storage = open(dir);
    expect(corruptionOf(() => storage.readSnapshot())).toMatchObject({
      kind: "snapshot-chunk",
      offset: blockBytes,
    });
  });
});

describe("the scrubber", () => {
  test("finds every flipped byte in one pass, goes on past them, and finds them again", () => {
    const { dir, db, snapshot } = makeDataDir();
    patchFile(db, "good-value-0004-", "baad-value-0004-");
    patchFile(db, "good-value-0010-", "good-value-0O10-");
    flipByte(snapshot, blockBytes + 1);
    const storage = open(dir);
    // Small steps: the pass is spread over many of them (a step verifies at least one
    // entry or one 64 KiB block, so the file takes one step per block).
    const pass = scrubPass(storage, 256);
    expect(pass.steps).toBeGreaterThanOrEqual(8);
    expect(kinds(pass.problems)).toEqual([
      ["log-entry", 4],
      ["log-entry", 10],
      ["snapshot-chunk", 6],
    ]);
    expect(pass.problems[2]!.offset).toBe(blockBytes);
    // Everything was read: the entries' data and the whole snapshot file.
    expect(pass.bytes).toBeGreaterThan(12 * 56 + snapshotBytes);
    const counters = storage.scrubCounters();
    expect(counters).toMatchObject({
      passesCompleted: 1,
      bytesVerified: pass.bytes,
      passBytesVerified: 0,
      problemsFound: 3,
    });
    expect(counters.corruptionsFound).toMatchObject({ "log-entry": 2, "snapshot-chunk": 1 });
    // The scrubber cycles: the next pass finds the same damage again.
    expect(kinds(scrubPass(storage, 1_000_000).problems)).toEqual(kinds(pass.problems));
    expect(storage.scrubCounters().passesCompleted).toBe(2);
  });

  test("a step reads about its budget, never the whole store at once", () => {
    const { dir } = makeDataDir();
    const storage = open(dir);
    // Within the rows and the log: at most one entry past the budget.
    const budget = 100;
    let bytes = 0;
    for (let i = 0; i < 5; i++) {
      const step = storage.scrubStep(budget);
      expect(step.done).toBe(false);
      expect(step.bytesVerified).toBeGreaterThanOrEqual(budget);
      expect(step.bytesVerified).toBeLessThan(budget + 100);
      bytes += step.bytesVerified;
    }
    expect(storage.scrubCounters()).toMatchObject({
      passesCompleted: 0,
      bytesVerified: bytes,
      passBytesVerified: bytes,
    });
    // In the snapshot file: at most one 64 KiB block past it.
    const pass = scrubPass(storage, 1000);
    expect(pass.bytes).toBeGreaterThan(snapshotBytes);
  });

  test("finds damage in the meta, hard state and snapshot row without stopping", () => {
    const { dir, db, incarnation } = makeDataDir();
    patchFile(db, incarnation, incarnation.toUpperCase());
    patchFile(db, "voter-b", "voter-x");
    patchFile(db, "good-value-0007-", "good-value-0007_");
    const storage = open(dir);
    expect(kinds(scrubPass(storage, 1_000_000).problems)).toEqual([
      ["meta", undefined],
      ["hard-state", undefined],
      ["log-entry", 7],
    ]);
    // A snapshot row rewritten while the storage is open (by SQL, through the WAL).
    rawRun(db, "UPDATE snapshot SET bytes = 7");
    expect(kinds(scrubPass(storage, 1_000_000).problems)).toEqual([
      ["meta", undefined],
      ["hard-state", undefined],
      ["snapshot", 6],
      ["log-entry", 7],
    ]);
    expect(corruptionOf(() => storage.latestSnapshot()).kind).toBe("snapshot");
  });

  test("finds a snapshot file truncated, or removed, while the storage has it open", () => {
    const { dir, snapshot } = makeDataDir();
    const storage = open(dir);
    expect(scrubPass(storage, 1_000_000).problems).toEqual([]);
    truncateSync(snapshot, 2 * blockBytes);
    const truncated = scrubPass(storage, 1_000_000).problems;
    // The size check at the pass's start, then the first block it cannot read.
    expect(kinds(truncated)).toEqual([["snapshot", 6], ["snapshot", 6]]);
    expect(truncated[0]!.message).toContain(`has ${2 * blockBytes} bytes`);
    expect(truncated[1]!.message).toContain(`ends at byte ${2 * blockBytes}`);

    const moved = `${snapshot}.moved`;
    renameSync(snapshot, moved);
    const missing = scrubPass(storage, 1_000_000).problems;
    expect(missing[0]!.message).toContain("is missing");
  });

  test("a snapshot replaced mid-pass is verified from its first block", () => {
    const { dir } = makeDataDir();
    const storage = open(dir);
    // Into the snapshot file, part way through it (the rows come to ~2 KiB).
    while (storage.scrubCounters().passBytesVerified < 2 * blockBytes) {
      expect(storage.scrubStep(blockBytes).done).toBe(false);
    }
    // The old file is closed and removed; the pass goes on with the new one.
    storage.saveSnapshot({ index: 10, term: 2, bytes: 10 }, patterned(10, 1));
    const rest = scrubPass(storage, 1_000_000);
    expect(rest.problems).toEqual([]);
    expect(rest.bytes).toBeLessThan(blockBytes);
  });

  test("an empty data dir scrubs in one step", () => {
    const storage = open(dirs.make());
    expect(storage.scrubStep(1)).toEqual({ done: true, bytesVerified: 0, problems: [] });
    expect(storage.scrubCounters().passesCompleted).toBe(1);
  });
});

describe("quarantine", () => {
  test("moves the storage's files aside with the reason, and the dir opens empty", () => {
    const { dir, db, incarnation } = makeDataDir();
    patchFile(db, "good-value-0009-", "baad-value-0009-");
    const storage = open(dir);
    const error = corruptionOf(() => storage.load());
    close(storage);
    // The storage must be closed: the quarantine takes the data dir's lock.
    const busy = open(dir);
    expect(() => quarantineDataDir(dir, error.message)).toThrow(/in use by another keel process/);
    close(busy);

    const now = new Date("2026-12-08T04:05:06.789Z");
    const report = quarantineDataDir(dir, error.message, now);
    expect(report.path).toBe(join(dir, "quarantined-2026-12-08T04-05-06-789Z"));
    expect(report.moved).toEqual(["snapshots", "keel.db"]);
    expect(readFileSync(join(report.path, "REASON.txt"), "utf8")).toBe(
      `Quarantined by keel at 2026-12-08T04:05:06.789Z: ${error.message}\n`,
    );
    // Kept as it was, for forensics: the damage is still there to see.
    expect(readFileSync(join(report.path, "snapshots", "6-1-1.snap"))).toEqual(
      Buffer.from(snapshotData),
    );
    expect(readFileSync(join(report.path, databaseFileName)).indexOf("baad-value-0009-"))
      .toBeGreaterThan(0);

    const fresh = open(dir);
    expect(fresh.isEmpty()).toBe(true);
    expect(fresh.identity("node-a").incarnation).not.toBe(incarnation);
    close(fresh);
    // A second quarantine at the same instant gets its own directory.
    expect(quarantineDataDir(dir, "again", now).path).toBe(`${report.path}-1`);
  });
});
