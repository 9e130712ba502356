// keel drill failover against a fake cluster whose leader hands over after a pause, and the
// arithmetic of the unavailability window.

import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { type DrillReport, unavailability } from "../../src/cli/drill.ts";
import { FakeCluster, fakeToken, runCli } from "./fake_cluster.ts";

describe("unavailability", () => {
  test("is the longest gap from the last write before the change onwards", () => {
    const acks = [10, 30, 50, 70, 400, 420, 440, 600, 620];
    expect(unavailability(acks, 60)).toEqual({ fromMs: 70, toMs: 400 });
    // Gaps before the change do not count, however long.
    expect(unavailability([0, 1000, 1010, 1030, 1200], 1015)).toEqual({ fromMs: 1030, toMs: 1200 });
    // Order of arrival does not matter.
    expect(unavailability([440, 10, 400, 50], 60)).toEqual({ fromMs: 50, toMs: 400 });
  });

  test("is undefined without a write on both sides of the change", () => {
    expect(unavailability([], 10)).toBeUndefined();
    expect(unavailability([20, 30], 10)).toBeUndefined();
    expect(unavailability([1, 2, 3], 10)).toBeUndefined();
  });
});

describe("keel drill failover", () => {
  let cluster: FakeCluster;
  const env = { KEEL_ADMIN_TOKEN: fakeToken };

  beforeEach(() => {
    cluster = new FakeCluster();
    cluster.transferMs = 300;
  });

  afterEach(() => {
    cluster.stop();
  });

  test("asks the leader to step down and measures the window without writes", async () => {
    const run = await runCli(
      ["drill", "failover", "--json", "--url", cluster.member("node-b").url, "--timeout", "5s"],
      { env },
    );
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as DrillReport;
    expect(report.ok).toBe(true);
    expect(report.mode).toBe("step-down");
    expect(report.oldLeader).toEqual({
      name: "node-a",
      url: cluster.member("node-a").url,
      term: 3,
    });
    expect(report.newLeader).toEqual({
      name: "node-b",
      url: cluster.member("node-b").url,
      term: 4,
    });
    // The fake refuses writes for 300 ms while leadership moves.
    expect(report.unavailableMs).toBeGreaterThanOrEqual(280);
    expect(report.unavailableMs).toBeLessThan(2000);
    expect(report.lastWriteBeforeMs! + report.unavailableMs!).toBe(report.firstWriteAfterMs!);
    expect(report.probes.failed).toBeGreaterThan(0);
    expect(report.probes.failures.no_leader).toBeGreaterThan(0);
    expect(report.probes.attempted).toBe(report.probes.acknowledged + report.probes.failed);
    expect(report.drillMs).toBeGreaterThanOrEqual(report.firstWriteAfterMs!);
    expect(cluster.kv.get("keel-drill/probe")).toMatch(/^drill-/);
  });

  test("prints a report for people", async () => {
    const run = await runCli(
      ["drill", "failover", "--url", cluster.member("node-a").url, "--timeout", "5s"],
      { env },
    );
    expect(run.code).toBe(0);
    const lines = run.stdout.split("\n");
    expect(lines[0]).toBe("failover drill (step-down)");
    expect(lines[1]).toBe(`old leader     node-a (${cluster.member("node-a").url}), term 3`);
    expect(lines[2]).toBe(`new leader     node-b (${cluster.member("node-b").url}), term 4`);
    expect(lines[3]).toMatch(
      /^unavailable {4}[\d.]+m?s \(no write acknowledged from \+[\d.]+m?s to \+[\d.]+m?s\)$/,
    );
    expect(lines[5]).toMatch(
      /^probe writes {3}\d+ attempted \(one every 20ms\), \d+ acknowledged, \d+ failed/,
    );
    expect(lines[7]).toBe("ok");
  });

  test("--kill only watches: the operator kills the leader", async () => {
    const a = cluster.member("node-a").url;
    let killed = false;
    const run = await runCli(["drill", "failover", "--kill", "--url", a, "--timeout", "5s"], {
      env,
      onOutput: (text) => {
        if (!killed && text.startsWith("kill the leader")) {
          killed = true;
          setTimeout(() => {
            cluster.down("node-a");
            cluster.leader = null;
            setTimeout(() => {
              cluster.leader = "node-c";
              cluster.term = 5;
            }, 400);
          }, 100);
        }
      },
    });
    expect(run.stdout).toContain(`kill the leader (node-a at ${a}) now; watching for up to 5 s\n`);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`new leader     node-c (${cluster.member("node-c").url}), term 5`);
    // The drill itself asked nothing of the admin API.
    expect(cluster.requests.filter((r) => r.includes("/admin/"))).toEqual([]);
  });

  test("no new leader within --timeout is exit 1 with the reason", async () => {
    const run = await runCli(
      [
        "drill",
        "failover",
        "--kill",
        "--json",
        "--url",
        cluster.member("node-a").url,
        "--timeout",
        "500ms",
      ],
      { env },
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("kill the leader (node-a at");
    const report = JSON.parse(run.stdout) as DrillReport;
    expect(report.ok).toBe(false);
    expect(report.newLeader).toBe(null);
    expect(report.problem).toBe("No other member became leader within 500ms");
  });

  test("a refused step-down ends the drill with the node's answer", async () => {
    const run = await runCli(
      ["drill", "failover", "--url", cluster.member("node-a").url, "--timeout", "5s"],
      { env: { KEEL_ADMIN_TOKEN: "wrong" } },
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("answered 403 forbidden: Wrong token");
    expect(cluster.leader).toBe("node-a");
  });
});
