import { describe as group, expect, test } from "bun:test";
import { TestCluster } from "./driver.ts";

const abc = ["a", "b", "c"];

group("elections", () => {
  test("a follower that times out wins a pre-vote then an election (§5.2, §9.6)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    expect(cluster.raft("a").role).toBe("leader");
    expect(cluster.raft("a").term).toBe(1);
    expect(cluster.raft("b").leader).toBe("a");
    expect(cluster.log.some((line) => line.startsWith("a->b preVote term=1"))).toBe(true);
  });

  test("a node grants at most one vote per term (§5.2)", () => {
    const cluster = new TestCluster(abc, { preVote: false, checkQuorum: false });
    const c = cluster.raft("c");
    c.step({
      type: "requestVote",
      term: 5,
      from: "a",
      to: "c",
      lastLogIndex: 0,
      lastLogTerm: 0,
      transfer: false,
    });
    c.step({
      type: "requestVote",
      term: 5,
      from: "b",
      to: "c",
      lastLogIndex: 0,
      lastLogTerm: 0,
      transfer: false,
    });
    const votes = cluster.node("c").process().filter((m) => m.type === "requestVoteResponse");
    expect(votes.map((m) => m.type === "requestVoteResponse" && m.granted)).toEqual([true, false]);
    expect(cluster.node("c").disk.hardState.votedFor).toBe("a");
  });

  test("a voter rejects a candidate whose log is less up to date (§5.4.1)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.propose("a", "x");
    cluster.deliver();
    const b = cluster.raft("b");
    b.step({
      type: "requestVote",
      term: 9,
      from: "c",
      to: "b",
      lastLogIndex: 1,
      lastLogTerm: 1,
      transfer: true,
    });
    const [response] = cluster.node("b").process().filter((m) => m.type === "requestVoteResponse");
    expect(response?.type === "requestVoteResponse" && response.granted).toBe(false);
  });

  test("pre-vote keeps a rejoining isolated node from raising the cluster's term", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.isolate("c");
    cluster.tick("c", 100);
    cluster.deliver();
    expect(cluster.raft("c").term).toBe(1);
    cluster.heal();
    cluster.tickAll(3);
    expect(cluster.raft("a").role).toBe("leader");
    expect(cluster.raft("a").term).toBe(1);
  });

  test("check-quorum: a leader that hears no majority for an election timeout steps down", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.isolate("a");
    cluster.tick("a", 25);
    expect(cluster.raft("a").role).toBe("follower");
  });
});

