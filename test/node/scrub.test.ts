// The scrubber paces storage's scrubStep from the node's ticks (issue 13): nothing before
// its interval, a bounded slice per tick, a full pass counted, and damage written into
// the database behind the running storage's back (a misdirected write) is found.

import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { Scrubber, scrubStepBytesMin } from "../../src/node/scrub.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { openedStorages } from "../support/opened_storages.ts";

const { dirs, open } = openedStorages();

function storageWithEntries(count: number): { storage: SqliteStorage; dir: string } {
  const dir = dirs.make();
  const storage = open(dir);
  storage.identity("node-a");
  const entries = Array.from({ length: count }, (_, i) => ({
    index: i + 1,
    term: 1,
    kind: "command" as const,
    data: new TextEncoder().encode(`good-value-${String(i + 1).padStart(4, "0")}`.padEnd(56, "x")),
  }));
  storage.persist({ hardState: { term: 1, votedFor: "node-a", commitIndex: count }, entries });
  return { storage, dir };
}

test("no step before the interval; then slices of the rate per tick until a full pass", () => {
  const { storage } = storageWithEntries(200);
  const scrubber = new Scrubber(storage, {
    intervalMs: 60_000,
    bytesPerSecond: 100_000,
    tickMs: 10,
    now: 0,
  });
  expect(scrubber.tick(59_999)).toEqual([]);
  expect(scrubber.view().bytesVerified).toBe(0);
  let now = 60_000;
  let ticks = 0;
  while (scrubber.view().passesCompleted === 0 && ticks < 1000) {
    expect(scrubber.tick(now)).toEqual([]);
    now += 10;
    ticks++;
  }
  const view = scrubber.view();
  expect(view.passesCompleted).toBe(1);
  expect(view.lastFullPassAt).toBe(now - 10);
  expect(view.scrubbing).toBe(false);
  // 100 kB/s x 10 ms is 1,000 bytes a tick, under the floor: each step verifies about 4 KiB.
  expect(ticks).toBeGreaterThan(1);
  expect(view.bytesVerified).toBeLessThanOrEqual(ticks * (scrubStepBytesMin + 1024));
  // The next pass waits an interval again.
  expect(scrubber.tick(now)).toEqual([]);
  expect(scrubber.view().passesCompleted).toBe(1);
});

test("damage written behind the running storage's back is found by the next pass", () => {
  const { storage, dir } = storageWithEntries(50);
  const raw = new Database(join(dir, "keel.db"));
  raw.run(`UPDATE log SET data = CAST('baad-value-0030' AS BLOB) WHERE "index" = 30`);
  raw.close();
  const scrubber = new Scrubber(storage, {
    intervalMs: 1,
    bytesPerSecond: 1e9,
    tickMs: 10,
    now: 0,
  });
  const found = [];
  for (let now = 1; now < 100 && found.length === 0; now++) found.push(...scrubber.tick(now));
  expect(found.map((problem) => [problem.kind, problem.index])).toEqual([["log-entry", 30]]);
  expect(scrubber.view().problemsFound).toBe(1);
  expect(scrubber.view().corruptionsFound["log-entry"]).toBe(1);
});

test("scrub_interval 0 never scrubs", () => {
  const { storage } = storageWithEntries(10);
  const scrubber = new Scrubber(storage, {
    intervalMs: 0,
    bytesPerSecond: 1e9,
    tickMs: 10,
    now: 0,
  });
  for (let now = 0; now < 1000; now += 10) expect(scrubber.tick(now)).toEqual([]);
  expect(scrubber.view().bytesVerified).toBe(0);
});
