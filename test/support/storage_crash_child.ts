// The process the storage crash test kills. Usage:
//   bun test/support/storage_crash_child.ts <dir> <seed> <steps>
// It opens SqliteStorage on <dir>, prints `ready <incarnation> <synchronous> <walSync>`,
// then runs <steps> workload steps, printing one line per step once the step is durable:
//   ack <lastIndex> <term> <commitIndex> <hardStateTerm>   after persist() returned, or
//                                   (every other step) after write() and sync() resolved
// where <term> is the term of the entry at <lastIndex>
//   snap <index> <term> <bytes>   after saveSnapshot() returned
//   compact <index>               after compactLog() returned
//   install <index> <term> <bytes>     after staging every chunk and installStagedSnapshot()
//   stage <index> <term> <received>    after staging that many bytes (not synced, abandoned)
// then `done`, and waits to be killed.

import { writeSync } from "node:fs";
import type { SnapshotMeta } from "../../src/consensus/types.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { ackLine, modelOf, Workload } from "./storage_crash_workload.ts";

const [dir, seedText, stepsText] = process.argv.slice(2);
if (dir === undefined || seedText === undefined || stepsText === undefined) {
  throw new Error("Usage: storage_crash_child.ts <dir> <seed> <steps>");
}

// writeSync: the line is in the pipe before the next step starts, so every ack the test
// reads was printed after its step was durable, and none is lost in a buffer at the kill.
function print(line: string): void {
  writeSync(1, `${line}\n`);
}

const storage = SqliteStorage.open(dir);
const identity = storage.identity("crash-child");
const settings = storage.durabilitySettings();
print(`ready ${identity.incarnation} ${settings.synchronous} ${settings.walSync}`);

/** stage stages bytes [0, end) of a snapshot in chunks, as a follower receives them. */
function stage(meta: SnapshotMeta, data: Uint8Array, end: number, chunkBytes: number): void {
  let offset = 0;
  do {
    const chunk = data.subarray(offset, Math.min(end, offset + chunkBytes));
    storage.stageSnapshotChunk(meta, offset, chunk);
    offset += chunk.length;
  } while (offset < end);
}

const workload = new Workload(Number(seedText), modelOf(storage.load()));
for (let i = 0; i < Number(stepsText); i++) {
  const step = workload.next();
  if (step.type === "persist") {
    if (i % 2 === 0) {
      storage.persist({ hardState: step.hardState, entries: step.entries });
    } else {
      storage.write({ hardState: step.hardState, entries: step.entries });
      await storage.sync();
    }
  } else if (step.type === "snapshot") {
    storage.saveSnapshot(step.meta, step.data);
  } else if (step.type === "install") {
    stage(step.meta, step.data, step.meta.bytes, step.chunkBytes);
    storage.installStagedSnapshot(step.meta);
  } else if (step.type === "stage") {
    stage(step.meta, step.data, step.received, 256 * 1024);
  } else {
    storage.compactLog(step.index);
  }
  print(ackLine(step, workload.model));
}
print("done");
setInterval(() => {}, 60_000);
