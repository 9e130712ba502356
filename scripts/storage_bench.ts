// Times SqliteStorage.write() for batches of 1, 16 and 64 entries of 1 KiB: the log's hot
// path. Not a test (timings never gate one): run it by hand before and after a storage
// change, on the same disk, and compare.
//   bun scripts/storage_bench.ts [seconds per case=3] [dir=os.tmpdir()]
//
// Two numbers per batch size:
// - write: write() alone, the CPU the event loop spends per batch (SQL, checksums);
// - write+sync: write() then await sync() for every batch, as the node does when one
//   batch is in flight at a time, so the fdatasync of the WAL dominates.
// Each case runs in rounds; the median round is printed, with the spread.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Entry } from "../src/consensus/types.ts";
import { SqliteStorage } from "../src/storage/sqlite_storage.ts";

const secondsPerCase = Number(process.argv[2] ?? 3);
const root = mkdtempSync(join(process.argv[3] ?? tmpdir(), "keel-storage-bench-"));
const entryBytes = 1024;
const rounds = 5;

function payload(seed: number): Uint8Array {
  const data = new Uint8Array(entryBytes);
  let state = seed | 1;
  for (let i = 0; i < data.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    data[i] = state >>> 24;
  }
  return data;
}

interface Round {
  entriesPerSecond: number;
  batchMicros: number;
}

async function runRound(
  storage: SqliteStorage,
  next: { index: number },
  batchEntries: number,
  withSync: boolean,
  millis: number,
): Promise<Round> {
  const data = payload(batchEntries);
  let batches = 0;
  let spent = 0;
  const started = performance.now();
  while (performance.now() - started < millis) {
    const entries: Entry[] = [];
    for (let i = 0; i < batchEntries; i++) {
      entries.push({ index: next.index++, term: 1, kind: "command", data });
    }
    const before = performance.now();
    storage.write({
      hardState: { term: 1, votedFor: null, commitIndex: next.index - 1 },
      entries,
    });
    if (withSync) await storage.sync();
    spent += performance.now() - before;
    batches++;
  }
  return {
    entriesPerSecond: batches * batchEntries / (spent / 1000),
    batchMicros: spent * 1000 / batches,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const results: Record<string, unknown>[] = [];
try {
  for (const withSync of [false, true]) {
    for (const batchEntries of [1, 16, 64]) {
      const dir = join(root, `${withSync ? "sync" : "write"}-${batchEntries}`);
      const storage = SqliteStorage.open(dir);
      storage.identity("bench");
      const next = { index: 1 };
      // Warm-up: statements, page cache, WAL growth.
      await runRound(storage, next, batchEntries, withSync, 300);
      const measured: Round[] = [];
      for (let round = 0; round < rounds; round++) {
        measured.push(
          await runRound(storage, next, batchEntries, withSync, secondsPerCase * 1000 / rounds),
        );
      }
      storage.close();
      const perSecond = measured.map((round) => round.entriesPerSecond);
      results.push({
        mode: withSync ? "write+sync" : "write",
        batchEntries,
        entriesPerSecond: Math.round(median(perSecond)),
        batchMicros: Number(median(measured.map((round) => round.batchMicros)).toFixed(1)),
        spread: `${Math.round(Math.min(...perSecond))}-${Math.round(Math.max(...perSecond))}`,
      });
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
console.table(results);
console.log(JSON.stringify(results));
