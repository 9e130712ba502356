// End-to-end: the keel CLI (dist/keel) against a real 3-node cluster of dist/keel on
// 127.0.0.41-43 — DESIGN §1 journey 9: status, members, kv, snapshot, step-down and a
// failover drill, all through the HTTP API, with --json output parsed.

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { DrillReport } from "../../src/cli/drill.ts";
import type { MembersReport } from "../../src/cli/members.ts";
import { binaryPath, TestCluster } from "../support/cluster.ts";

const token = "test-token";
let cluster: TestCluster;

beforeAll(async () => {
  cluster = new TestCluster({
    ipBase: 41,
    name: "e2e-cli",
    extraYaml: `security:\n  admin_token: ${token}`,
  });
  cluster.startAll();
  await cluster.waitForLeader();
});

afterAll(async () => {
  await cluster.stop();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** keel runs the compiled CLI, killed if it outlives timeoutMs. */
async function keel(args: string[], timeoutMs = 40_000): Promise<Run> {
  const child = Bun.spawn([binaryPath, ...args], {
    stdout: "pipe",
    stderr: "pipe",
    // Nothing from the environment of whoever runs the tests.
    env: { ...process.env, KEEL_URL: "", KEEL_ADMIN_TOKEN: "" },
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** at is the flags that point the CLI at a member through the shared config file. */
function at(name: string): string[] {
  return ["--config", cluster.configPath, "--name", name];
}

function expectOk(run: Run): void {
  if (run.code !== 0) throw new Error(`exit ${run.code}\n${run.stderr}\n${run.stdout}`);
}

test("keel status --json is the node's /status", async () => {
  const run = await keel(["status", "--json", ...at("node-b")]);
  expectOk(run);
  const status = JSON.parse(run.stdout);
  expect(status.name).toBe("node-b");
  expect(status.clusterName).toBe("e2e-cli");
  expect(status.members.map((m: { name: string }) => m.name)).toEqual([
    "node-a",
    "node-b",
    "node-c",
  ]);
  expect(typeof status.leader).toBe("string");
  // The table shows the same leader.
  const table = await keel(["status", "--url", cluster.member("node-b").url]);
  expectOk(table);
  expect(table.stdout).toMatch(new RegExp(`^${status.leader}\\s+leader\\s+http://`, "m"));
});

test("keel members lists three members, one leader, all reachable and ready", async () => {
  const leader = await cluster.waitForLeader();
  const run = await keel(["members", "--json", ...at("node-c")]);
  expectOk(run);
  const report = JSON.parse(run.stdout) as MembersReport;
  expect(report.members.map((m) => m.name)).toEqual(["node-a", "node-b", "node-c"]);
  expect(report.members.filter((m) => m.role === "leader").map((m) => m.name)).toEqual([leader]);
  expect(report.members.every((m) => m.reachable && m.leader === leader)).toBe(true);
  expect(report.members.map((m) => [m.name, m.ready, m.failingChecks])).toEqual([
    ["node-a", true, []],
    ["node-b", true, []],
    ["node-c", true, []],
  ]);
  expect(report.leader).toBe(leader);
  const text = await keel(["members", ...at("node-a")]);
  expectOk(text);
  expect(text.stdout.split("\n").filter((line) => /^node-[abc]\s/.test(line))).toHaveLength(3);
  expect(text.stdout).toContain(`3 members, 3 reachable, 3 ready; leader ${leader}`);
});

test("keel kv put then get round-trips, through different members", async () => {
  expectOk(await keel(["kv", "put", "cli-greeting", "hello from the cli", ...at("node-a")]));
  const get = await keel(["kv", "get", "cli-greeting", ...at("node-c")]);
  expectOk(get);
  expect(get.stdout).toBe("hello from the cli");
  const list = await keel(["kv", "list", "cli-", "--json", ...at("node-b")]);
  expect(JSON.parse(list.stdout).items).toEqual([
    expect.objectContaining({ key: "cli-greeting", value: "hello from the cli" }),
  ]);
});

test("keel snapshot reports the index it took, with the token from the config", async () => {
  const run = await keel(["snapshot", "--json", ...at("node-a")]);
  expectOk(run);
  const body = JSON.parse(run.stdout);
  expect(body.index).toBeGreaterThan(0);
  const text = await keel(["snapshot", ...at("node-b")]);
  expectOk(text);
  expect(text.stdout).toMatch(/snapshot taken at index \d+/);
});

test("admin commands without the token are refused, exit 1", async () => {
  const run = await keel(["snapshot", "--url", cluster.member("node-a").url]);
  expect(run.code).toBe(1);
  expect(run.stderr).toContain("401");
  expect(run.stderr).toContain("No admin token given");
});

test("keel step-down sent to a follower moves leadership off the leader", async () => {
  const before = await cluster.waitForLeader();
  const follower = cluster.members.find((m) => m.name !== before)!.name;
  const run = await keel(["step-down", ...at(follower)]);
  expectOk(run);
  expect(run.stderr).toContain(`is not the leader; asking the leader ${before}`);
  expect(run.stdout).toMatch(/stepped down; node-[abc] leads now/);
  const after = await cluster.waitForLeader();
  expect(after).not.toBe(before);
  const status = JSON.parse((await keel(["status", "--json", ...at(follower)])).stdout);
  expect(status.leader).toBe(after);
});

test("keel drill failover reports a new leader and the unavailability window", async () => {
  const before = await cluster.waitForLeader();
  const run = await keel(["drill", "failover", "--json", "--timeout", "20s", ...at("node-a")]);
  expectOk(run);
  const report = JSON.parse(run.stdout) as DrillReport;
  expect(report.ok).toBe(true);
  expect(report.oldLeader.name).toBe(before);
  expect(report.newLeader).not.toBe(null);
  expect(report.newLeader!.name).not.toBe(before);
  expect(report.newLeader!.term).toBeGreaterThan(report.oldLeader.term);
  expect(typeof report.unavailableMs).toBe("number");
  expect(report.unavailableMs).toBeGreaterThanOrEqual(0);
  expect(report.unavailableMs).toBeLessThan(20_000);
  expect(report.probes.acknowledged).toBeGreaterThan(0);
  expect(report.drillMs).toBeLessThan(30_000);
  expect(await cluster.waitForLeader()).toBe(report.newLeader!.name);
});

test("keel run on a data dir another keel process holds is refused with a clear error", async () => {
  const member = cluster.member("node-b");
  const run = await keel([
    "run",
    ...at("node-b"),
    "--data-dir",
    member.dataDir,
    // Other ports, so that only the data dir can refuse it.
    "--peer-listen",
    "127.0.0.42:7091",
    "--http-listen",
    "127.0.0.42:7092",
  ]);
  expect(run.code).toBe(1);
  expect(run.stderr + run.stdout).toContain("is in use by another keel process");
  // The running member is untouched.
  expect((await fetch(`${member.url}/healthz`)).status).toBe(200);
});
