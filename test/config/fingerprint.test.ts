import { describe, expect, test } from "bun:test";
import {
  differingFields,
  fingerprint,
  fingerprintFields,
  fingerprintLength,
} from "../../src/config/fingerprint.ts";
import { parseConfigText } from "../../src/config/parse.ts";
import type { Config } from "../../src/config/types.ts";

function config(text: string): Config {
  const result = parseConfigText(text, "test.yaml");
  if (result.config === undefined) {
    throw new Error(`Expected a valid config: ${JSON.stringify(result.problems)}`);
  }
  return result.config;
}

const base = `
cluster_name: local
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

describe("fingerprint", () => {
  test("is 16 hex characters and the same for the same file", () => {
    const first = fingerprint(config(base));
    expect(first).toMatch(/^[0-9a-f]{16}$/);
    expect(first).toHaveLength(fingerprintLength);
    expect(fingerprint(config(base))).toBe(first);
  });

  test("does not depend on how a value is spelled or on host-local settings", () => {
    const spelledDifferently = `${base}
storage:
  dir: /elsewhere
raft:
  tick: 10000us
  heartbeat_interval: 0.1s
  election_timeout: 1000ms
resolver:
  refresh: 1s
http:
  body_bytes_max: 64KiB
  request_timeout: 1s
security:
  secret_file: /etc/keel/secret
log:
  level: debug
  format: text
`;
    expect(fingerprint(config(spelledDifferently))).toBe(fingerprint(config(base)));
  });

  test("changes with the cluster name, the members and the raft timing", () => {
    const original = fingerprint(config(base));
    const variants = [
      base.replace("cluster_name: local", "cluster_name: other"),
      base.replace("name: node-c", "name: node-d"),
      base.replace("127.0.0.13:7070", "127.0.0.14:7070"),
      base.replace("127.0.0.13:7080", "127.0.0.13:7081"),
      `${base}  - name: node-d\n    peer: 127.0.0.14:7070\n    http: 127.0.0.14:7080\n`,
      `${base}raft:\n  tick: 5ms\n`,
      `${base}raft:\n  heartbeat_interval: 200ms\n`,
      `${base}raft:\n  election_timeout: 2s\n`,
      `${base}raft:\n  snapshot_entries: 20000\n`,
    ];
    const fingerprints = variants.map((text) => fingerprint(config(text)));
    for (const other of fingerprints) expect(other).not.toBe(original);
    expect(new Set(fingerprints).size).toBe(variants.length);
  });

  test("changes when the members are listed in another order", () => {
    const [header = "", memberA = "", memberB = "", memberC = ""] = base.split(/(?=\n {2}- name)/);
    const reordered = [header, memberB, memberA, memberC].join("");
    expect(config(reordered).members.map((member) => member.name)).toEqual([
      "node-b",
      "node-a",
      "node-c",
    ]);
    expect(fingerprint(config(reordered))).not.toBe(fingerprint(config(base)));
  });
});

describe("fingerprintFields", () => {
  test("names every cluster-defining field by its path in the file", () => {
    const fields = fingerprintFields(config(base));
    expect(Object.keys(fields).sort()).toEqual([
      "cluster_name",
      "members",
      "raft.election_timeout",
      "raft.heartbeat_interval",
      "raft.snapshot_entries",
      "raft.tick",
    ]);
    expect(fields["cluster_name"]).toBe("local");
    expect(fields["raft.election_timeout"]).toBe("1000ms");
    expect(fields["members"]).toMatch(/^sha256:[0-9a-f]{16}$/);
  });
});

describe("differingFields", () => {
  test("names the fields whose values differ, sorted", () => {
    const ours = fingerprintFields(config(base));
    const theirs = fingerprintFields(
      config(`${base.replace("name: node-c", "name: node-z")}raft:\n  election_timeout: 2s\n`),
    );
    expect(differingFields(ours, theirs)).toEqual(["members", "raft.election_timeout"]);
    expect(differingFields(theirs, ours)).toEqual(["members", "raft.election_timeout"]);
  });

  test("is empty for equal fields", () => {
    const fields = fingerprintFields(config(base));
    expect(differingFields(fields, { ...fields })).toEqual([]);
  });

  test("names fields that only one side has", () => {
    expect(differingFields({ a: "1", b: "2", d: "4" }, { b: "2", c: "3", d: "5" })).toEqual([
      "a",
      "c",
      "d",
    ]);
  });

  test("counts only own fields of a record decoded from a peer", () => {
    const fromPeer = JSON.parse('{"__proto__": "x", "cluster_name": "local"}') as Record<
      string,
      string
    >;
    expect(differingFields({ cluster_name: "local" }, fromPeer)).toEqual(["__proto__"]);
    expect(differingFields({ toString: "x" }, {})).toEqual(["toString"]);
  });
});
