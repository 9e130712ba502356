import { describe, expect, test } from "bun:test";
import {
  checkHello,
  differingFields,
  type Hello,
  type LocalHandshakeInfo,
  protocolVersion,
} from "../../src/transport/handshake.ts";

const local: LocalHandshakeInfo = {
  clusterName: "prod",
  fingerprint: "fp-1",
  fingerprintFields: { members: "m1", "raft.electionTimeoutMs": "e1", clusterName: "c1" },
  memberNames: ["node-a", "node-b", "node-c"],
  selfName: "node-a",
};

const hello: Hello = {
  protocolVersion,
  clusterName: "prod",
  fingerprint: "fp-1",
  fingerprintFields: { ...local.fingerprintFields },
  name: "node-b",
  incarnation: "inc-1",
  nonce: new Uint8Array(16),
  auth: new Uint8Array(0),
  hasState: true,
  recovering: false,
  term: 7,
  lastIndex: 123456,
};

describe("checkHello", () => {
  test("accepts a configured member with the same cluster and fingerprint", () => {
    expect(checkHello(hello, local)).toEqual({ ok: true });
  });

  test("refuses another cluster name", () => {
    expect(checkHello({ ...hello, clusterName: "staging" }, local)).toEqual({
      ok: false,
      reason: 'Cluster name "staging" differs from ours ("prod")',
      differingFields: ["clusterName"],
    });
  });

  test("refuses a peer claiming our own name", () => {
    expect(checkHello({ ...hello, name: "node-a" }, local)).toMatchObject({
      ok: false,
      reason: 'Peer claims our own name "node-a"',
    });
  });

  test("refuses a name that is not a configured member", () => {
    expect(checkHello({ ...hello, name: "node-z" }, local)).toMatchObject({
      ok: false,
      reason: 'Name "node-z" is not a configured member',
    });
  });

  test("refuses another protocol version", () => {
    expect(checkHello({ ...hello, protocolVersion: protocolVersion + 1 }, local)).toMatchObject({
      ok: false,
    });
  });

  test("refuses a different fingerprint and names the differing fields", () => {
    const result = checkHello({
      ...hello,
      fingerprint: "fp-2",
      fingerprintFields: {
        members: "m1",
        "raft.electionTimeoutMs": "e2", // differs
        "resolver.refreshMs": "r1", // theirs only
        // clusterName: ours only
      },
    }, local);
    expect(result).toEqual({
      ok: false,
      reason: 'Config fingerprint "fp-2" differs from ours ("fp-1"); differing fields: ' +
        "clusterName, raft.electionTimeoutMs, resolver.refreshMs",
      differingFields: ["clusterName", "raft.electionTimeoutMs", "resolver.refreshMs"],
    });
  });

  test("a fingerprint mismatch with identical field maps says so", () => {
    const result = checkHello({ ...hello, fingerprint: "fp-9" }, local);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.differingFields).toEqual([]);
      expect(result.reason).toContain("no listed field differs");
    }
  });
});

describe("differingFields", () => {
  test("ignores inherited properties", () => {
    expect(differingFields({ toString: "x" }, {})).toEqual(["toString"]);
    expect(differingFields({}, {})).toEqual([]);
  });
});
