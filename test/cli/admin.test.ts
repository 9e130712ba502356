// keel snapshot, step-down, suspend, resume, shutdown against a fake cluster: the token,
// its refusals, and following a not_leader answer to the leader.

import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeCluster, fakeToken, runCli } from "./fake_cluster.ts";

let cluster: FakeCluster;

beforeEach(() => {
  cluster = new FakeCluster();
  cluster.transferMs = 20;
});

afterEach(() => {
  cluster.stop();
});

describe("the admin token", () => {
  test("none given: exit 1, the node's 401 and how to give one", async () => {
    const run = await runCli(["snapshot", "--url", cluster.member("node-a").url]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("answered 401 unauthorized: Admin requests need a token");
    expect(run.stderr).toContain(
      "No admin token given: pass --token TOKEN, set KEEL_ADMIN_TOKEN, or use --config with security.admin_token",
    );
  });

  test("a wrong one: exit 1, the node's 403 and where the token came from", async () => {
    const run = await runCli(["snapshot", "--url", cluster.member("node-a").url], {
      env: { KEEL_ADMIN_TOKEN: "guess" },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("answered 403 forbidden: Wrong token");
    expect(run.stderr).toContain("The admin token (from KEEL_ADMIN_TOKEN) is wrong for this node");
  });

  test("--token wins over KEEL_ADMIN_TOKEN", async () => {
    const run = await runCli(
      ["snapshot", "--url", cluster.member("node-a").url, "--token", fakeToken],
      { env: { KEEL_ADMIN_TOKEN: "guess" } },
    );
    expect(run.code).toBe(0);
  });

  test("read from the config's security.admin_token", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keel-cli-admin-"));
    try {
      const file = cluster.writeConfig(dir, `security:\n  admin_token: ${fakeToken}\n`);
      const run = await runCli(["suspend", "--config", file, "--name", "node-b"]);
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(cluster.suspended.has("node-b")).toBe(true);
      // --to is checked against the config's members before anything is sent.
      const unknown = await runCli([
        "step-down",
        "--to",
        "node-z",
        "--config",
        file,
        "--name",
        "node-a",
      ]);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain(
        '--to: no member named "node-z" (members: node-a, node-b, node-c)',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("admin commands", () => {
  const env = { KEEL_ADMIN_TOKEN: fakeToken };

  test("snapshot reports the index and size", async () => {
    const a = cluster.member("node-a").url;
    const run = await runCli(["snapshot", "--url", a], { env });
    expect(run).toEqual({
      code: 0,
      stdout: `${a}: snapshot taken at index 40 (2.0 KiB)\n`,
      stderr: "",
    });
    const json = await runCli(["snapshot", "--url", a, "--json"], { env });
    expect(JSON.parse(json.stdout)).toEqual({ ok: true, index: 40, bytes: 2048, url: a });
  });

  test("step-down on the leader names the new leader", async () => {
    const a = cluster.member("node-a").url;
    const run = await runCli(["step-down", "--url", a, "--to", "node-c"], { env });
    expect(run.stdout).toBe(`${a} stepped down; node-c leads now\n`);
    expect(cluster.leader).toBe("node-c");
  });

  test("step-down on a follower is retried once on the leader, and says so", async () => {
    const b = cluster.member("node-b").url;
    const a = cluster.member("node-a").url;
    const run = await runCli(["step-down", "--url", b], { env });
    expect(run.code).toBe(0);
    expect(run.stderr).toBe(`keel: ${b} is not the leader; asking the leader node-a at ${a}\n`);
    expect(run.stdout).toBe(`${a} stepped down; node-b leads now\n`);
    expect(cluster.requests.filter((r) => r.endsWith("POST /admin/step-down"))).toEqual([
      "node-b POST /admin/step-down",
      "node-a POST /admin/step-down",
    ]);
    // --json says where it went, and keeps stderr quiet.
    const c = cluster.member("node-c").url;
    const json = await runCli(["step-down", "--url", c, "--json"], { env });
    expect(json.stderr).toBe("");
    expect(JSON.parse(json.stdout)).toEqual({
      ok: true,
      leader: "node-a",
      url: b,
      redirectedFrom: c,
    });
  });

  test("suspend, resume and shutdown", async () => {
    const c = cluster.member("node-c").url;
    expect((await runCli(["suspend", "--url", c], { env })).stdout).toContain(
      "client writes suspended",
    );
    expect(cluster.suspended.has("node-c")).toBe(true);
    expect((await runCli(["resume", "--url", c], { env })).stdout).toContain(
      "client writes resumed",
    );
    expect(cluster.suspended.has("node-c")).toBe(false);
    const shutdown = await runCli(["shutdown", "--url", c, "--json"], { env });
    expect(shutdown.code).toBe(0);
    expect(JSON.parse(shutdown.stdout)).toMatchObject({ shutting_down: true, url: c });
  });
});
