import { describe, expect, test } from "bun:test";
import type { Config } from "../../src/config/types.ts";
import type { Fields, Logger } from "../../src/lib/log.ts";
import { Registry } from "../../src/lib/metrics.ts";
import {
  checkDnsTtls,
  lookupTimeoutMsDefault,
  registerResolverMetrics,
  ReResolver,
  type ReResolverOptions,
  ttlWarnings,
} from "../../src/resolver/dns.ts";
import { DnsLookupError, type LookupResult } from "../../src/resolver/dns_client.ts";
import { FakeTime } from "./fake_time.ts";

// The re-resolver on a fake clock with a scripted lookup: no sockets, no sleeping.

interface LogLine {
  level: string;
  message: string;
  fields: Fields;
}

function recordingLogger(lines: LogLine[]): Logger {
  const logger: Logger = {
    debug: (message, fields = {}) => lines.push({ level: "debug", message, fields }),
    info: (message, fields = {}) => lines.push({ level: "info", message, fields }),
    warn: (message, fields = {}) => lines.push({ level: "warn", message, fields }),
    error: (message, fields = {}) => lines.push({ level: "error", message, fields }),
    child: () => logger,
  };
  return logger;
}

type Answer = LookupResult | Error | "hang";

/** ScriptedLookup answers from a table the test edits; "hang" never answers until released. */
class ScriptedLookup {
  readonly answers = new Map<string, Answer>();
  readonly calls: string[] = [];
  readonly signals: AbortSignal[] = [];
  #release: Array<() => void> = [];

  readonly lookup = (host: string, signal?: AbortSignal): Promise<LookupResult> => {
    this.calls.push(host);
    if (signal !== undefined) this.signals.push(signal);
    const answer = this.answers.get(host);
    if (answer === undefined) {
      return Promise.reject(new DnsLookupError("nxdomain", `no such name "${host}"`));
    }
    if (answer === "hang") {
      return new Promise((_, reject) => {
        this.#release.push(() => reject(new DnsLookupError("timeout", "released")));
      });
    }
    if (answer instanceof Error) return Promise.reject(answer);
    return Promise.resolve({ addresses: [...answer.addresses], ttlSeconds: answer.ttlSeconds });
  };

  set(host: string, addresses: string[], ttlSeconds: number | null = 1): void {
    this.answers.set(host, { addresses, ttlSeconds });
  }

  releaseAll(): void {
    for (const release of this.#release.splice(0)) release();
  }
}

interface Harness {
  time: FakeTime;
  dns: ScriptedLookup;
  changes: Array<[string, string, number]>;
  logs: LogLine[];
  resolver: ReResolver;
}

const refreshMs = 1000;

function harness(overrides: Partial<ReResolverOptions> = {}): Harness {
  const time = new FakeTime();
  const dns = new ScriptedLookup();
  const changes: Array<[string, string, number]> = [];
  const logs: LogLine[] = [];
  const resolver = new ReResolver({
    members: [
      { name: "node-b", host: "node-b.keel.test", port: 7001 },
      { name: "node-c", host: "10.0.0.3", port: 7002 },
    ],
    refreshMs,
    lookup: dns.lookup,
    clock: time,
    scheduler: time,
    onChange: (name, host, port) => changes.push([name, host, port]),
    log: recordingLogger(logs),
    ...overrides,
  });
  return { time, dns, changes, logs, resolver };
}

function member(h: Harness, name = "node-b") {
  const view = h.resolver.state().find((m) => m.name === name);
  if (view === undefined) throw new Error(`no member ${name}`);
  return view;
}

describe("ReResolver", () => {
  test("resolves every DNS name at start and points the transport there", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"], 5);
    await h.resolver.start();
    expect(h.changes).toEqual([["node-b", "10.0.0.2", 7001]]);
    expect(h.dns.calls).toEqual(["node-b.keel.test"]); // node-c is an IP: never looked up
    const b = member(h);
    expect(b).toMatchObject({
      endpoint: "node-b.keel.test:7001",
      dns: true,
      address: "10.0.0.2",
      addresses: ["10.0.0.2"],
      ttlSeconds: 5,
      lookups: 1,
      lastAttemptAt: h.time.now(),
      lastSuccessAt: h.time.now(),
      consecutiveFailures: 0,
      changes: 0,
      lastChangeAt: null,
      inFlight: false,
    });
    expect(member(h, "node-c")).toMatchObject({ dns: false, address: "10.0.0.3", lookups: 0 });
    h.resolver.stop();
  });

  test("looks names up again every refresh interval, not sooner", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    expect(h.dns.calls.length).toBe(1);
    await h.time.advance(refreshMs - 1);
    expect(h.dns.calls.length).toBe(1);
    await h.time.advance(1);
    expect(h.dns.calls.length).toBe(2);
    await h.time.advance(refreshMs * 10);
    expect(h.dns.calls.length).toBe(12);
    expect(h.resolver.counters()).toEqual({ lookups: 12, failures: 0, addressChanges: 0 });
    expect(h.changes.length).toBe(1); // the same address is not published again
    h.resolver.stop();
  });

