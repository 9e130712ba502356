import { afterEach, expect, test } from "bun:test";
import type { Config } from "../../src/config/types.ts";
import { silentLogger } from "../../src/lib/log.ts";
import { Registry } from "../../src/lib/metrics.ts";
import { checkDnsTtls, realScheduler, ReResolver, startResolver } from "../../src/resolver/dns.ts";
import { createLookup } from "../../src/resolver/dns_client.ts";
import { TestDnsServer } from "../support/dns_server.ts";

// The re-resolver with the real UDP client against the test DNS server on 127.0.0.61,
// in real time with a short refresh. Each test bounds its waits and stops what it started.

const cleanups: Array<() => void> = [];

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

async function dnsServer(): Promise<TestDnsServer> {
  const server = await TestDnsServer.start({ hostname: "127.0.0.61" });
  cleanups.push(() => server.stop());
  return server;
}

/** waitFor polls `check` every 20 ms until it holds, or fails after `timeoutMs`. */
async function waitFor(what: string, check: () => boolean, timeoutMs = 3000): Promise<number> {
  const startedAt = performance.now();
  while (!check()) {
    if (performance.now() - startedAt > timeoutMs) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await Bun.sleep(20);
  }
  return performance.now() - startedAt;
}

test("a repointed DNS record reaches onChange within about one refresh", async () => {
  const dns = await dnsServer();
  dns.setRecord("node-b.keel.test", ["127.0.0.72"], 1);
  const changes: Array<[string, string, number]> = [];
  const resolver = new ReResolver({
    members: [{ name: "node-b", host: "node-b.keel.test", port: 7071 }],
    refreshMs: 200,
    lookup: createLookup([dns.endpoint], { timeoutMs: 150 }),
    clock: Date,
    scheduler: realScheduler,
    onChange: (name, host, port) => changes.push([name, host, port]),
    log: silentLogger,
  });
  cleanups.push(() => resolver.stop());
  await resolver.start();
  expect(changes).toEqual([["node-b", "127.0.0.72", 7071]]);

  dns.setRecord("node-b.keel.test", ["127.0.0.73"], 1);
  const elapsedMs = await waitFor("the new address", () => changes.length === 2);
  expect(changes[1]).toEqual(["node-b", "127.0.0.73", 7071]);
  expect(elapsedMs).toBeLessThan(1000);
  const [state] = resolver.state();
  expect(state).toMatchObject({ address: "127.0.0.73", changes: 1, ttlSeconds: 1 });

  // A DNS outage keeps the last good address and shows up as failures.
  dns.setMode("outage");
  await waitFor("failures to be counted", () => resolver.state()[0]!.consecutiveFailures >= 2);
  expect(resolver.state()[0]).toMatchObject({ address: "127.0.0.73" });
  expect(resolver.state()[0]!.lastError).toContain("did not answer");
  expect(changes.length).toBe(2);

  dns.setMode("normal");
  await waitFor("recovery", () => resolver.state()[0]!.consecutiveFailures === 0);
  expect(changes.length).toBe(2);
});

function config(dnsEndpoint: string): Config {
  const member = (name: string, host: string, index: number) => ({
    name,
    peer: { host, port: 7070 + index },
    http: { host: "127.0.0.11", port: 7080 + index },
  });
  return {
    clusterName: "test",
    members: [
      member("node-a", "127.0.0.11", 0),
      member("node-b", "node-b.keel.test", 1),
      member("node-c", "node-c.keel.test", 2),
    ],
    storage: { dir: "./data", scrubIntervalMs: 3_600_000, scrubBytesPerSecond: 8_388_608 },
    raft: { tickMs: 10, heartbeatIntervalMs: 100, electionTimeoutMs: 1000, snapshotEntries: 100 },
    resolver: { refreshMs: 200, servers: [dnsEndpoint] },
    http: { bodyBytesMax: 1024, requestTimeoutMs: 1000 },
    security: { secretFile: undefined, adminToken: undefined },
    log: { level: "info", format: "json" },
  };
}

test("startResolver points the transport at resolved addresses before it returns", async () => {
  const dns = await dnsServer();
  dns.setRecord("node-b.keel.test", ["127.0.0.72"], 0);
  dns.setRecord("node-c.keel.test", ["127.0.0.83"], 0);
  const moves: string[] = [];
  const registry = new Registry();
  const resolver = await startResolver({
    config: config(dns.endpoint),
    self: "node-a",
    transport: { setPeerAddress: (name, host, port) => moves.push(`${name}=${host}:${port}`) },
    log: silentLogger,
    registry,
  });
  cleanups.push(() => resolver.stop());
  expect(moves.sort()).toEqual(["node-b=127.0.0.72:7071", "node-c=127.0.0.83:7072"]);
  expect(resolver.state().map((m) => m.name)).toEqual(["node-b", "node-c"]);
  expect(registry.render()).toContain(`keel_dns_lookups_total{member="node-c"} 1`);
});

test("checkDnsTtls asks resolver.servers and reports long TTLs and missing names", async () => {
  const dns = await dnsServer();
  dns.setRecord("node-b.keel.test", ["127.0.0.72"], 60);
  const problems = await checkDnsTtls(config(dns.endpoint));
  expect(problems.map((p) => p.path)).toEqual(["members[1].peer", "members[2].peer"]);
  expect(problems[0]!.message).toContain("TTL of 60s exceeds the failure-detection timeout");
  expect(problems[1]!.message).toBe(
    `"node-c.keel.test" does not resolve through ${dns.endpoint}: ` +
      `${dns.endpoint} answered NXDOMAIN for "node-c.keel.test"`,
  );
});
