import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  configDefaults,
  ConfigError,
  configFileBytesMax,
  type ConfigResult,
  formatEndpoint,
  formatProblems,
  loadConfig,
  memberByName,
  parseConfigText,
  validateConfig,
} from "../../src/config/parse.ts";

const testdata = join(import.meta.dir, "testdata");
const example = join(import.meta.dir, "..", "..", "examples", "local-3.yaml");

const threeMembers = `
cluster_name: test
members:
  - name: node-a
    peer: 127.0.0.11:7070
    http: 127.0.0.11:7080
  - name: node-b
    peer: 127.0.0.12:7070
    http: 127.0.0.12:7080
  - name: node-c
    peer: 127.0.0.13:7070
    http: 127.0.0.13:7080
`;

function parse(text: string): ConfigResult {
  return parseConfigText(text, "test.yaml");
}

function paths(result: ConfigResult): string[] {
  return result.problems.map((problem) => problem.path);
}

function messageAt(result: ConfigResult, path: string): string | undefined {
  return result.problems.find((problem) => problem.path === path)?.message;
}

describe("a valid file", () => {
  test("the example local-3.yaml parses with no problems", () => {
    const result = loadConfig(example);
    expect(result.problems).toEqual([]);
    expect(result.config).toEqual({
      clusterName: "local",
      members: [
        {
          name: "node-a",
          peer: { host: "127.0.0.11", port: 7070 },
          http: { host: "127.0.0.11", port: 7080 },
        },
        {
          name: "node-b",
          peer: { host: "127.0.0.12", port: 7070 },
          http: { host: "127.0.0.12", port: 7080 },
        },
        {
          name: "node-c",
          peer: { host: "127.0.0.13", port: 7070 },
          http: { host: "127.0.0.13", port: 7080 },
        },
      ],
      storage: { dir: "./data", scrubIntervalMs: 3_600_000, scrubBytesPerSecond: 8_388_608 },
      raft: {
        tickMs: 10,
        heartbeatIntervalMs: 100,
        electionTimeoutMs: 1000,
        snapshotEntries: 50000,
        catchupBytesPerSecond: 128 * 1024 * 1024,
      },
      resolver: { refreshMs: 5000, servers: [] },
      http: { bodyBytesMax: 1024 * 1024, requestTimeoutMs: 5000 },
      security: { secretFile: undefined, adminToken: "local-only-admin-token" },
      log: { level: "info", format: "text" },
    });
  });

  test("a file with only the required fields gets every default", () => {
    const result = parse(threeMembers);
    expect(result.problems).toEqual([]);
    const config = result.config;
    expect(config?.storage).toEqual({
      dir: configDefaults.storageDir,
      scrubIntervalMs: configDefaults.scrubIntervalMs,
      scrubBytesPerSecond: configDefaults.scrubBytesPerSecond,
    });
    expect(config?.storage.dir).toBe("./keel-data");
    expect(config?.raft).toEqual({
      tickMs: 10,
      heartbeatIntervalMs: 100,
      electionTimeoutMs: 1000,
      snapshotEntries: 50000,
      catchupBytesPerSecond: 128 * 1024 * 1024,
    });
    expect(config?.resolver).toEqual({ refreshMs: 5000, servers: [] });
    expect(config?.http).toEqual({ bodyBytesMax: 1048576, requestTimeoutMs: 5000 });
    expect(config?.security).toEqual({ secretFile: undefined, adminToken: undefined });
    expect(config?.log).toEqual({ level: "info", format: "json" });
  });

  test("every optional setting is read", () => {
    const result = parse(`${threeMembers}
storage:
  dir: /var/lib/keel
raft:
  tick: 5ms
  heartbeat_interval: 50ms
  election_timeout: 1.5s
  snapshot_entries: 500
resolver:
  refresh: 2s
  servers: ["10.0.0.53:53", "[2001:DB8::53]:5353"]
http:
  body_bytes_max: 512KiB
  request_timeout: 250ms
security:
  secret_file: /etc/keel/secret
  admin_token: "s3cret-token"
log:
  level: debug
  format: text
`);
    expect(result.problems).toEqual([]);
    expect(result.config).toMatchObject({
      storage: { dir: "/var/lib/keel", scrubIntervalMs: 3_600_000, scrubBytesPerSecond: 8_388_608 },
      raft: { tickMs: 5, heartbeatIntervalMs: 50, electionTimeoutMs: 1500, snapshotEntries: 500 },
      resolver: { refreshMs: 2000, servers: ["10.0.0.53:53", "[2001:db8::53]:5353"] },
      http: { bodyBytesMax: 512 * 1024, requestTimeoutMs: 250 },
      security: { secretFile: "/etc/keel/secret", adminToken: "s3cret-token" },
      log: { level: "debug", format: "text" },
    });
    expect(result.warnings).toEqual([]);
  });

  test("an empty section reads as absent and gets defaults", () => {
    const result = parse(`${threeMembers}\nraft:\nstorage:\n  dir:\n`);
    expect(result.problems).toEqual([]);
    expect(result.config?.raft.electionTimeoutMs).toBe(1000);
    expect(result.config?.storage.dir).toBe("./keel-data");
  });

  test("body_bytes_max may be a plain number of bytes", () => {
    const result = parse(`${threeMembers}\nhttp:\n  body_bytes_max: 65536\n`);
    expect(result.problems).toEqual([]);
    expect(result.config?.http.bodyBytesMax).toBe(65536);
  });

  test("DNS names are lowercased and IPv6 hosts are kept without brackets", () => {
    const result = parse(`
cluster_name: names
members:
  - name: node-a
    peer: Node-A.Example.COM:7070
    http: "[::1]:7080"
`);
    expect(result.problems).toEqual([]);
    const member = result.config?.members[0];
    expect(member?.peer).toEqual({ host: "node-a.example.com", port: 7070 });
    expect(member?.http).toEqual({ host: "::1", port: 7080 });
    expect(member?.http === undefined ? "" : formatEndpoint(member.http)).toBe("[::1]:7080");
  });
});

