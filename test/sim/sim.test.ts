// The deterministic simulator over many seeds, a few fixed scenarios, and proof that the
// checks catch a broken node. A failing seed prints `reproduce: bun scripts/sim.ts ...`.

import { describe, expect, test } from "bun:test";
import {
  Cluster,
  faultProfiles,
  type HarnessBugs,
  type ProfileName,
  runSimulation,
  type SimNode,
  type SimSettings,
} from "./cluster.ts";

// ---- Seeds --------------------------------------------------------------------------------

interface Batch {
  profile: ProfileName;
  nodes: 3 | 5;
  seeds: number;
  ticks: number;
  /** Seeds run from first to first + seeds - 1; batches use disjoint ranges. */
  first: number;
}

// 320 seeds. Ticks are kept short enough for the whole file to run in seconds; raise
// --ticks and --seeds in scripts/sim.ts for a longer hunt.
const batches: Batch[] = [
  { profile: "none", nodes: 3, seeds: 10, ticks: 1500, first: 1 },
  { profile: "none", nodes: 5, seeds: 10, ticks: 1500, first: 101 },
  { profile: "lossy", nodes: 3, seeds: 35, ticks: 3000, first: 1001 },
  { profile: "lossy", nodes: 5, seeds: 20, ticks: 2000, first: 2001 },
  { profile: "partitions", nodes: 3, seeds: 35, ticks: 3000, first: 3001 },
  { profile: "partitions", nodes: 5, seeds: 20, ticks: 2000, first: 4001 },
  { profile: "crashes", nodes: 3, seeds: 35, ticks: 3000, first: 5001 },
  { profile: "crashes", nodes: 5, seeds: 20, ticks: 2000, first: 6001 },
  { profile: "churn", nodes: 3, seeds: 35, ticks: 2000, first: 7001 },
  { profile: "churn", nodes: 5, seeds: 20, ticks: 2000, first: 8001 },
  { profile: "chaos", nodes: 3, seeds: 50, ticks: 3000, first: 9001 },
  { profile: "chaos", nodes: 5, seeds: 30, ticks: 2000, first: 10001 },
];

for (const batch of batches) {
  describe(`simulation: ${batch.nodes} nodes, profile ${batch.profile}`, () => {
    for (let seed = batch.first; seed < batch.first + batch.seeds; seed++) {
      test(`seed ${seed}`, () => {
        const result = runSimulation({
          seed,
          nodes: batch.nodes,
          ticks: batch.ticks,
          faults: faultProfiles[batch.profile],
          profile: batch.profile,
        });
        if (!result.ok) throw new Error(result.failure);
        // Every passing run ends with the liveness probe acknowledged.
        expect(result.stats.acknowledged).toBeGreaterThan(0);
      });
    }
  });
}

test("a seed replays exactly", () => {
  const options = {
    seed: 424242,
    nodes: 5 as const,
    ticks: 1500,
    faults: faultProfiles.chaos,
    profile: "chaos",
  };
  const lines: string[] = [];
  const first = runSimulation({ ...options, log: (line) => lines.push(line) });
  const replay: string[] = [];
  const second = runSimulation({ ...options, log: (line) => replay.push(line) });
  expect(second).toEqual(first);
  expect(replay).toEqual(lines);
  expect(lines.length).toBeGreaterThan(10);
});

// ---- Fixed scenarios ----------------------------------------------------------------------

/** A quiet, fast network and roomy limits, so a scenario's timing is easy to reason about. */
const calm: Partial<SimSettings> = {
  electionTicks: 10,
  heartbeatTicks: 1,
  entriesPerMessageMax: 64,
  inflightMessagesMax: 16,
  messageBytesMax: 1024 * 1024,
  snapshotChunkBytes: 4096,
  pendingProposalsMax: 1024,
  preVote: true,
  checkQuorum: true,
  snapshotEveryEntries: 1000,
  trailingEntries: 0,
  latencyTicksMax: 1,
};

function calmCluster(nodes: 3 | 5, settings: Partial<SimSettings> = {}): Cluster {
  return new Cluster({ seed: 7, nodes, settings: { ...calm, ...settings } });
}

function waitForLeader(cluster: Cluster, among?: readonly string[]): SimNode {
  let leader: SimNode | undefined;
  const found = cluster.runUntil(() => {
    leader = cluster.leader();
    return leader !== undefined && (among === undefined || among.includes(leader.id));
  }, 20 * cluster.settings.electionTicks);
  if (!found || leader === undefined) throw new Error(`No leader after ${cluster.now} ticks`);
  return leader;
}

