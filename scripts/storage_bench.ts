// Times SqliteStorage.write() for batches of 1, 16 and 64 entries of 1 KiB: the log's hot
// path. Not a test (timings never gate one): run it by hand before and after a storage
// change, on the same disk, and compare.
//   bun scripts/storage_bench.ts [seconds per case=3] [dir=os.tmpdir()]
//   BASELINE=/old/checkout/src/storage/sqlite_storage.ts bun scripts/storage_bench.ts
// With BASELINE, that build's SqliteStorage runs in the same process, its rounds
// alternating with this one's, so both see the same load on a shared machine.
//
// Two modes per batch size:
// - write: write() alone, the CPU the event loop spends per batch (SQL, checksums);
// - write+sync: write() then await sync() for every batch, as the node does when one
//   batch is in flight at a time, so the fdatasync of the WAL dominates.
// Each case runs in rounds; printed are the median round's entries/s, the best round's
// (on a shared machine the steadier figure for CPU cost), and the CPU time (user+system)
// per batch, median of the rounds.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Entry } from "../src/consensus/types.ts";
import { SqliteStorage } from "../src/storage/sqlite_storage.ts";

const secondsPerCase = Number(process.argv[2] ?? 3);
const root = mkdtempSync(join(process.argv[3] ?? tmpdir(), "keel-storage-bench-"));
const entryBytes = 1024;
const rounds = Number(process.env.ROUNDS ?? 7);

/** Storage is what the bench needs of a SqliteStorage build. */
interface Storage {
  identity(name: string): unknown;
  write(batch: { hardState: unknown; entries: Entry[] }): boolean;
  sync(): Promise<void>;
  close(): void;
}
interface Build {
  name: string;
  open: (dir: string) => Storage;
}

const builds: Build[] = [{ name: "current", open: (dir) => SqliteStorage.open(dir) }];
if (process.env.BASELINE !== undefined) {
  const module = await import(process.env.BASELINE);
  builds.unshift({ name: "baseline", open: (dir) => module.SqliteStorage.open(dir) });
}

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
  cpuMicrosPerBatch: number;
}

async function runRound(
  storage: Storage,
  next: { index: number },
  batchEntries: number,
  withSync: boolean,
  millis: number,
): Promise<Round> {
  const data = payload(batchEntries);
  let batches = 0;
  let spent = 0;
  const cpuBefore = process.cpuUsage();
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
  const cpu = process.cpuUsage(cpuBefore);
  return {
    entriesPerSecond: batches * batchEntries / (spent / 1000),
    cpuMicrosPerBatch: (cpu.user + cpu.system) / batches,
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
      const runs = builds.map((build) => {
        const dir = join(root, `${build.name}-${withSync ? "sync" : "write"}-${batchEntries}`);
        const storage = build.open(dir);
        storage.identity("bench");
        return { build, storage, next: { index: 1 }, measured: [] as Round[] };
      });
      // Warm-up: statements, page cache, WAL growth.
      for (const run of runs) await runRound(run.storage, run.next, batchEntries, withSync, 300);
      for (let round = 0; round < rounds; round++) {
        for (const run of runs) {
          const millis = secondsPerCase * 1000 / rounds;
          run.measured.push(await runRound(run.storage, run.next, batchEntries, withSync, millis));
        }
      }
      for (const run of runs) {
        run.storage.close();
        const perSecond = run.measured.map((round) => round.entriesPerSecond);
        results.push({
          build: run.build.name,
          mode: withSync ? "write+sync" : "write",
          batchEntries,
          entriesPerSecond: Math.round(median(perSecond)),
          bestEntriesPerSecond: Math.round(Math.max(...perSecond)),
          cpuMicrosPerBatch: Number(
            median(run.measured.map((round) => round.cpuMicrosPerBatch)).toFixed(1),
          ),
          spread: `${Math.round(Math.min(...perSecond))}-${Math.round(Math.max(...perSecond))}`,
        });
      }
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
console.table(results);
console.log(JSON.stringify(results));