describe("every problem is reported at once", () => {
  test("a file with several mistakes names each one by path", () => {
    const result = loadConfig(join(testdata, "several-mistakes.yaml"));
    expect(result.config).toBeUndefined();
    expect(paths(result)).toEqual([
      "cluster_name",
      "members[1].name",
      "members[2].htp",
      "members[2].peer",
      "members[2].http",
      "storage.dri",
      "raft.election_timeout",
      "log.level",
    ]);
    expect(messageAt(result, "members[1].name")).toBe('duplicate name "node-a"');
    expect(messageAt(result, "members[2].peer")).toBe("port must be 1-65535");
    expect(messageAt(result, "members[2].http")).toBe(
      'is required with "peer" (give both, or neither for a member found by gossip)',
    );
    expect(messageAt(result, "storage.dri")).toBe('unknown key (did you mean "dir"?)');
    expect(messageAt(result, "raft.election_timeout")).toBe(
      "must be at least 5 times raft.heartbeat_interval (1.5s)",
    );
  });

  test("values of the wrong type are each reported", () => {
    const result = loadConfig(join(testdata, "wrong-types.yaml"));
    expect(result.config).toBeUndefined();
    expect(paths(result)).toEqual([
      "cluster_name",
      "members[0].name",
      "members[0].peer",
      "members[0].http",
      "members[1]",
      "storage",
      "raft.tick",
      "raft.snapshot_entries",
      "resolver.servers",
      "http.body_bytes_max",
      "http.request_timeout",
      "security.admin_token",
    ]);
    expect(messageAt(result, "members[1]")).toBe("must be a mapping, got a string");
    expect(messageAt(result, "raft.tick")).toBe(
      'must be a duration with a unit such as "100ms" or "5s", got 10',
    );
  });

  test("a secret of the wrong type is not echoed in its problem", () => {
    const result = loadConfig(join(testdata, "wrong-types.yaml"));
    expect(messageAt(result, "security.admin_token")).toBe("must be a string, got a number");
    expect(formatProblems(result.problems, "f")).not.toContain("12345");
  });

  test("malformed, out-of-range and shared endpoints are reported", () => {
    const result = loadConfig(join(testdata, "bad-endpoints.yaml"));
    expect(result.config).toBeUndefined();
    expect(result.problems).toEqual([
      {
        path: "members[0].http",
        message: 'endpoint "127.0.0.11:7070" is already used by members[0].peer',
      },
      { path: "members[1].peer", message: 'host "127.0.0.300" is not a valid IPv4 address' },
      {
        path: "members[1].http",
        message: 'an IPv6 address must be in brackets, such as "[::1]:7070", got "::1:7080"',
      },
      {
        path: "members[2].peer",
        message: 'host "bad_host.example" is not a valid DNS name or IP address',
      },
      { path: "members[2].http", message: 'must be "host:port", got "node-c.example"' },
      { path: "members[3].peer", message: "port must be 1-65535" },
      {
        path: "members[4].http",
        message: 'endpoint "node-e.example:7070" is already used by members[4].peer',
      },
      {
        path: "resolver.servers[1]",
        message: 'must be an IP address and port, got "dns.example:53"',
      },
      { path: "resolver.servers[2]", message: 'must be "host:port", got "10.0.0.54"' },
    ]);
  });

  test("two members may not share a peer or an http endpoint", () => {
    const result = parse(`
cluster_name: shared
members:
  - name: node-a
    peer: host-a:7070
    http: host-a:7080
  - name: node-b
    peer: HOST-A:7070
    http: host-a:7080
  - name: node-c
    peer: host-c:7070
    http: host-c:7080
`);
    expect(result.problems).toEqual([
      {
        path: "members[1].peer",
        message: 'endpoint "host-a:7070" is already used by members[0].peer',
      },
      {
        path: "members[1].http",
        message: 'endpoint "host-a:7080" is already used by members[0].http',
      },
    ]);
  });

  test("missing required fields are each reported", () => {
    const result = loadConfig(join(testdata, "missing-required.yaml"));
    expect(paths(result)).toEqual([
      "cluster_name",
      "members[0].peer",
      "members[1].name",
    ]);
    expect(result.problems.every((problem) => problem.message.startsWith("is required")))
      .toBe(true);
  });

  test("raft timings that do not fit together are reported", () => {
    const result = loadConfig(join(testdata, "raft-timing.yaml"));
    expect(result.problems).toEqual([
      { path: "raft.snapshot_entries", message: "must be from 10 to 100000000, got 5" },
      { path: "raft.heartbeat_interval", message: "must be a multiple of raft.tick (30ms)" },
      { path: "raft.election_timeout", message: "must be a multiple of raft.tick (30ms)" },
      { path: "resolver.refresh", message: 'must be from 100ms to 1h, got "10ms"' },
    ]);
  });

  test("resolver.replacement_delay_max is read, and must leave room for resolver.refresh", () => {
    const ok = parse(`${threeMembers}resolver:\n  refresh: 2s\n  replacement_delay_max: 10s\n`);
    expect(ok.problems).toEqual([]);
    expect(ok.config?.resolver).toEqual({
      refreshMs: 2000,
      servers: [],
      replacementDelayMaxMs: 10_000,
    });
    const short = parse(`${threeMembers}resolver:\n  replacement_delay_max: 3s\n`);
    expect(short.problems).toEqual([{
      path: "resolver.replacement_delay_max",
      message: "must be at least resolver.refresh (5s): a replaced host is found within " +
        "one refresh plus the record's TTL",
    }]);
  });

  test("a heartbeat shorter than a tick is reported", () => {
    const result = parse(`${threeMembers}raft:\n  tick: 50ms\n  heartbeat_interval: 20ms\n`);
    expect(result.problems).toEqual([
      { path: "raft.heartbeat_interval", message: "must be at least raft.tick (50ms)" },
    ]);
  });

  test("a member list that is empty or too long is reported", () => {
    expect(parse("cluster_name: x\nmembers: []\n").problems).toEqual([
      { path: "members", message: "must list 1 to 9 members, got 0" },
    ]);
    const ten = Array.from(
      { length: 10 },
      (_, index) => `  - {name: n${index}, peer: "h${index}:1", http: "h${index}:2"}`,
    ).join("\n");
    expect(parse(`cluster_name: x\nmembers:\n${ten}\n`).problems).toEqual([
      { path: "members", message: "must list 1 to 9 members, got 10" },
    ]);
  });

  test("unknown keys are reported at every level", () => {
    const result = parse(`${threeMembers}  - name: node-d
    peer: 127.0.0.14:7070
    http: 127.0.0.14:7080
    role: voter
clustername: oops
logging:
  level: info
raft:
  election: 2s
`);
    expect(result.problems).toEqual([
      { path: "clustername", message: 'unknown key (did you mean "cluster_name"?)' },
      { path: "logging", message: "unknown key" },
      { path: "members[3].role", message: "unknown key" },
      { path: "raft.election", message: "unknown key" },
    ]);
  });
});