/** commit proposes on the leader and waits until the leader acknowledges the write. */
function commit(cluster: Cluster, payload: string): number {
  const leader = waitForLeader(cluster);
  const result = cluster.propose(leader.id, payload);
  if (!result.ok) throw new Error(`Proposal "${payload}" refused: ${result.reason}`);
  const acknowledged = cluster.runUntil(
    () => cluster.isAcknowledged(result.index, payload),
    10 * cluster.settings.electionTicks,
  );
  if (!acknowledged) throw new Error(`Proposal "${payload}" not acknowledged`);
  return result.index;
}

describe("fixed scenarios", () => {
  test("a leader isolated in a minority partition cannot commit", () => {
    // Reference: §5.3: an entry commits once a majority stores it.
    const cluster = calmCluster(5);
    commit(cluster, "before");
    const old = waitForLeader(cluster);
    const oldTerm = old.raft!.term;
    const companion = cluster.ids.find((id) => id !== old.id)!;
    const majority = cluster.ids.filter((id) => id !== old.id && id !== companion);
    cluster.partition([[old.id, companion], majority], 0);

    const result = cluster.propose(old.id, "minority-write");
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    cluster.run(8 * cluster.settings.electionTicks);

    for (const node of cluster.nodes) {
      expect(node.applied.get(result.index)?.payload).not.toBe("minority-write");
    }
    expect(old.raft!.commitIndex).toBeLessThan(result.index);
    expect(cluster.isAcknowledged(result.index, "minority-write")).toBe(false);
    // The majority carries on under a new leader in a later term.
    const fresh = waitForLeader(cluster, majority);
    expect(fresh.raft!.term).toBeGreaterThan(oldTerm);
    commit(cluster, "majority-write");

    cluster.heal();
    cluster.run(5 * cluster.settings.electionTicks);
    for (const node of cluster.nodes) {
      expect(node.applied.get(result.index)?.payload).not.toBe("minority-write");
    }
    cluster.checkFinal();
  });

  test("with check-quorum an isolated leader steps down by itself", () => {
    // Reference: §6.2 (check-quorum): a leader that cannot hear a majority steps down.
    const cluster = calmCluster(3);
    const old = waitForLeader(cluster);
    cluster.partition([[old.id], cluster.ids.filter((id) => id !== old.id)], 0);
    const steppedDown = cluster.runUntil(
      () => old.raft!.role !== "leader",
      3 * cluster.settings.electionTicks,
    );
    expect(steppedDown).toBe(true);
    expect(cluster.partitioned).toBe(true);
  });

  test("after a partition heals the old leader steps down", () => {
    // Without check-quorum the cut-off leader keeps believing it leads until it hears the
    // higher term (§5.1).
    const cluster = calmCluster(3, { checkQuorum: false });
    commit(cluster, "before");
    const old = waitForLeader(cluster);
    const oldTerm = old.raft!.term;
    const others = cluster.ids.filter((id) => id !== old.id);
    cluster.partition([[old.id], others], 0);
    const stale = cluster.propose(old.id, "stale-write");
    expect(stale.ok).toBe(true);
    const fresh = waitForLeader(cluster, others);
    expect(fresh.raft!.term).toBeGreaterThan(oldTerm);
    commit(cluster, "fresh-write");
    expect(old.raft!.role).toBe("leader");
    expect(old.raft!.term).toBe(oldTerm);

    cluster.heal();
    const steppedDown = cluster.runUntil(
      () => old.raft!.role !== "leader",
      5 * cluster.settings.electionTicks,
    );
    expect(steppedDown).toBe(true);
    expect(old.raft!.term).toBeGreaterThanOrEqual(fresh.raft!.term);
    // Its uncommitted entry is overwritten by the new leader's log (§5.3).
    const caughtUp = cluster.runUntil(
      () => old.appliedIndex === fresh.appliedIndex,
      10 * cluster.settings.electionTicks,
    );
    expect(caughtUp).toBe(true);
    expect(old.stateMachine).not.toContain("stale-write");
    expect(old.stateMachine).toContain("fresh-write");
    cluster.checkFinal();
  });

  test("leadership transfer moves leadership to the chosen member", () => {
    // Reference: §3.10 of the Raft thesis (leadership transfer).
    const cluster = calmCluster(5);
    commit(cluster, "before");
    const old = waitForLeader(cluster);
    const oldTerm = old.raft!.term;
    const target = cluster.ids.find((id) => id !== old.id)!;
    expect(cluster.transfer(old.id, target)).toEqual({ ok: true });
    const moved = cluster.runUntil(
      () => cluster.leader()?.id === target,
      3 * cluster.settings.electionTicks,
    );
    expect(moved).toBe(true);
    expect(cluster.leaderOfTerm(oldTerm + 1)).toBe(target);
    expect(old.raft!.role).toBe("follower");
    commit(cluster, "after");
    cluster.checkFinal();
  });

  test("a follower behind the compaction point catches up from a chunked snapshot", () => {
    // Reference: §7: InstallSnapshot for a follower that needs compacted entries.
    const cluster = calmCluster(3, { snapshotEveryEntries: 10, snapshotChunkBytes: 16 });
    commit(cluster, "first");
    const leader = waitForLeader(cluster);
    const lagging = cluster.nodes.find((node) => node.id !== leader.id)!;
    cluster.crash(lagging.id);
    for (let i = 0; i < 60; i++) commit(cluster, `w${i}`);
    cluster.restart(lagging.id);
    const caughtUp = cluster.runUntil(
      () => lagging.appliedIndex === leader.appliedIndex,
      30 * cluster.settings.electionTicks,
    );
    expect(caughtUp).toBe(true);
    expect(cluster.stats.snapshotsInstalled).toBeGreaterThan(0);
    expect(lagging.stateMachine).toEqual(leader.stateMachine);
    cluster.checkFinal();
  });

  test("a cluster restarted from its disks keeps every acknowledged write", () => {
    const cluster = calmCluster(3, { snapshotEveryEntries: 7 });
    for (let i = 0; i < 30; i++) commit(cluster, `w${i}`);
    for (const id of cluster.ids) cluster.crash(id);
    for (const id of cluster.ids) cluster.restart(id);
    commit(cluster, "after-restart");
    const applied = cluster.runUntil(
      () => cluster.nodes.every((node) => node.stateMachine.includes("after-restart")),
      10 * cluster.settings.electionTicks,
    );
    expect(applied).toBe(true);
    for (const node of cluster.nodes) {
      expect(node.stateMachine.slice(0, 30)).toEqual(Array.from({ length: 30 }, (_, i) => `w${i}`));
    }
    cluster.checkFinal();
  });

  test("a ReadIndex read on a follower covers every acknowledged write", () => {
    // Reference: §6.4 of the Raft thesis (ReadIndex).
    const cluster = calmCluster(3);
    const index = commit(cluster, "written");
    const leader = waitForLeader(cluster);
    const follower = cluster.nodes.find((node) => node.id !== leader.id)!;
    const requestId = cluster.read(follower.id)!;
    const answered = cluster.runUntil(
      () => cluster.readResult(requestId) !== undefined,
      5 * cluster.settings.electionTicks,
    );
    expect(answered).toBe(true);
    expect(cluster.readResult(requestId)).toBeGreaterThanOrEqual(index);
  });
});

