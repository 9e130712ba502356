// The replacement protocol (DESIGN §3, R0-R8) in the consensus core: a member whose disk
// is wiped comes back under its name as a new incarnation and is fenced in safely.

import { describe as group, expect, test } from "bun:test";
import { TestCluster } from "./driver.ts";

const abc = ["a", "b", "c"];

function settle(cluster: TestCluster, rounds = 20): void {
  cluster.tickAll(rounds);
}

group("replacement", () => {
  test("a wiped member rejoins as recovering, is fenced in, and turns normal (R2-R6)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.propose("a", "x");
    cluster.deliver();
    const fresh = cluster.wipe("b");
    expect(fresh.raft.recovering).toBe(true);
    settle(cluster);
    const fence = cluster.node("a").applied.find((entry) =>
      entry.kind === "fence" && new TextDecoder().decode(entry.data).includes('"name"')
    );
    expect(fence).toBeDefined();
    expect(new TextDecoder().decode(fence!.data)).toBe(
      JSON.stringify({ name: "b", incarnation: "b-2" }),
    );
    expect(fresh.raft.recovering).toBe(false);
    expect(fresh.raft.votedFor).toBe("a");
    expect(fresh.disk.hardState.votedFor).toBe("a");
    expect(fresh.state).toEqual(["x"]);
    // It votes again: with a isolated, b and c elect a leader.
    cluster.isolate("a");
    cluster.tickAll(40);
    const leaders = ["b", "c"].filter((name) => cluster.raft(name).role === "leader");
    expect(leaders).toHaveLength(1);
  });

  test("a recovering member never grants a vote, so a wiped disk cannot elect a leader missing a committed entry (R3)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.isolate("c");
    cluster.propose("a", "committed-on-a-and-b");
    cluster.deliver();
    expect(cluster.node("a").state).toContain("committed-on-a-and-b");
    cluster.heal();
    // a goes away; b loses its disk; c (without the entry) campaigns.
    cluster.isolate("a");
    cluster.wipe("b");
    cluster.tickAll(60);
    expect(cluster.raft("c").role).not.toBe("leader");
    expect(cluster.raft("b").role).not.toBe("leader");
    expect(cluster.log.some((line) => line.startsWith("b->c") && line.includes("granted=true")))
      .toBe(false);
    // a returns: the entry survives and the cluster moves on.
    cluster.heal();
    cluster.tickAll(60);
    for (const name of abc) expect(cluster.node(name).state).toContain("committed-on-a-and-b");
  });

  test("the fence commits only on a majority of the other members (R5)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.deliver();
    cluster.isolate("c");
    const fresh = cluster.wipe("b");
    cluster.tickAll(30);
    // a and the new b alone: the fence is appended but must not commit.
    const fenceOnA = cluster.node("a").disk.entries.find((entry) =>
      entry.kind === "fence" && new TextDecoder().decode(entry.data).includes('"name"')
    );
    expect(fenceOnA).toBeDefined();
    expect(cluster.raft("a").commitIndex).toBeLessThan(fenceOnA!.index);
    expect(fresh.raft.recovering).toBe(true);
    cluster.heal();
    cluster.tickAll(30);
    expect(cluster.raft("a").commitIndex).toBeGreaterThanOrEqual(fenceOnA!.index);
    expect(fresh.raft.recovering).toBe(false);
  });

  test("the old incarnation coming back is ignored and never counted (R7)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.propose("a", "x");
    cluster.deliver();
    cluster.wipe("b", true); // the old host b-1 is still alive: a zombie
    settle(cluster);
    expect(cluster.raft("b").recovering).toBe(false);
    const termBefore = cluster.raft("a").term;
    // The zombie campaigns on its own (it never hears the fence): nobody listens.
    cluster.zombieTick("b-1", 200);
    cluster.deliver();
    cluster.tickAll(5);
    expect(cluster.raft("a").role).toBe("leader");
    expect(cluster.raft("a").term).toBe(termBefore);
    expect(cluster.propose("a", "y").ok).toBe(true);
    cluster.deliver();
    cluster.tickAll(3);
    expect(cluster.node("b").state).toEqual(["x", "y"]);
    expect(cluster.node("c").state).toEqual(["x", "y"]);
  });

  test("a replacement installs a snapshot that already contains its fence and turns normal", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    for (let i = 0; i < 5; i++) cluster.propose("a", `v${i}`);
    cluster.deliver();
    const fresh = cluster.wipe("b");
    settle(cluster);
    expect(fresh.raft.recovering).toBe(false);
    cluster.node("a").takeSnapshot();
    const again = cluster.wipe("b");
    settle(cluster, 40);
    expect(again.raft.recovering).toBe(false);
    expect(again.state).toEqual(cluster.node("a").state);
  });
});
