import { describe, expect, test } from "bun:test";
import { fingerprint, fingerprintFields } from "../../src/config/fingerprint.ts";
import { configDefaults, gossipAddressed, parseConfigText } from "../../src/config/parse.ts";

// The config of the name scheme: members listed by name alone, and the gossip: section.

const byName = `cluster_name: drill
members:
  - name: node-a
  - name: node-b
  - name: node-c
`;

function parse(text: string) {
  return parseConfigText(text, "cluster.yaml");
}

describe("members found by gossip", () => {
  test("members listed by name alone parse with the gossip defaults", () => {
    const result = parse(`${byName}gossip:\n  neighbours: ["node-a.db.example:7071"]\n`);
    expect(result.problems).toEqual([]);
    const config = result.config!;
    expect(config.members.map(gossipAddressed)).toEqual([true, true, true]);
    expect(config.members[0]).toEqual({ name: "node-a", peer: undefined, http: undefined });
    expect(config.gossip).toEqual({
      neighbours: [{ host: "node-a.db.example", port: 7071 }],
      port: configDefaults.gossipPort,
      intervalMs: 1000,
      fullIntervalMs: 5000,
      expiryMs: 15_000,
    });
  });

  test("every gossip setting is read", () => {
    const result = parse(`${byName}gossip:
  neighbours: ["127.0.0.101:7171", "[::1]:7171"]
  port: 7171
  interval: 500ms
  full_interval: 2s
  expiry: 10s
`);
    expect(result.problems).toEqual([]);
    expect(result.config?.gossip).toEqual({
      neighbours: [{ host: "127.0.0.101", port: 7171 }, { host: "::1", port: 7171 }],
      port: 7171,
      intervalMs: 500,
      fullIntervalMs: 2000,
      expiryMs: 10_000,
    });
  });

  test("members by name alone need at least one bootstrap neighbour", () => {
    expect(parse(byName).problems).toEqual([{
      path: "gossip.neighbours",
      message: 'must list at least one member\'s gossip endpoint "host:port": ' +
        "members listed by name alone are found by gossip",
    }]);
    expect(parse(`${byName}gossip:\n  neighbours: []\n`).problems.map((p) => p.path))
      .toEqual(["gossip.neighbours"]);
  });

  test("a member gives both endpoints or neither", () => {
    const result = parse(`cluster_name: drill
members:
  - name: node-a
    peer: 127.0.0.1:7070
  - name: node-b
    http: 127.0.0.2:7080
  - name: node-c
gossip:
  neighbours: ["127.0.0.1:7071"]
`);
    expect(result.problems).toEqual([
      {
        path: "members[0].http",
        message: 'is required with "peer" (give both, or neither for a member found by gossip)',
      },
      {
        path: "members[1].peer",
        message: 'is required with "http" (give both, or neither for a member found by gossip)',
      },
    ]);
  });

  test("bad gossip settings are each named by path", () => {
    const result = parse(`${byName}gossip:
  neighbours: ["no-port", 7, "300.0.0.1:7071"]
  port: 70000
  interval: 10ms
  full_interval: 200ms
  expiry: 300ms
  fanout: 3
`);
    expect(result.problems.map((p) => p.path)).toEqual([
      "gossip.fanout",
      "gossip.neighbours[0]",
      "gossip.neighbours[1]",
      "gossip.neighbours[2]",
      "gossip.port",
      "gossip.interval",
      "gossip.full_interval",
      "gossip.expiry",
    ]);
  });

  test("a cluster with endpoints everywhere needs no gossip section and gets none", () => {
    const result = parse(`cluster_name: plain
members:
  - name: node-a
    peer: 127.0.0.1:7070
    http: 127.0.0.1:7080
`);
    expect(result.problems).toEqual([]);
    expect(result.config !== undefined && "gossip" in result.config).toBe(false);
  });
});

describe("fingerprint", () => {
  const base = `${byName}gossip:\n  neighbours: ["127.0.0.101:7071"]\n`;

  test("names and being found by gossip count; gossip settings and addresses do not", () => {
    const one = parse(base).config!;
    const other = parse(`${byName}gossip:
  neighbours: ["127.0.0.102:7071", "127.0.0.103:7071"]
  port: 7171
  interval: 2s
  full_interval: 5s
  expiry: 30s
`).config!;
    expect(fingerprint(other)).toBe(fingerprint(one));
    expect(Object.keys(fingerprintFields(one))).not.toContain("gossip");
  });

  test("a member switching between gossip and endpoints changes the members field", () => {
    const gossip = parse(base).config!;
    const mixed = parse(base.replace(
      "  - name: node-c\n",
      "  - name: node-c\n    peer: 127.0.0.3:7070\n    http: 127.0.0.3:7080\n",
    )).config!;
    expect(fingerprintFields(mixed).members).not.toBe(fingerprintFields(gossip).members);
    const renamed = parse(base.replace("node-c", "node-d")).config!;
    expect(fingerprintFields(renamed).members).not.toBe(fingerprintFields(gossip).members);
  });
});