describe("problems with the file as a whole", () => {
  // Inline rather than in testdata/, where deno fmt would refuse to format it.
  test("a YAML syntax error is one problem naming the line", () => {
    const result = parse(
      "cluster_name: local\nmembers:\n  - name: node-a\n    peer: 127.0.0.11:7070\n" +
        "   http: 127.0.0.11:7080\n",
    );
    expect(result.config).toBeUndefined();
    expect(result.problems).toEqual([
      { path: "(file)", message: "YAML syntax error near line 5: Unexpected token" },
    ]);
  });

  test("a top level that is not a mapping is reported", () => {
    expect(loadConfig(join(testdata, "top-level-list.yaml")).problems).toEqual([
      { path: "(file)", message: "the top level must be a mapping of settings, got a list" },
    ]);
  });

  test("a file with no settings is reported", () => {
    expect(loadConfig(join(testdata, "empty.yaml")).problems).toEqual([
      { path: "(file)", message: "file is empty: it holds no settings" },
    ]);
  });

  test("a missing file is a problem, not an exception", () => {
    const result = loadConfig(join(testdata, "no-such-file.yaml"));
    expect(result.config).toBeUndefined();
    expect(result.problems).toEqual([
      { path: "(file)", message: "cannot read file: no such file" },
    ]);
  });

  test("a directory is a problem, not an exception", () => {
    expect(loadConfig(testdata).problems).toEqual([
      { path: "(file)", message: "cannot read file: is a directory" },
    ]);
  });

  test("text over the size limit is refused before parsing", () => {
    const result = parse(`# ${"x".repeat(configFileBytesMax)}\n`);
    expect(paths(result)).toEqual(["(file)"]);
  });
});

