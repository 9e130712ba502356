// End-to-end: authentication with the compiled binary (issue 5, "Authentication"). A
// 3-node cluster on 127.0.0.161-163 shares a secret file, an admin token and a client
// token. A 4th process started under a member's name with the WRONG secret (on
// 127.0.0.164), and a 5th with NO secret (127.0.0.165), are refused by every member: both
// sides log it, neither is ever linked, and the cluster's term, leader and writes do not
// notice them. A secret read from the environment (secret_env, on 127.0.0.170) signs the
// handshake; unset, keel run stops (127.0.0.160). Then: admin calls without a token get
// 401, the client token is enforced
// (and forwarded), and a TLS cluster on 127.0.0.167-169 serves https and mutual-TLS links.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { binaryPath, collectLines, type StatusBody, TestCluster } from "../support/cluster.ts";

const adminToken = "admin-e2e-token";
const clientToken = "client-e2e-token";
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

const dir = mkdtempSync(join(tmpdir(), "keel-e2e-auth-"));
const secretFile = join(dir, "secret");
const wrongSecretFile = join(dir, "wrong-secret");
writeFileSync(secretFile, "the-cluster-secret-0123456789abcdef\n", { mode: 0o600 });
writeFileSync(wrongSecretFile, "not-the-cluster-secret-0123456789ab\n", { mode: 0o600 });

type Status = StatusBody;

/** Intruder is a keel process outside the cluster's trust, with its own log. */
interface Intruder {
  process: Subprocess;
  log: string[];
  url: string;
}

let cluster: TestCluster;
const intruders: Intruder[] = [];

/** runArgs are `keel run` as member `name` of the file, on its own IP and data dir. */
function runArgs(configPath: string, name: string, dataDir: string, ip: string): string[] {
  return [
    "run",
    "--config",
    configPath,
    "--name",
    name,
    "--data-dir",
    dataDir,
    "--peer-listen",
    `${ip}:7070`,
    "--http-listen",
    `${ip}:7080`,
  ];
}

interface Run {
  stdout: string;
  stderr: string;
  code: number;
}

/**
 * runKeel runs the binary to its end, with none of the KEEL_* settings of whoever runs
 * the tests; `env` adds to that (undefined: the variable is removed).
 */
async function runKeel(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const merged: Record<string, string | undefined> = {
    ...process.env,
    KEEL_URL: "",
    KEEL_ADMIN_TOKEN: "",
    KEEL_CLIENT_TOKEN: "",
    ...env,
  };
  for (const [key, value] of Object.entries(merged)) if (value === undefined) delete merged[key];
  const child = Bun.spawn([binaryPath, ...args], { stdout: "pipe", stderr: "pipe", env: merged });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { stdout, stderr, code };
}

/**
 * startIntruder runs `keel run` as member `name` with a copy of the cluster file whose
 * secret_file line is replaced (or dropped), on its own IP: the same cluster name,
 * members and timings, so only the secret differs.
 */
function startIntruder(
  name: string,
  ip: string,
  secretLine: string,
  env: Record<string, string> = {},
): Intruder {
  const config = readFileSync(cluster.configPath, "utf8")
    .replace(`  secret_file: ${secretFile}\n`, secretLine);
  const configPath = join(dir, `intruder-${ip}.yaml`);
  writeFileSync(configPath, config);
  const child = Bun.spawn(
    [binaryPath, ...runArgs(configPath, name, join(dir, `intruder-${ip}`), ip)],
    { stdout: "ignore", stderr: "pipe", env: { ...process.env, ...env } },
  );
  const intruder = { process: child, log: [], url: `http://${ip}:7080` };
  void collectLines(child.stderr as ReadableStream<Uint8Array>, intruder.log);
  intruders.push(intruder);
  return intruder;
}

async function statusAt(url: string): Promise<Status | undefined> {
  try {
    const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(1000) });
    return response.ok ? await response.json() as Status : undefined;
  } catch {
    return undefined;
  }
}

