// End-to-end: a service that fails, in its own binary built with keel as a library
// (test/support/faulty_service_main.ts). A throwing apply is one replicated error that
// changes nothing; a snapshot the service cannot restore stops the node with a clear
// message and a non-zero exit instead of serving a state the log does not say.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { TestCluster } from "../support/cluster.ts";

const token = "faults-admin-token";
let buildDir: string;
let cluster: TestCluster;

beforeAll(async () => {
  buildDir = mkdtempSync(join(tmpdir(), "keel-faulty-"));
  const binary = join(buildDir, "keel-faulty");
  const build = Bun.spawnSync([
    process.execPath,
    "build",
    "--compile",
    resolve(import.meta.dir, "..", "support", "faulty_service_main.ts"),
    "--outfile",
    binary,
  ], { stdout: "pipe", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`Cannot build the faulty binary: ${build.stderr}`);
  cluster = new TestCluster({
    ipBase: 177,
    binary,
    name: "faults",
    extraYaml: `security:\n  admin_token: ${token}`,
  });
  cluster.startAll();
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
  rmSync(buildDir, { recursive: true, force: true });
});

async function command(name: string, body: unknown): Promise<Response> {
  return await fetch(`${cluster.member(name).url}/v1/command`, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
    signal: AbortSignal.timeout(10_000),
  });
}

async function counter(name: string): Promise<{ counter: number; poisoned: boolean }> {
  const response = await fetch(`${cluster.member(name).url}/v1/query?consistency=stale`, {
    method: "POST",
    body: "{}",
    signal: AbortSignal.timeout(5000),
  });
  return await response.json() as { counter: number; poisoned: boolean };
}

interface ServiceStatus {
  appliedIndex: number;
  service: { lastError: { index: number; message: string } | null };
  counters: { serviceErrors: number };
}

async function serviceStatus(name: string): Promise<ServiceStatus | undefined> {
  return await cluster.status(name) as unknown as ServiceStatus | undefined;
}

test("a throwing apply is the same error on every member and changes nothing", async () => {
  await cluster.waitForLeader();
  const names = cluster.members.map((m) => m.name);
  expect((await command("node-a", { op: "add", n: 5 })).status).toBe(200);
  // Through a follower too: the error comes back through the forwarded request.
  const leader = await cluster.waitForLeader();
  const follower = names.find((name) => name !== leader)!;
  const failed = await command(follower, { op: "throw" });
  expect(failed.status).toBe(422);
  const body = await failed.json() as { error: { code: string; message: string } };
  expect(body.error.code).toBe("service_error");
  expect(body.error.message).toMatch(/^Service failed at index \d+: Error: deliberate failure/);
  const after = await command("node-b", { op: "add", n: 1 });
  expect(await after.json()).toEqual({ counter: 6 });
  const index = Number(after.headers.get("keel-index"));

  const statuses = await cluster.waitFor("every member to apply the last command", async () => {
    const all = await Promise.all(names.map(serviceStatus));
    return all.every((s) => s !== undefined && s.appliedIndex >= index)
      ? all as ServiceStatus[]
      : undefined;
  });
  const errors = statuses.map((s) => s.service.lastError);
  expect(errors[0]?.message).toBe(body.error.message);
  for (const error of errors) expect(error).toEqual(errors[0]!);
  for (const status of statuses) expect(status.counters.serviceErrors).toBe(1);
  for (const name of names) expect(await counter(name)).toEqual({ counter: 6, poisoned: false });
  // Apply time and errors are visible for any service.
  const metrics = await (await fetch(`${cluster.member(follower).url}/metrics`)).text();
  expect(metrics).toMatch(/^keel_apply_seconds_count [1-9]/m);
  expect(metrics).toMatch(/^keel_service_errors_total 1$/m);
  expect(metrics).toMatch(/^keel_snapshot_bytes \d+$/m);
}, 60_000);

test("a snapshot the service cannot restore stops the node with a clear message", async () => {
  const leader = await cluster.waitForLeader();
  expect((await command(leader, { op: "poison" })).status).toBe(200);
  const victim = cluster.members.find((m) => m.name !== leader)!;
  await cluster.waitFor(
    "the victim to apply the poison",
    async () => (await counter(victim.name)).poisoned ? true : undefined,
  );
  const snapshot = await fetch(`${victim.url}/admin/snapshot`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5000),
  });
  expect(snapshot.status).toBe(200);
  const taken = await serviceStatus(victim.name) as unknown as {
    service: { snapshotBytes: number };
  };
  expect(taken.service.snapshotBytes).toBeGreaterThan(0);
  await cluster.kill(victim.name);
  const logged = victim.log.length;
  cluster.start(victim.name);
  const code = await Promise.race([
    victim.process!.exited,
    Bun.sleep(20_000).then(() => "timeout"),
  ]);
  victim.process = undefined;
  expect(code).toBe(1);
  const log = victim.log.slice(logged).join("\n");
  expect(log).toContain("cannot restore this node's state; stopping");
  expect(log).toContain("The service could not restore its snapshot at index");
  expect(log).toContain("deliberately unreadable snapshot");
  // The other members are unaffected and keep serving.
  const others = cluster.members.filter((m) => m !== victim).map((m) => m.name);
  const write = await command(others[0]!, { op: "add", n: 1 });
  expect(write.status).toBe(200);
}, 60_000);
