// keel check-config reads the secret and TLS files as keel run would, on this host, and
// reports what is wrong with them as warnings (exit 0: the file itself is valid). It looks
// up members' DNS names (through a test DNS server on 127.0.0.66 here), warns of what
// delays finding a replaced host, and says how long that takes (info). And keel run (the
// compiled binary) refuses with exit 2 a secret that check-config warns of.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkConfig } from "../../src/cli/check_config.ts";
import { binaryPath, requireBinary } from "../support/cluster.ts";
import { TestDnsServer } from "../support/dns_server.ts";

const dir = mkdtempSync(join(tmpdir(), "keel-check-config-"));
let dns: TestDnsServer;
beforeAll(async () => {
  dns = await TestDnsServer.start({ hostname: "127.0.0.66" });
});
afterAll(() => {
  dns.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface Report {
  code: number;
  warnings: { path: string; message: string }[];
  info: { path: string; message: string }[];
}

const members = `cluster_name: test
members:
  - name: node-a
    peer: 127.0.0.11:7070
    http: 127.0.0.11:7080
`;

/** check runs checkConfig --json on the text and returns its exit code and report. */
async function check(text: string): Promise<Report> {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  const written: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string) => {
    written.push(chunk);
    return true;
  }) as typeof process.stdout.write;
  let code: number;
  try {
    code = await checkConfig(file, true);
  } finally {
    process.stdout.write = write;
  }
  const report = JSON.parse(written.join(""));
  return { code, warnings: report.warnings, info: report.info };
}

test("an unreadable secret file is a warning that names it, and the exit is still 0", async () => {
  const missing = join(dir, "no-such-secret");
  const result = await check(`${members}security:\n  secret_file: ${missing}\n`);
  expect(result.code).toBe(0);
  expect(result.warnings).toContainEqual({
    path: "security.secret_file",
    message: `Cannot read security.secret_file "${missing}": no such file (on this host; ` +
      "keel run would stop with exit 2)",
  });
});

test("a readable, long enough secret gives no warning; a short one says so", async () => {
  const good = join(dir, "good-secret");
  writeFileSync(good, "x".repeat(40), { mode: 0o600 });
  const ok = await check(`${members}security:\n  secret_file: ${good}\n`);
  expect(ok.warnings.filter((w) => w.path.startsWith("security"))).toEqual([]);
  const short = join(dir, "short-secret");
  writeFileSync(short, "abc", { mode: 0o600 });
  const weak = await check(`${members}security:\n  secret_file: ${short}\n`);
  expect(weak.warnings.map((w) => w.message)).toContainEqual(
    expect.stringContaining("holds only 3 bytes"),
  );
});

/** dnsMembers is a cluster of one member by IP and two by DNS name, with the given tail. */
function dnsMembers(ttlSeconds: number, tail = ""): string {
  dns.setRecord("node-b.keel.test", ["127.0.0.72"], ttlSeconds);
  dns.setRecord("node-c.keel.test", ["127.0.0.73"], ttlSeconds);
  return `cluster_name: test
members:
  - name: node-a
    peer: 127.0.0.71:7070
    http: 127.0.0.71:7080
  - name: node-b
    peer: node-b.keel.test:7070
    http: node-b.keel.test:7080
  - name: node-c
    peer: node-c.keel.test:7070
    http: node-c.keel.test:7080
resolver:
  servers: ["${dns.endpoint}"]
${tail}`;
}

/** notSecurity drops the dev-mode and secret warnings, which these tests do not concern. */
function notSecurity(warnings: Report["warnings"]): Report["warnings"] {
  return warnings.filter((warning) => !warning.path.startsWith("security"));
}

test("the recommended defaults with DNS-named members warn of nothing and say the delay", async () => {
  // raft.election_timeout 1s and resolver.refresh 5s (the defaults), TTL 1s.
  const report = await check(dnsMembers(1));
  expect(report.code).toBe(0);
  expect(notSecurity(report.warnings)).toEqual([]);
  expect(report.info).toEqual([
    {
      path: "members[1].peer",
      message: '"node-b.keel.test": peers reach a replaced host within 6s of its record ' +
        "being repointed (resolver.refresh 5s + TTL 1s)",
    },
    {
      path: "members[2].peer",
      message: '"node-c.keel.test": peers reach a replaced host within 6s of its record ' +
        "being repointed (resolver.refresh 5s + TTL 1s)",
    },
  ]);
});

test("a TTL longer than failure detection is a warning", async () => {
  const report = await check(dnsMembers(30));
  expect(notSecurity(report.warnings)).toContainEqual({
    path: "members[1].peer",
    message: '"node-b.keel.test": TTL of 30s exceeds the failure-detection timeout ' +
      "(raft.election_timeout) of 1s; resolvers may hand out the old address that long " +
      "after the name is repointed",
  });
});

test("a delay beyond resolver.replacement_delay_max is a warning; within it is not", async () => {
  const over = await check(dnsMembers(1, "  replacement_delay_max: 5500ms\n"));
  expect(notSecurity(over.warnings)).toContainEqual({
    path: "members[1].peer",
    message: '"node-b.keel.test": resolver.refresh of 5s plus TTL of 1s makes up to 6s ' +
      "before peers reach a replaced host, more than resolver.replacement_delay_max of 5.5s",
  });
  const within = await check(dnsMembers(1, "  replacement_delay_max: 6s\n"));
  expect(notSecurity(within.warnings)).toEqual([]);
});

test("what check-config warns of, keel run refuses: a short secret stops it with exit 2", () => {
  requireBinary();
  const short = join(dir, "short-secret-run");
  writeFileSync(short, "abc\n", { mode: 0o600 });
  const file = join(dir, "short-secret-run.yaml");
  writeFileSync(file, `${members}security:\n  secret_file: ${short}\n`);
  const run = Bun.spawnSync([
    binaryPath,
    "run",
    "--config",
    file,
    "--name",
    "node-a",
    "--data-dir",
    join(dir, "data-short-secret"),
    "--log-format",
    "text",
  ], { env: { PATH: process.env.PATH ?? "" }, timeout: 20_000 });
  expect(run.exitCode).toBe(2);
  expect(run.stderr.toString()).toContain(
    `security.secret_file "${short}" holds only 3 bytes, fewer than the minimum of 16`,
  );
});
