// Bad input against the compiled binary: a malformed config exits 2 naming every problem;
// garbage on the peer port closes that connection only; malformed HTTP bodies get JSON
// errors. The node stays up and the cluster unaffected throughout.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { binaryPath, TestCluster } from "../support/cluster.ts";

let cluster: TestCluster;

beforeAll(() => {
  cluster = new TestCluster({ ipBase: 151, name: "bad-input" });
  cluster.startAll();
});

afterAll(async () => {
  await cluster.stop();
});

test("keel run with a malformed config exits 2 and names every problem with its path", async () => {
  const dir = mkdtempSync(join(tmpdir(), "keel-bad-"));
  try {
    const path = join(dir, "bad.yaml");
    writeFileSync(
      path,
      [
        "cluster_name: Bad Name",
        "members:",
        "  - name: node-a",
        "    peer: 127.0.0.1:99999",
        "    http: 127.0.0.1:7080",
        "  - name: node-a",
        "    peer: nohost",
        "raft:",
        "  election_timeout: 10ms",
        "  heartbeat_intervl: 5ms",
      ].join("\n"),
    );
    const child = Bun.spawn([binaryPath, "run", "--config", path, "--name", "node-a"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()]);
    expect(code).toBe(2);
    for (
      const path of [
        "cluster_name",
        "members[0].peer",
        "members[1].name",
        "members[1].peer",
        "members[1].http",
        "raft.heartbeat_intervl",
      ]
    ) {
      expect(stderr).toContain(`${path}:`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("keel --help lists the commands and --version prints the version", async () => {
  const help = Bun.spawnSync([binaryPath, "--help"]);
  expect(help.exitCode).toBe(0);
  const text = help.stdout.toString();
  for (
    const command of [
      "run",
      "check-config",
      "status",
      "members",
      "kv",
      "step-down",
      "drill",
      "version",
    ]
  ) {
    expect(text).toContain(command);
  }
  const version = Bun.spawnSync([binaryPath, "--version"]);
  expect(version.stdout.toString()).toMatch(/^keel \d+\.\d+\.\d+/);
});

test("garbage on the peer port closes that connection only; the cluster keeps working", async () => {
  const leader = await cluster.waitForLeader();
  const target = cluster.members.find((m) => m.name !== leader)!;
  const payloads = [
    new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    Uint8Array.of(0xff, 0xff, 0xff, 0xff, 1, 2, 3), // an oversized length prefix
    Uint8Array.of(0, 0, 0, 3, 9, 9, 9), // a frame of an unknown kind
    crypto.getRandomValues(new Uint8Array(4096)),
  ];
  for (const payload of payloads) {
    let closed = false;
    const socket = await Bun.connect({
      hostname: target.ip,
      port: 7070,
      socket: {
        data() {},
        close() {
          closed = true;
        },
      },
    });
    socket.write(payload);
    const deadline = Date.now() + 3000;
    while (!closed && Date.now() < deadline) await Bun.sleep(20);
    socket.end();
    expect(closed).toBe(true);
  }
  const status = await cluster.status(target.name);
  expect(status?.leader).toBe(leader);
  await cluster.putWithRetry(
    cluster.members.map((m) => m.name),
    "after-garbage",
    "fine",
    "garbage:1",
  );
  const read = await cluster.get(target.name, "after-garbage");
  expect(await read.text()).toBe("fine");
});

test("malformed HTTP bodies get JSON errors with stable codes", async () => {
  const url = cluster.member("node-a").url;
  const badJson = await fetch(`${url}/v1/kv/x/cas`, { method: "POST", body: "{not json" });
  expect(badJson.status).toBe(400);
  expect(((await badJson.json()) as { error: { code: string } }).error.code).toBe("bad_request");
  const tooBig = await fetch(`${url}/v1/kv/big`, {
    method: "PUT",
    body: new Uint8Array(2 * 1024 * 1024),
  });
  expect(tooBig.status).toBe(413);
  expect(((await tooBig.json()) as { error: { code: string } }).error.code).toBe(
    "payload_too_large",
  );
  const badKey = await fetch(`${url}/v1/kv/k`, {
    method: "PUT",
    body: "v",
    headers: { "Idempotency-Key": "no-seq" },
  });
  expect(badKey.status).toBe(400);
  const missing = await fetch(`${url}/v1/kv/never-written`);
  expect(missing.status).toBe(404);
  expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
});
