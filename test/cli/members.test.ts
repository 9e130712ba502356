// keel members against a fake cluster: every member asked, unreachable ones shown as such.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeCluster, runCli } from "./fake_cluster.ts";
import type { MembersReport } from "../../src/cli/members.ts";

let cluster: FakeCluster;

beforeAll(() => {
  cluster = new FakeCluster();
  cluster.down("node-c");
});

afterAll(() => {
  cluster.stop();
});

test("one row per member from each member's own answer, with readiness", async () => {
  const run = await runCli(["members", "--url", cluster.member("node-b").url]);
  expect(run.code).toBe(0);
  const lines = run.stdout.split("\n");
  expect(lines[0]!.split(/\s{2,}/)).toEqual([
    "MEMBER",
    "ADDRESS",
    "REACHABLE",
    "ROLE",
    "TERM",
    "LEADER",
    "COMMIT",
    "APPLIED",
    "READINESS",
  ]);
  expect(lines[1]!.split(/\s{2,}/)).toEqual([
    "node-a",
    cluster.member("node-a").url,
    "yes",
    "leader",
    "3",
    "node-a",
    "40",
    "40",
    "ready",
  ]);
  expect(lines[2]!.split(/\s{2,}/)[3]).toBe("follower");
  expect(lines[3]!.split(/\s{2,}/).slice(0, 4)).toEqual([
    "node-c",
    cluster.member("node-c").url,
    "no (connection refused)",
    "-",
  ]);
  expect(run.stdout).toContain("3 members, 2 reachable, 2 ready; leader node-a (term 3)\n");
  // Each member was asked for itself (node-c could not be).
  expect(cluster.requests).toContain("node-a GET /status");
  expect(cluster.requests).toContain("node-a GET /readyz");
});

test("--json lists members with failing checks when there is no leader", async () => {
  cluster.leader = null;
  try {
    const run = await runCli(["members", "--json", "--url", cluster.member("node-a").url]);
    const report = JSON.parse(run.stdout) as MembersReport;
    expect(report.leader).toBe(null);
    expect(report.members.map((m) => [m.name, m.reachable, m.ready, m.failingChecks])).toEqual([
      ["node-a", true, false, ["leader_known"]],
      ["node-b", true, false, ["leader_known"]],
      ["node-c", false, null, []],
    ]);
    const text = await runCli(["members", "--url", cluster.member("node-a").url]);
    expect(text.stdout).toContain("not ready: leader_known");
    expect(text.stdout).toContain("0 ready; no leader");
  } finally {
    cluster.leader = "node-a";
  }
});

test("the member list comes from --config when the node asked first is down", async () => {
  const dir = mkdtempSync(join(tmpdir(), "keel-cli-members-"));
  try {
    const file = cluster.writeConfig(dir);
    const run = await runCli(["members", "--json", "--config", file, "--name", "node-c"]);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as MembersReport;
    expect(report.members.map((m) => [m.name, m.reachable])).toEqual([
      ["node-a", true],
      ["node-b", true],
      ["node-c", false],
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("no member reachable is exit 1", async () => {
  const lone = new FakeCluster(["node-x"]);
  const url = lone.member("node-x").url;
  lone.stop();
  const run = await runCli(["members", "--url", url]);
  expect(run.code).toBe(1);
  expect(run.stderr).toBe(
    `keel: Cannot reach ${url}: connection refused\n` +
      "(with --config FILE the members are listed from the file instead)\n",
  );
});