function logHas(lines: readonly string[], ...parts: string[]): boolean {
  return lines.some((line) => parts.every((part) => line.includes(part)));
}

async function putWithToken(name: string, key: string, value: string): Promise<Response> {
  return await cluster.put(name, key, value, bearer(clientToken));
}

beforeAll(async () => {
  cluster = new TestCluster({
    ipBase: 161,
    name: "e2e-auth",
    extraYaml: [
      "security:",
      `  secret_file: ${secretFile}`,
      `  admin_token: ${adminToken}`,
      `  client_token: ${clientToken}`,
    ].join("\n"),
  });
  cluster.startAll();
  await cluster.waitForLeader();
}, 30_000);

afterAll(async () => {
  for (const intruder of intruders) {
    intruder.process.kill("SIGKILL");
    await intruder.process.exited;
  }
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("members link with the shared secret, and /status says how they are secured", async () => {
  const status = await cluster.status("node-a") as Status;
  expect(status.security).toEqual({
    peerAuth: "hmac-sha256",
    adminToken: true,
    clientToken: true,
    tls: false,
  });
  expect(status.members.filter((m) => m.name !== "node-a").every((m) => m.connected)).toBe(true);
  expect(logHas(cluster.member("node-a").log, "dev mode")).toBe(false);
});

test(
  "processes with the wrong secret or none cannot join, vote or disturb the cluster",
  async () => {
    const leader = await cluster.waitForLeader();
    const before = (await cluster.status(leader))!;
    const impersonated = ["node-a", "node-b", "node-c"].find((name) => name !== leader)!;
    const wrong = startIntruder(impersonated, "127.0.0.164", `  secret_file: ${wrongSecretFile}\n`);
    const none = startIntruder(impersonated, "127.0.0.165", "");

    // Each member they dial (all but the one they impersonate) refuses both, with the
    // address; each intruder is refused in turn.
    const dialled = cluster.members.filter((member) => member.name !== impersonated);
    await cluster.waitFor("every member refusing the wrong secret and the missing one", () => {
      const all = dialled.every((member) =>
        logHas(
          member.log,
          "Refused peer from",
          "bad handshake authentication (a different secret?)",
        ) &&
        logHas(member.log, "Refused peer from", "bad handshake authentication: the peer sent none")
      );
      return Promise.resolve(all ? true : undefined);
    });
    await cluster.waitFor("the intruders logging their refusals", () => {
      const refused = (intruder: Intruder, text: string) =>
        dialled.every((member) =>
          logHas(intruder.log, `Refused peer \\"${member.name}\\" at`, text)
        );
      const done = refused(wrong, "bad handshake authentication (a different secret?)") &&
        refused(none, "the peer has a cluster secret and this node has none");
      return Promise.resolve(done ? true : undefined);
    });
    expect(logHas(none.log, "dev mode")).toBe(true);
    const refusal = cluster.member(leader).log.find((line) =>
      line.includes("Refused peer from") && line.includes("a different secret")
    )!;
    expect(JSON.parse(refusal)).toMatchObject({
      level: "warn",
      claimedName: impersonated,
      remoteAddress: expect.stringMatching(/^127\.0\.0\.\d+:\d+$/),
    });

    // Several election timeouts (600 ms) with the intruders campaigning in vain.
    for (let i = 0; i < 6; i++) {
      const response = await putWithToken(cluster.members[i % 3]!.name, `during-${i}`, `v${i}`);
      expect(response.status).toBe(200);
      await Bun.sleep(500);
    }
    const after = (await cluster.status(leader))!;
    expect(after.role).toBe("leader");
    expect(after.term).toBe(before.term);
    for (const member of cluster.members) {
      const status = (await cluster.status(member.name))!;
      expect([status.leader, status.term]).toEqual([leader, before.term]);
    }
    // The intruders never linked to anyone nor learned of a leader.
    for (const intruder of [wrong, none]) {
      const status = (await statusAt(intruder.url))!;
      expect(status.role).not.toBe("leader");
      expect(status.leader).toBeNull();
      expect(status.members.filter((m) => m.name !== impersonated).map((m) => m.connected))
        .toEqual([false, false]);
      expect(logHas(intruder.log, "Connected to peer")).toBe(false);
    }
    expect((await statusAt(none.url))!.security.peerAuth).toBe("none (dev mode)");
    // The real member of that name is still linked and counted.
    // with the incarnation of the real process, never an intruder's.
    const incarnation = (status: StatusBody) =>
      (status.members.find((m) => m.name === impersonated) as { incarnation?: string })
        .incarnation;
    const view = (await cluster.status(leader))!.members.find((m) => m.name === impersonated)!;
    expect(view.connected).toBe(true);
    expect(incarnation((await cluster.status(leader))!)).toBe(incarnation(before));
    expect(incarnation(before)).toBe((await cluster.status(impersonated))!.incarnation);
  },
  60_000,
);

test("secret_env: the secret comes from the variable it names; unset, keel run stops", async () => {
  const leader = await cluster.waitForLeader();
  const impersonated = ["node-a", "node-b", "node-c"].find((name) => name !== leader)!;
  // A wrong value: refused as a different secret, not as dev mode (the variable was read
  // and signs the handshake).
  const wrong = startIntruder(
    impersonated,
    "127.0.0.170",
    "  secret_env: KEEL_E2E_SECRET\n",
    { KEEL_E2E_SECRET: "not-the-cluster-secret-0123456789" },
  );
  await cluster.waitFor("the leader refusing the secret from the environment", () => {
    const refused = logHas(
      cluster.member(leader).log,
      "Refused peer from",
      "bad handshake authentication (a different secret?)",
    ) && logHas(wrong.log, "a different secret");
    return Promise.resolve(refused ? true : undefined);
  });
  expect((await statusAt(wrong.url))!.security.peerAuth).toBe("hmac-sha256");
  expect(logHas(wrong.log, "Connected to peer")).toBe(false);

  const configPath = join(dir, "secret-env-unset.yaml");
  writeFileSync(
    configPath,
    readFileSync(cluster.configPath, "utf8").replace(
      `  secret_file: ${secretFile}\n`,
      "  secret_env: KEEL_E2E_UNSET_SECRET\n",
    ),
  );
  const { stderr, code } = await runKeel(
    runArgs(configPath, "node-a", join(dir, "secret-env-unset-data"), "127.0.0.160"),
    { KEEL_E2E_UNSET_SECRET: undefined },
  );
  expect(code).toBe(2);
  expect(stderr).toContain(
    "security.secret_env KEEL_E2E_UNSET_SECRET is not set in this process's environment",
  );
}, 30_000);

test("a secret file that cannot be read stops keel run with exit 2, naming it", async () => {
  const missing = join(dir, "no-such-secret");
  const configPath = join(dir, "missing-secret.yaml");
  writeFileSync(
    configPath,
    readFileSync(cluster.configPath, "utf8").replace(secretFile, missing),
  );
  const { stderr, code } = await runKeel(
    runArgs(configPath, "node-a", join(dir, "missing-secret-data"), "127.0.0.166"),
  );
  expect(code).toBe(2);
  expect(stderr).toContain(`Cannot read security.secret_file \\"${missing}\\": no such file`);
});

test("admin calls without a token get 401, with a wrong one 403", async () => {
  const leader = await cluster.waitForLeader();
  const url = `${cluster.member(leader).url}/admin/snapshot`;
  const missing = await fetch(url, { method: "POST" });
  expect(missing.status).toBe(401);
  expect(missing.headers.get("www-authenticate")).toBe('Bearer realm="keel"');
  expect((await missing.json() as { error: { code: string } }).error.code).toBe("unauthorized");
  const wrong = await fetch(url, { method: "POST", headers: bearer("guess") });
  expect(wrong.status).toBe(403);
  const right = await fetch(url, { method: "POST", headers: bearer(adminToken) });
  expect(right.status).toBe(200);
  // The client token is not the admin token.
  expect((await fetch(url, { method: "POST", headers: bearer(clientToken) })).status).toBe(403);
});

test(
  "the client token is enforced on /v1, forwarded to the leader, and sent by the CLI",
  async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.members.find((m) => m.name !== leader)!;
    const keyUrl = `${follower.url}/v1/kv/guarded`;
    expect((await fetch(keyUrl, { method: "PUT", body: "x" })).status).toBe(401);
    expect((await fetch(keyUrl, { method: "PUT", body: "x", headers: bearer("nope") })).status)
      .toBe(403);
    // Through a follower: forwarded to the leader with the client's header.
    const put = await fetch(keyUrl, {
      method: "PUT",
      body: "secret-value",
      headers: bearer(clientToken),
    });
    expect(put.status).toBe(200);
    const get = await fetch(keyUrl, { headers: bearer(clientToken) });
    expect(await get.text()).toBe("secret-value");
    expect((await fetch(keyUrl)).status).toBe(401);
    // Operator routes stay open.
    for (const path of ["/status", "/healthz", "/readyz", "/metrics"]) {
      expect((await fetch(`${follower.url}${path}`)).status, path).toBe(200);
    }

    // From the config file, KEEL_CLIENT_TOKEN, or --token; without one, a hint.
    const fromConfig = await runKeel([
      "kv",
      "get",
      "guarded",
      "--config",
      cluster.configPath,
      "--name",
      follower.name,
    ]);
    expect([fromConfig.code, fromConfig.stdout]).toEqual([0, "secret-value"]);
    const fromEnv = await runKeel(["kv", "get", "guarded", "--url", follower.url], {
      KEEL_CLIENT_TOKEN: clientToken,
    });
    expect([fromEnv.code, fromEnv.stdout]).toEqual([0, "secret-value"]);
    const fromFlag = await runKeel([
      "kv",
      "put",
      "cli-key",
      "v",
      "--url",
      follower.url,
      "--token",
      clientToken,
    ]);
    expect(fromFlag.code).toBe(0);
    const without = await runKeel(["kv", "get", "guarded", "--url", follower.url]);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain("401 unauthorized");
    expect(without.stderr).toContain("KEEL_CLIENT_TOKEN");
    const status = await runKeel(["status", "--url", follower.url]);
    expect(status.stdout).toContain(
      "peer auth hmac-sha256, admin token on, client token on, tls off",
    );
    // The failover drill's probe writes carry the client token from the config too.
    const drill = await runKeel([
      "drill",
      "failover",
      "--json",
      "--timeout",
      "20s",
      "--config",
      cluster.configPath,
      "--name",
      follower.name,
    ]);
    expect(drill.code, drill.stderr).toBe(0);
    const report = JSON.parse(drill.stdout) as {
      ok: boolean;
      probes: { acknowledged: number; failures: Record<string, number> };
    };
    expect(report.ok).toBe(true);
    expect(report.probes.acknowledged).toBeGreaterThan(0);
    expect(Object.keys(report.probes.failures)).not.toContain("unauthorized");
    await cluster.waitForLeader();
  },
  60_000,
);

// ---- TLS -------------------------------------------------------------------------------

const openssl = spawnSync("openssl", ["version"]).status === 0;
if (!openssl) console.warn("note: openssl not found: the e2e TLS test is skipped");

/** makeCerts makes a CA and one certificate for 127.0.0.167-169 in dir; returns paths. */
function makeCerts(): { cert: string; key: string; ca: string } {
  const run = (...args: string[]) => {
    const result = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=e2e CA",
  );
  run("req", ...ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=keel e2e");
  writeFileSync(
    join(dir, "node.ext"),
    "subjectAltName=IP:127.0.0.167,IP:127.0.0.168,IP:127.0.0.169\n" +
      "extendedKeyUsage=serverAuth,clientAuth\n",
  );
  run(
    "x509",
    "-req",
    "-in",
    "node.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "node.pem",
    "-days",
    "2",
    "-extfile",
    "node.ext",
  );
  return { cert: join(dir, "node.pem"), key: join(dir, "node.key"), ca: join(dir, "ca.pem") };
}

describe.skipIf(!openssl)("TLS (skipped without openssl, which makes the certificates)", () => {
  let tlsCluster: TestCluster;
  let ca = "";

  beforeAll(() => {
    const files = makeCerts();
    ca = readFileSync(files.ca, "utf8");
    tlsCluster = new TestCluster({
      ipBase: 167,
      name: "e2e-tls",
      extraYaml: [
        "security:",
        `  secret_file: ${secretFile}`,
        "  tls:",
        `    cert_file: ${files.cert}`,
        `    key_file: ${files.key}`,
        `    ca_file: ${files.ca}`,
      ].join("\n"),
    });
    for (const member of tlsCluster.members) member.url = member.url.replace("http:", "https:");
    tlsCluster.startAll();
  });

  afterAll(async () => {
    await tlsCluster?.stop();
  });

  async function tlsStatus(url: string): Promise<Status | undefined> {
    try {
      const response = await fetch(`${url}/status`, {
        signal: AbortSignal.timeout(1000),
        tls: { ca },
      });
      return response.ok ? await response.json() as Status : undefined;
    } catch {
      return undefined;
    }
  }

  test("https for clients, mutual TLS between members, writes forwarded over https", async () => {
    const leader = await tlsCluster.waitFor("a leader over TLS links", async () => {
      const statuses = await Promise.all(tlsCluster.members.map((m) => tlsStatus(m.url)));
      const named = statuses[0]?.leader;
      return named !== null && named !== undefined &&
          statuses.every((s) => s?.leader === named)
        ? named
        : undefined;
    });
    const status = (await tlsStatus(tlsCluster.member(leader).url))!;
    expect(status.security).toMatchObject({ peerAuth: "hmac-sha256", tls: true });
    expect(status.members.find((m) => m.name !== leader)).toMatchObject({ connected: true });
    const follower = tlsCluster.members.find((m) => m.name !== leader)!;
    const put = await fetch(`${follower.url}/v1/kv/over-tls`, {
      method: "PUT",
      body: "encrypted",
      tls: { ca },
    });
    expect(put.status).toBe(200);
    const get = await fetch(`${follower.url}/v1/kv/over-tls`, { tls: { ca } });
    expect(await get.text()).toBe("encrypted");
    // Plain http is not served; an https client without the CA does not trust it.
    await expect(fetch(follower.url.replace("https:", "http:") + "/status")).rejects.toThrow();
    await expect(fetch(`${follower.url}/status`)).rejects.toThrow();
    // The CLI trusts the config's ca_file and uses https for members it finds there.
    const at = ["--config", tlsCluster.configPath, "--name", follower.name];
    const cliGet = await runKeel(["kv", "get", "over-tls", ...at]);
    expect([cliGet.code, cliGet.stdout, cliGet.stderr]).toEqual([0, "encrypted", ""]);
    // keel members reads every member's /readyz over https with the same CA.
    const members = await runKeel(["members", "--json", ...at]);
    expect(members.code, members.stderr).toBe(0);
    const report = JSON.parse(members.stdout) as { members: { name: string; ready: boolean }[] };
    expect(report.members.map((m) => [m.name, m.ready])).toEqual(
      tlsCluster.members.map((m) => [m.name, true]),
    );
    expect(logHas(tlsCluster.member(leader).log, "Listening for peers", "peers verified (mutual)"))
      .toBe(true);
  }, 60_000);
});