describe("warnings", () => {
  test("an even member count is a warning, not a problem", () => {
    const result = parse(`
cluster_name: even
members:
  - { name: a, peer: "a:1", http: "a:2" }
  - { name: b, peer: "b:1", http: "b:2" }
security:
  secret_file: /etc/keel/secret
`);
    expect(result.problems).toEqual([]);
    expect(result.config).toBeDefined();
    expect(result.warnings).toEqual([
      { path: "members", message: "2 members tolerate no more failures than 1; use an odd number" },
    ]);
  });

  test("no security.secret_file warns of dev mode", () => {
    const result = parse(threeMembers);
    expect(result.warnings).toEqual([
      {
        path: "security.secret_file",
        message: "not set (nor security.secret_env): peers are not authenticated (dev mode)",
      },
    ]);
  });
});

describe("reporting", () => {
  test("formatProblems renders one problem per line after the file name", () => {
    const text = formatProblems(
      [
        { path: "members[2].peer", message: "port must be 1-65535" },
        { path: "(file)", message: "cannot read file: no such file" },
      ],
      "cluster.yaml",
    );
    expect(text).toBe(
      "cluster.yaml: members[2].peer: port must be 1-65535\n" +
        "cluster.yaml: cannot read file: no such file",
    );
  });

  test("ConfigError carries every problem and says them all", () => {
    const result = loadConfig(join(testdata, "several-mistakes.yaml"));
    const error = new ConfigError(result.problems, "cluster.yaml");
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("ConfigError");
    expect(error.problems).toHaveLength(8);
    expect(error.message.split("\n")).toHaveLength(8);
    expect(error.message).toContain("cluster.yaml: storage.dri: unknown key");
  });

  test("the result names its source", () => {
    expect(parse(threeMembers).source).toBe("test.yaml");
  });
});

describe("memberByName", () => {
  test("finds a member by its exact name", () => {
    const config = parse(threeMembers).config;
    if (config === undefined) throw new Error("Expected a valid config");
    expect(memberByName(config, "node-b")?.peer).toEqual({ host: "127.0.0.12", port: 7070 });
    expect(memberByName(config, "node-z")).toBeUndefined();
    expect(memberByName(config, "NODE-B")).toBeUndefined();
  });
});

describe("validateConfig", () => {
  test("checks a document that is already parsed", () => {
    const result = validateConfig({
      cluster_name: "direct",
      members: [{ name: "node-a", peer: "127.0.0.11:7070", http: "127.0.0.11:7080" }],
      raft: { tick: "1s", heartbeat_interval: "1s", election_timeout: "2s" },
    });
    expect(result.config).toBeUndefined();
    expect(paths({ source: "", ...result })).toEqual(["raft.election_timeout"]);
  });

  test("cuts a huge value short in its problem", () => {
    const huge = "x".repeat(100_000);
    const result = validateConfig({ cluster_name: huge, members: [], [huge]: 1 });
    const text = formatProblems(result.problems, "f");
    expect(text.length).toBeLessThan(1000);
    expect(paths({ source: "", ...result })).toHaveLength(3);
  });
});

test("storage.scrub_interval and scrub_rate: 0 turns scrubbing off, a week at most", () => {
  const base = [
    "cluster_name: x",
    "members:",
    "  - { name: a, peer: 127.0.0.1:1, http: 127.0.0.1:2 }",
    "  - { name: b, peer: 127.0.0.2:1, http: 127.0.0.2:2 }",
    "  - { name: c, peer: 127.0.0.3:1, http: 127.0.0.3:2 }",
    "storage:",
  ].join("\n");
  const off = parseConfigText(`${base}\n  scrub_interval: 0s\n  scrub_rate: 1MiB\n`, "test.yaml");
  expect(off.problems).toEqual([]);
  expect(off.config?.storage).toMatchObject({ scrubIntervalMs: 0, scrubBytesPerSecond: 1048576 });
  const daily = parseConfigText(`${base}\n  scrub_interval: 24h\n`, "test.yaml");
  expect(daily.config?.storage.scrubIntervalMs).toBe(86_400_000);
  const tooLong = parseConfigText(`${base}\n  scrub_interval: 200h\n`, "test.yaml");
  expect(tooLong.problems.map((problem) => problem.path)).toEqual(["storage.scrub_interval"]);
});