// ---- The checks bite ------------------------------------------------------------------------

/** firstViolation runs seeds until one fails a safety check; returns its failure text. */
function firstViolation(
  bugs: HarnessBugs,
  profile: ProfileName,
  seeds: readonly number[],
  pattern: RegExp,
): string | undefined {
  for (const seed of seeds) {
    const result = runSimulation({
      seed,
      nodes: 3,
      ticks: 1000,
      faults: faultProfiles[profile],
      profile,
      bugs,
    });
    if (!result.ok && pattern.test(result.failure!)) return result.failure;
  }
  return undefined;
}

const seeds1To20 = Array.from({ length: 20 }, (_, i) => i + 1);

describe("the checks catch a broken node", () => {
  test("one that acknowledges a write before it commits", () => {
    const failure = firstViolation(
      { ackBeforeCommit: true },
      "partitions",
      seeds1To20,
      /acknowledged write .* was lost|ReadIndex is not linearizable/,
    );
    expect(failure).toBeDefined();
    expect(failure).toMatch(/reproduce: bun scripts\/sim\.ts --seed=\d+ .*--bug=ackBeforeCommit/);
  });

  test("one whose snapshots miss the last command", () => {
    const failure = firstViolation(
      { staleSnapshot: true },
      "crashes",
      seeds1To20,
      /restored snapshot \d+ (with|holding)/,
    );
    expect(failure).toBeDefined();
    expect(failure).toMatch(/reproduce: bun scripts\/sim\.ts --seed=\d+ .*--bug=staleSnapshot/);
  });

  test("one that sends before persisting", () => {
    // Messages leave before the vote or entries they promise are durable; a crash in
    // between makes the node forget them.
    const failure = firstViolation(
      { sendBeforePersist: true },
      "churn",
      Array.from({ length: 200 }, (_, i) => i + 1),
      /two leaders|became leader|applied .* at index \d+, where another node applied|acknowledged write/,
    );
    expect(failure).toBeDefined();
  });
});
