// Times SqliteStorage's snapshot paths for one big snapshot. Not a test: run it by hand,
//   bun test/support/storage_snapshot_bench.ts [MiB=100] [dir=os.tmpdir()]
// and compare the numbers before and after a storage change (on the same disk).
//
// It measures what pauses the node's one thread: a leader's saveSnapshot (twice: the
// second replaces the first), readSnapshot (startup, rollback), the leader's catch-up reads
// (readSnapshotChunk, 1 MiB at a time) and a follower's 1 MiB stageSnapshotChunk calls,
// paced as a leader sends them, followed by installStagedSnapshot.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SnapshotMeta } from "../../src/consensus/types.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";

const mib = 1024 * 1024;
const sizeMib = Number(process.argv[2] ?? 100);
const root = mkdtempSync(join(process.argv[3] ?? tmpdir(), "keel-snapshot-bench-"));

function filled(bytes: number, seed: number): Uint8Array {
  const words = new Uint32Array(bytes / 4);
  let state = seed | 1;
  for (let i = 0; i < words.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[i] = state >>> 0;
  }
  return new Uint8Array(words.buffer);
}

function timed<T>(label: string, work: () => T): T {
  const started = performance.now();
  const result = work();
  console.log(`${label.padEnd(44)} ${(performance.now() - started).toFixed(1).padStart(8)} ms`);
  return result;
}

function leader(data: Uint8Array[]): void {
  const storage = SqliteStorage.open(join(root, "leader"));
  const entries = [1, 2].map((index) => ({
    index,
    term: 1,
    kind: "command" as const,
    data: new Uint8Array(100),
  }));
  storage.persist({ hardState: { term: 1, votedFor: null, commitIndex: 2 }, entries });
  for (const [i, bytes] of data.entries()) {
    const meta = { index: i + 1, term: 1, bytes: bytes.byteLength };
    timed(`saveSnapshot ${sizeMib} MiB (#${i + 1})`, () => storage.saveSnapshot(meta, bytes));
  }
  const read = timed(`readSnapshot ${sizeMib} MiB`, () => storage.readSnapshot());
  if (read?.data.byteLength !== sizeMib * mib) throw new Error("readSnapshot read back short");
  let slowest = 0;
  timed(`readSnapshotChunk ${sizeMib} x 1 MiB`, () => {
    for (let offset = 0; offset < sizeMib * mib; offset += mib) {
      const started = performance.now();
      storage.readSnapshotChunk(2, offset, mib);
      slowest = Math.max(slowest, performance.now() - started);
    }
  });
  console.log(`${"  slowest chunk read".padEnd(44)} ${slowest.toFixed(1).padStart(8)} ms`);
  console.log(
    `${"sizeBytes".padEnd(44)} ${(storage.sizeBytes() / mib).toFixed(1).padStart(8)} MiB`,
  );
  storage.close();
}

/** follower receives the snapshot at the default catch-up rate (64 MiB/s), then installs. */
async function follower(data: Uint8Array): Promise<void> {
  const storage = SqliteStorage.open(join(root, "follower"));
  const meta: SnapshotMeta = { index: 1000, term: 3, bytes: data.byteLength };
  const chunkIntervalMs = 1000 / 64;
  let slowest = 0;
  let total = 0;
  for (let offset = 0; offset < meta.bytes; offset += mib) {
    const started = performance.now();
    storage.stageSnapshotChunk(meta, offset, data.subarray(offset, offset + mib));
    const took = performance.now() - started;
    slowest = Math.max(slowest, took);
    total += took;
    await Bun.sleep(Math.max(0, chunkIntervalMs - took));
  }
  console.log(
    `${`stageSnapshotChunk ${sizeMib} x 1 MiB (sum)`.padEnd(44)} ${
      total.toFixed(1).padStart(8)
    } ms`,
  );
  console.log(`${"  slowest chunk".padEnd(44)} ${slowest.toFixed(1).padStart(8)} ms`);
  timed("installStagedSnapshot", () => storage.installStagedSnapshot(meta));
  storage.close();
}

try {
  const data = [filled(sizeMib * mib, 1), filled(sizeMib * mib, 2)];
  leader(data);
  await follower(data[0]!);
} finally {
  rmSync(root, { recursive: true, force: true });
}