  test("a changed address is published once and recorded", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    h.dns.set("node-b.keel.test", ["10.0.0.9"]);
    const changedAt = h.time.now() + refreshMs;
    await h.time.advance(refreshMs);
    expect(h.changes).toEqual([["node-b", "10.0.0.2", 7001], ["node-b", "10.0.0.9", 7001]]);
    await h.time.advance(refreshMs * 3);
    expect(h.changes.length).toBe(2);
    expect(member(h)).toMatchObject({ address: "10.0.0.9", changes: 1, lastChangeAt: changedAt });
    expect(h.resolver.counters().addressChanges).toBe(1);
    const warning = h.logs.find((line) => line.message.startsWith("member address changed"));
    expect(warning?.fields).toMatchObject({ member: "node-b", from: "10.0.0.2", to: "10.0.0.9" });
    h.resolver.stop();
  });

  test("a failure keeps the last good address and is counted; a success resets the run", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    const goodAt = h.time.now();
    h.dns.answers.set("node-b.keel.test", new DnsLookupError("timeout", "dns down"));
    await h.time.advance(refreshMs * 3);
    expect(member(h)).toMatchObject({
      address: "10.0.0.2",
      consecutiveFailures: 3,
      totalFailures: 3,
      lastError: "dns down",
      lastErrorAt: h.time.now(),
      lastSuccessAt: goodAt,
    });
    expect(h.changes.length).toBe(1);
    expect(h.resolver.counters()).toEqual({ lookups: 4, failures: 3, addressChanges: 0 });
    // One warning for the run, not one per failure.
    expect(h.logs.filter((line) => line.level === "warn").length).toBe(1);

    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.time.advance(refreshMs);
    expect(member(h)).toMatchObject({
      address: "10.0.0.2",
      consecutiveFailures: 0,
      totalFailures: 3,
      lastSuccessAt: h.time.now(),
    });
    expect(h.changes.length).toBe(1);
    expect(h.logs.some((line) => line.message === "member name resolves again")).toBe(true);

    // Recovery onto a new address publishes it.
    h.dns.set("node-b.keel.test", ["10.0.0.8"]);
    await h.time.advance(refreshMs);
    expect(h.changes.at(-1)).toEqual(["node-b", "10.0.0.8", 7001]);
    h.resolver.stop();
  });

  test("a name that never resolved publishes nothing until it does", async () => {
    const h = harness();
    await h.resolver.start();
    expect(h.changes).toEqual([]);
    expect(member(h)).toMatchObject({ address: null, consecutiveFailures: 1 });
    expect(member(h).lastError).toContain("no such name");
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.time.advance(refreshMs);
    expect(h.changes).toEqual([["node-b", "10.0.0.2", 7001]]);
    h.resolver.stop();
  });

  test("an empty or non-IP answer is a failure, not an address", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    h.dns.set("node-b.keel.test", []);
    await h.time.advance(refreshMs);
    h.dns.set("node-b.keel.test", ["not-an-ip"]);
    await h.time.advance(refreshMs);
    expect(member(h)).toMatchObject({ address: "10.0.0.2", consecutiveFailures: 2 });
    expect(member(h).lastError).toContain("returned no IP address");
    h.resolver.stop();
  });

  test("several A records: the sorted first is chosen, and kept while it is still listed", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.10", "10.0.0.9", "10.0.0.5"]);
    await h.resolver.start();
    expect(h.changes).toEqual([["node-b", "10.0.0.5", 7001]]); // numeric order, not text
    // Round-robin reordering and additions do not move the link.
    for (
      const set of [["10.0.0.9", "10.0.0.5"], ["10.0.0.5", "10.0.0.1"], ["10.0.0.7", "10.0.0.5"]]
    ) {
      h.dns.set("node-b.keel.test", set);
      await h.time.advance(refreshMs);
    }
    expect(h.changes.length).toBe(1);
    expect(member(h).addresses).toEqual(["10.0.0.5", "10.0.0.7"]);
    // Once it is gone, the sorted first of the new set is taken.
    h.dns.set("node-b.keel.test", ["10.0.0.7", "10.0.0.4"]);
    await h.time.advance(refreshMs);
    expect(h.changes.at(-1)).toEqual(["node-b", "10.0.0.4", 7001]);
    expect(member(h).changes).toBe(1);
    h.resolver.stop();
  });

  test("one lookup in flight per member; a hung lookup times out and is not stacked", async () => {
    const h = harness({ lookupTimeoutMs: 2500 });
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    h.dns.answers.set("node-b.keel.test", "hang");
    await h.time.advance(refreshMs); // lookup 2 starts and hangs
    expect(member(h).inFlight).toBe(true);
    await h.time.advance(refreshMs * 2); // two refreshes find it busy
    expect(h.dns.calls.length).toBe(2);
    await h.time.advance(500); // 2500 ms after it started: timed out
    expect(member(h)).toMatchObject({
      address: "10.0.0.2",
      consecutiveFailures: 1,
      inFlight: true,
    });
    expect(member(h).lastError).toBe(`Lookup of "node-b.keel.test" timed out after 2500 ms`);
    expect(h.dns.signals[1]?.aborted).toBe(true);
    // Still busy until the lookup itself ends: no second one is stacked on it.
    await h.time.advance(refreshMs * 3);
    expect(h.dns.calls.length).toBe(2);
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    h.dns.releaseAll();
    await h.time.advance(0);
    expect(member(h).inFlight).toBe(false);
    expect(member(h).consecutiveFailures).toBe(1); // the late outcome is ignored
    await h.time.advance(refreshMs);
    expect(h.dns.calls.length).toBe(3);
    expect(member(h).consecutiveFailures).toBe(0);
    h.resolver.stop();
  });

  test("the default lookup timeout is bounded", () => {
    expect(lookupTimeoutMsDefault).toBeLessThanOrEqual(5000);
  });

  test("stop cancels the refresh timer and drops results in flight", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    expect(h.time.pendingTimers).toBe(1);
    h.resolver.stop();
    expect(h.time.pendingTimers).toBe(0);
    h.dns.set("node-b.keel.test", ["10.0.0.9"]);
    await h.time.advance(refreshMs * 5);
    expect(h.dns.calls.length).toBe(1);
    expect(h.changes.length).toBe(1);
  });

  test("members given as IPs alone arm no timer and look nothing up", async () => {
    const h = harness({ members: [{ name: "node-c", host: "10.0.0.3", port: 7002 }] });
    await h.resolver.start();
    expect(h.time.pendingTimers).toBe(0);
    expect(h.dns.calls).toEqual([]);
    expect(h.changes).toEqual([]);
  });

  test("a TTL above the detection timeout is warned about once, at the first resolution", async () => {
    const h = harness({ detectionTimeoutMs: 1000, refreshMs: 200 });
    h.dns.set("node-b.keel.test", ["10.0.0.2"], 30);
    await h.resolver.start();
    await h.time.advance(200 * 5);
    const warnings = h.logs.filter((line) => line.message.includes("TTL of 30s exceeds"));
    expect(warnings.length).toBe(1);
    expect(warnings[0]!.fields).toMatchObject({ member: "node-b", ttlSeconds: 30 });
    h.resolver.stop();
  });

  test("at the defaults (refresh 5s, election timeout 1s) a 1s TTL is not warned about", async () => {
    const h = harness({ detectionTimeoutMs: 1000, refreshMs: 5000 });
    h.dns.set("node-b.keel.test", ["10.0.0.2"], 1);
    await h.resolver.start();
    expect(h.logs.filter((line) => line.level === "warn")).toEqual([]);
    // What the delay is, said once, as information.
    expect(h.logs.filter((line) => line.message.includes("peers reach a replaced host")))
      .toMatchObject([{
        level: "info",
        message: 'DNS record of member "node-b": peers reach a replaced host within 6s of its ' +
          "record being repointed (resolver.refresh 5s + TTL 1s)",
      }]);
    h.resolver.stop();
  });

  test("an error thrown by onChange is logged, and resolution carries on", async () => {
    const h = harness({
      onChange: () => {
        throw new RangeError(`Unknown peer "node-b"`);
      },
    });
    h.dns.set("node-b.keel.test", ["10.0.0.2"]);
    await h.resolver.start();
    expect(h.logs.some((line) => line.level === "error")).toBe(true);
    expect(member(h).address).toBe("10.0.0.2");
    h.resolver.stop();
  });

  test("the resolver's metrics render per member", async () => {
    const h = harness();
    h.dns.set("node-b.keel.test", ["10.0.0.2"], 5);
    const registry = new Registry();
    registerResolverMetrics(registry, h.resolver);
    await h.resolver.start();
    const text = registry.render();
    expect(text).toContain(`keel_dns_lookups_total{member="node-b"} 1`);
    expect(text).toContain(`keel_dns_lookup_failures_total{member="node-b"} 0`);
    expect(text).toContain(`keel_dns_record_ttl_seconds{member="node-b"} 5`);
    expect(text).not.toContain(`member="node-c"`);
    h.resolver.stop();
  });
});

