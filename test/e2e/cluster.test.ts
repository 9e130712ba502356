// End-to-end: the compiled binary, three real processes on 127.0.0.21-23, real SQLite
// files, kill -9. The journey of DESIGN §1.2-1.3: a cluster forms, takes writes through
// any node, loses its leader, elects another, and loses nothing acknowledged.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { raftDefaults } from "../../src/consensus/config.ts";
import { snapshotTrailingEntries } from "../../src/node/node.ts";
import { TestCluster } from "../support/cluster.ts";

let cluster: TestCluster;

beforeAll(() => {
  cluster = new TestCluster({ ipBase: 21, snapshotEntries: 300 });
  cluster.startAll();
});

afterAll(async () => {
  await cluster.stop();
});

const acknowledged = new Map<string, string>();

/** writeMany writes count keys through the given nodes, `parallel` at a time. */
async function writeMany(
  prefix: string,
  count: number,
  nodes: string[],
  parallel = 16,
): Promise<void> {
  let next = 0;
  // Each worker is one client: its idempotency sequence numbers only go up.
  const worker = async (workerIndex: number): Promise<void> => {
    let seq = 0;
    while (next < count) {
      const i = next++;
      const key = `${prefix}-${i}`;
      const value = `value-${prefix}-${i}`;
      await cluster.putWithRetry(
        [nodes[i % nodes.length]!],
        key,
        value,
        `e2e-${prefix}-${workerIndex}:${++seq}`,
      );
      acknowledged.set(key, value);
    }
  };
  await Promise.all(Array.from({ length: parallel }, (_, workerIndex) => worker(workerIndex)));
}

async function expectAllReadable(
  name: string,
  consistency: "linearizable" | "stale",
): Promise<void> {
  const missing: string[] = [];
  const entries = [...acknowledged];
  for (let i = 0; i < entries.length; i += 50) {
    await Promise.all(
      entries.slice(i, i + 50).map(async ([key, value]) => {
        const response = await cluster.get(name, key, consistency);
        const body = await response.text();
        if (response.status !== 200 || body !== value) {
          missing.push(`${key}: ${response.status} ${body.slice(0, 80)}`);
        }
      }),
    );
  }
  expect(missing).toEqual([]);
}

test("three nodes form a cluster with one leader", async () => {
  const leader = await cluster.waitForLeader();
  const statuses = await Promise.all(cluster.members.map((m) => cluster.status(m.name)));
  expect(statuses.filter((s) => s?.role === "leader").map((s) => s?.name)).toEqual([leader]);
  expect(new Set(statuses.map((s) => s?.term)).size).toBe(1);
});

test("1000 writes through different nodes are acknowledged and readable everywhere", async () => {
  await writeMany("first", 1000, cluster.members.map((m) => m.name));
  expect(acknowledged.size).toBe(1000);
  for (const member of cluster.members) await expectAllReadable(member.name, "linearizable");
});

test("after kill -9 of the leader a new leader is elected and writes succeed again", async () => {
  const oldLeader = await cluster.waitForLeader();
  await cluster.kill(oldLeader);
  const survivors = cluster.members.map((m) => m.name).filter((name) => name !== oldLeader);
  const newLeader = await cluster.waitForLeader([oldLeader]);
  expect(newLeader).not.toBe(oldLeader);
  await writeMany("second", 200, survivors);
  for (const name of survivors) await expectAllReadable(name, "linearizable");
  cluster.start(oldLeader);
});

test("the killed node restarts, catches up, and serves every acknowledged write", async () => {
  const names = cluster.members.map((m) => m.name);
  await cluster.waitFor("every node applied the leader's commit index", async () => {
    const statuses = await Promise.all(names.map((name) => cluster.status(name)));
    if (statuses.some((s) => s === undefined)) return undefined;
    const commit = Math.max(...statuses.map((s) => s!.commitIndex));
    return statuses.every((s) => s!.appliedIndex >= commit) ? true : undefined;
  });
  for (const name of names) await expectAllReadable(name, "stale");
});

test("a node behind a compacted log catches up by snapshot", async () => {
  const leader = await cluster.waitForLeader();
  const follower = cluster.members.map((m) => m.name).find((name) => name !== leader)!;
  const killedAt = (await cluster.status(follower))!.lastIndex;
  await cluster.kill(follower);
  const others = cluster.members.map((m) => m.name).filter((name) => name !== follower);
  // The follower must come back behind the leader's compacted log, or it catches up by
  // appends alone and never installs a snapshot. The leader compacts only when it takes a
  // snapshot (every snapshot_entries, 300 plus up to a quarter) and keeps the last
  // snapshotTrailingEntries; and the appends it sent the dead follower (up to
  // inflightMessagesMax in flight, each with at most one new entry per writer, plus a few
  // of its own) wait in its transport queue and are delivered when the follower is back.
  // So write until the compaction point is past all that.
  const parallel = 32;
  const reachable = killedAt + raftDefaults.inflightMessagesMax * (parallel + 8);
  for (let round = 0;; round++) {
    await writeMany(`third-${round}`, 1000, others, parallel);
    const leaderStatus = await cluster.status(leader);
    if (leaderStatus!.snapshotIndex - snapshotTrailingEntries > reachable) break;
    expect(round).toBeLessThan(20);
  }
  cluster.start(follower);
  const status = await cluster.waitFor(
    "the restarted follower to install a snapshot and catch up",
    async () => {
      const [mine, theirs] = await Promise.all([cluster.status(follower), cluster.status(leader)]);
      if (mine === undefined || theirs === undefined) return undefined;
      return mine.appliedIndex >= theirs.commitIndex && (mine.counters.snapshotsInstalled ?? 0) > 0
        ? mine
        : undefined;
    },
    30_000,
  );
  expect(status.counters.snapshotsInstalled).toBeGreaterThan(0);
  await expectAllReadable(follower, "stale");
}, 120_000);

test("a retried write with the same idempotency key is applied once, across nodes", async () => {
  const names = cluster.members.map((m) => m.name);
  const first = await cluster.put(names[0]!, "counter", "one", {
    "Idempotency-Key": "retry-client:1",
  });
  expect(first.status).toBe(200);
  const firstBody = await first.json() as { index: number };
  const retry = await cluster.put(names[1]!, "counter", "one", {
    "Idempotency-Key": "retry-client:1",
  });
  expect(retry.status).toBe(200);
  expect(await retry.json()).toEqual(firstBody);
  // The same key with another value is not a retry: refused, not applied.
  const reused = await cluster.put(names[1]!, "counter", "two", {
    "Idempotency-Key": "retry-client:1",
  });
  expect(reused.status).toBe(409);
  const read = await cluster.get(names[2]!, "counter");
  expect(await read.text()).toBe("one");
});