group("replication", () => {
  test("an entry commits once a majority holds it and is applied everywhere (§5.3)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    const result = cluster.propose("a", "x");
    expect(result.ok).toBe(true);
    cluster.deliver();
    cluster.tickAll(2);
    for (const name of abc) expect(cluster.node(name).state).toEqual(["x"]);
  });

  test("a leader does not commit by counting replicas of an entry from an earlier term (§5.4.2)", () => {
    // Without leases, so the test can move leadership by ticking one node.
    const cluster = new TestCluster(abc, { checkQuorum: false });
    cluster.elect("a");
    cluster.isolate("a");
    cluster.propose("a", "old"); // index 2, term 1: only on a
    cluster.deliver();
    cluster.heal();
    // a steps down and c wins term 2 without the entry; then a wins term 3.
    cluster.isolate("a");
    cluster.elect("c");
    cluster.heal();
    expect(cluster.raft("c").term).toBeGreaterThanOrEqual(2);
    cluster.tickAll(3);
    // c's noop overwrote a's uncommitted entry: "old" is never applied anywhere.
    for (const name of abc) expect(cluster.node(name).state).not.toContain("old");
  });

  test("a follower with a divergent log converges by fast backtracking (§5.3)", () => {
    const cluster = new TestCluster(abc, { checkQuorum: false });
    cluster.elect("a");
    cluster.isolate("a");
    for (let i = 0; i < 50; i++) cluster.propose("a", `lost-${i}`);
    cluster.deliver();
    cluster.isolate("b");
    cluster.cut.delete("b->c");
    cluster.cut.delete("c->b");
    cluster.elect("b");
    for (let i = 0; i < 5; i++) cluster.propose("b", `kept-${i}`);
    cluster.deliver();
    cluster.heal();
    cluster.log = [];
    cluster.tickAll(5);
    const rejections = cluster.log.filter((line) =>
      line.startsWith("a->b appendEntriesResponse") && line.includes("success=false")
    );
    expect(rejections.length).toBeLessThanOrEqual(3);
    expect(cluster.node("a").state).toEqual(cluster.node("b").state);
    expect(cluster.node("a").state).toContain("kept-4");
  });

  test("a follower behind the compacted log catches up by chunked snapshot (§7)", () => {
    const cluster = new TestCluster(abc, { snapshotChunkBytes: 16 });
    cluster.elect("a");
    cluster.isolate("c");
    for (let i = 0; i < 20; i++) cluster.propose("a", `v${i}`);
    cluster.deliver();
    cluster.tickAll(2);
    cluster.node("a").takeSnapshot();
    cluster.heal();
    cluster.log = [];
    cluster.tickAll(30);
    expect(cluster.log.filter((l) => l.includes("installSnapshot ")).length).toBeGreaterThan(3);
    expect(cluster.node("c").state).toEqual(cluster.node("a").state);
    expect(cluster.node("c").state).toHaveLength(20);
  });

  test("snapshot catch-up respects the per-follower byte bound per tick", () => {
    const cluster = new TestCluster(abc, { snapshotChunkBytes: 16, snapshotBytesPerTick: 16 });
    cluster.elect("a");
    cluster.isolate("c");
    for (let i = 0; i < 20; i++) cluster.propose("a", `value-${i}`);
    cluster.deliver();
    cluster.tickAll(2);
    cluster.node("a").takeSnapshot();
    const bytes = cluster.node("a").disk.snapshot!.meta.bytes;
    cluster.heal();
    let ticks = 0;
    while (cluster.node("c").state.length < 20 && ticks < 500) {
      cluster.log = [];
      cluster.tickAll(1);
      ticks++;
      const chunks = cluster.log.filter((line) => line.startsWith("a->c installSnapshot")).length;
      expect(chunks).toBeLessThanOrEqual(1);
    }
    expect(cluster.node("c").state).toHaveLength(20);
    // At 16 bytes a tick, the snapshot cannot arrive in fewer ticks than bytes / 16.
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(bytes / 16));
  });

  test("a restarted follower keeps its vote and log (hard state is durable)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.propose("a", "x");
    cluster.deliver();
    cluster.node("b").restart(7);
    expect(cluster.raft("b").term).toBe(1);
    expect(cluster.raft("b").votedFor).toBe("a");
    // noop, the roster entries recording founding incarnations, "x": all of the leader's log
    expect(cluster.raft("b").lastIndex).toBe(cluster.raft("a").lastIndex);
  });
});

group("leadership transfer and reads", () => {
  test("leadership transfer hands over to an up-to-date follower (§3.10)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.propose("a", "x");
    cluster.deliver();
    expect(cluster.raft("a").transferLeadership("c")).toEqual({ ok: true });
    expect(cluster.raft("a").propose(new Uint8Array(1)).ok).toBe(false);
    cluster.deliver();
    expect(cluster.raft("c").role).toBe("leader");
    expect(cluster.raft("a").role).toBe("follower");
  });

  test("ReadIndex on the leader waits for a heartbeat quorum (§6.4)", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.deliver();
    cluster.raft("a").readIndex(42);
    cluster.flush();
    expect(cluster.node("a").readStates).toEqual([]);
    cluster.deliver();
    expect(cluster.node("a").readStates).toEqual([{
      requestId: 42,
      index: cluster.raft("a").commitIndex,
    }]);
  });

  test("ReadIndex on a follower is answered by the leader", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.propose("a", "x");
    cluster.deliver();
    cluster.raft("b").readIndex(7);
    cluster.deliver();
    expect(cluster.node("b").readStates).toEqual([{
      requestId: 7,
      index: cluster.raft("a").commitIndex,
    }]);
  });

  test("an isolated leader cannot serve a linearizable read", () => {
    const cluster = new TestCluster(abc);
    cluster.elect("a");
    cluster.deliver();
    cluster.isolate("a");
    cluster.raft("a").readIndex(1);
    cluster.deliver();
    cluster.tick("a", 25); // check-quorum steps it down and fails the read
    cluster.deliver();
    expect(cluster.node("a").readStates).toEqual([{ requestId: 1, index: 0 }]);
  });
});