describe("ttlWarnings", () => {
  test("a TTL above the detection timeout", () => {
    const warnings = ttlWarnings(30, 5000, 1000);
    expect(warnings.map((w) => w.kind)).toEqual(["ttl"]);
    expect(warnings[0]!.message).toBe(
      "TTL of 30s exceeds the failure-detection timeout (raft.election_timeout) of 1s; " +
        "resolvers may hand out the old address that long after the name is repointed",
    );
  });

  test("refresh plus TTL above resolver.replacement_delay_max, when it is set", () => {
    const warnings = ttlWarnings(1, 500, 1000, 1200);
    expect(warnings.map((w) => w.kind)).toEqual(["replacement-delay"]);
    expect(warnings[0]!.message).toContain("up to 1.5s");
    expect(ttlWarnings(1, 500, 1000, 1500)).toEqual([]);
  });

  test("no warning when refresh plus TTL fits", () => {
    expect(ttlWarnings(0, 500, 1000)).toEqual([]);
    expect(ttlWarnings(1, 0, 1000)).toEqual([]);
    expect(ttlWarnings(null, 500, 1000)).toEqual([]);
  });

  test("the defaults (refresh 5s, election timeout 1s) warn of nothing: the refresh is chosen", () => {
    // Issue 12 defect 6: refresh plus any TTL always exceeded the 1s election timeout.
    expect(ttlWarnings(null, 5000, 1000)).toEqual([]);
    expect(ttlWarnings(1, 5000, 1000)).toEqual([]);
  });
});

function config(overrides: Partial<Config["resolver"]> = {}): Config {
  const member = (name: string, host: string, index: number) => ({
    name,
    peer: { host, port: 7070 + index },
    http: { host: "127.0.0.1", port: 7080 + index },
  });
  return {
    clusterName: "test",
    members: [
      member("node-a", "127.0.0.11", 0),
      member("node-b", "node-b.keel.test", 1),
      member("node-c", "node-c.keel.test", 2),
      member("node-d", "NODE-B.keel.test", 3),
    ],
    storage: { dir: "./data", scrubIntervalMs: 3_600_000, scrubBytesPerSecond: 8_388_608 },
    raft: { tickMs: 10, heartbeatIntervalMs: 100, electionTimeoutMs: 1000, snapshotEntries: 100 },
    resolver: { refreshMs: 500, servers: ["127.0.0.61:5353"], ...overrides },
    http: { bodyBytesMax: 1024, requestTimeoutMs: 1000 },
    security: { secretFile: undefined, adminToken: undefined },
    log: { level: "info", format: "json" },
  };
}

describe("checkDnsTtls", () => {
  test("warns about unresolvable names and long TTLs, once per name", async () => {
    const dns = new ScriptedLookup();
    dns.set("node-b.keel.test", ["10.0.0.2"], 30);
    const problems = await checkDnsTtls(config(), { lookup: dns.lookup });
    expect(dns.calls.sort()).toEqual(["node-b.keel.test", "node-c.keel.test"]);
    expect(problems).toEqual([
      {
        path: "members[1].peer",
        message: `"node-b.keel.test": TTL of 30s exceeds the failure-detection timeout ` +
          `(raft.election_timeout) of 1s; resolvers may hand out the old address that long ` +
          `after the name is repointed`,
      },
      {
        path: "members[2].peer",
        message: `"node-c.keel.test" does not resolve through 127.0.0.61:5353: ` +
          `no such name "node-c.keel.test"`,
      },
    ]);
  });

  test("a good record gives no warning", async () => {
    const dns = new ScriptedLookup();
    dns.set("node-b.keel.test", ["10.0.0.2"], 0);
    dns.set("node-c.keel.test", ["10.0.0.3"], 0);
    expect(await checkDnsTtls(config(), { lookup: dns.lookup })).toEqual([]);
  });

  test("a lookup that hangs is reported after the timeout", async () => {
    const dns = new ScriptedLookup();
    dns.answers.set("node-b.keel.test", "hang");
    dns.set("node-c.keel.test", ["10.0.0.3"], 0);
    const problems = await checkDnsTtls(config(), { lookup: dns.lookup, timeoutMs: 50 });
    dns.releaseAll();
    expect(problems).toEqual([{
      path: "members[1].peer",
      message: `"node-b.keel.test" does not resolve through 127.0.0.61:5353: no answer within 50ms`,
    }]);
  });
});
