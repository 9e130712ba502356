// judgeHello (src/transport/judge_hello.ts): the accepting side's decision on a Hello,
// checked as a value, and what its reply puts on the wire.

import { describe, expect, test } from "bun:test";
import { decodeFrame, encodeHelloReplyFrame } from "../../src/transport/codec.ts";
import {
  type Hello,
  helloAuth,
  type LocalHandshakeInfo,
  protocolVersion,
} from "../../src/transport/handshake.ts";
import { type HelloJudgeInput, judgeHello } from "../../src/transport/judge_hello.ts";

const secret = new TextEncoder().encode("correct horse battery staple 42");
const otherSecret = new TextEncoder().encode("a different secret, same length");
const challenge = new Uint8Array(16).fill(5);
const self = { name: "node-bravo", incarnation: "inc-bravo-7f3a9c" };
const local: LocalHandshakeInfo = {
  clusterName: "prod",
  fingerprint: "fp-1",
  fingerprintFields: { members: "m1" },
  memberNames: ["node-alpha", "node-bravo", "node-charlie"],
  selfName: "node-bravo",
};

function hello(overrides: Partial<Hello> = {}): Hello {
  return {
    protocolVersion,
    clusterName: "prod",
    fingerprint: "fp-1",
    fingerprintFields: { members: "m1" },
    name: "node-alpha",
    incarnation: "inc-alpha-1",
    nonce: new Uint8Array(16).fill(1),
    auth: new Uint8Array(0),
    hasState: true,
    recovering: false,
    term: 3,
    lastIndex: 9,
    ...overrides,
  };
}

/** signed returns the Hello with its auth made with `key` for the acceptor `to`. */
function signed(key: Uint8Array, fields: Partial<Hello> = {}, to = self.name): Hello {
  const unsigned = hello(fields);
  return { ...unsigned, auth: helloAuth(key, challenge, to, unsigned) };
}

function input(h: Hello, overrides: Partial<HelloJudgeInput> = {}): HelloJudgeInput {
  return {
    hello: h,
    challenge,
    secret,
    local,
    self,
    localState: { hasState: true, recovering: false, term: 7, lastIndex: 120 },
    checkPeer: () => null,
    remoteAddress: "10.0.0.9:40000",
    ...overrides,
  };
}

/** wire returns the reply as the dialler receives it: encoded, then decoded. */
function wire(h: HelloJudgeInput) {
  const verdict = judgeHello(h);
  const frame = encodeHelloReplyFrame({ ...verdict.reply, auth: new Uint8Array(32) });
  const text = new TextDecoder("latin1").decode(frame);
  const decoded = decodeFrame(frame.subarray(4));
  if (decoded.kind !== "helloReply") throw new Error(`unexpected ${decoded.kind}`);
  return { verdict, text, reply: decoded.reply };
}

describe("judgeHello", () => {
  test("a proven member with our config is accepted and told who we are", () => {
    const { verdict, reply } = wire(input(signed(secret)));
    expect(verdict.accepted).toBe(true);
    expect(reply).toMatchObject({
      accepted: true,
      name: "node-bravo",
      incarnation: "inc-bravo-7f3a9c",
      hasState: true,
    });
  });

  test("an unproven peer is refused with a generic reason: not our name, incarnation or state", () => {
    const cases: Array<[string, HelloJudgeInput]> = [
      ["another secret", input(signed(otherSecret))],
      ["no auth at all", input(hello())],
      ["a secret where we have none", input(signed(otherSecret), { secret: undefined })],
      [
        "a replayed proof (another challenge)",
        input(signed(secret), { challenge: new Uint8Array(16) }),
      ],
    ];
    for (const [what, judged] of cases) {
      const { verdict, text, reply } = wire(judged);
      expect(verdict.accepted, what).toBe(false);
      expect(reply.reason, what).toBe("bad handshake authentication");
      expect(reply.differingFields, what).toBeUndefined();
      expect([reply.hasState, reply.recovering, reply.fenced, reply.rolledBack], what)
        .toEqual([false, false, false, false]);
      // Nothing on the wire names this member.
      expect(text, what).not.toContain("bravo");
      expect(text, what).not.toContain("7f3a9c");
      // The acceptor's own log keeps the detail.
      expect(verdict.accepted ? "" : verdict.logMessage, what).toContain(
        "bad handshake authentication",
      );
    }
  });

  test("another protocol version is refused without our name, incarnation or hasState", () => {
    const { verdict, text, reply } = wire(input(hello({ protocolVersion: protocolVersion + 1 })));
    expect(verdict.accepted).toBe(false);
    expect(reply.reason).toBe(
      `Protocol version ${protocolVersion + 1} is not spoken here (this member speaks ` +
        `protocol ${protocolVersion}): the peer runs a newer keel: upgrade this member to a ` +
        `keel that speaks protocol ${protocolVersion + 1}, or run a keel that speaks protocol ` +
        `${protocolVersion} on the peer`,
    );
    expect(reply.hasState).toBe(false);
    expect(text).not.toContain("bravo");
    expect(text).not.toContain("7f3a9c");
  });

  test("a proven peer is told why in full: the config fields, or fenced", () => {
    const mismatch = wire(input(signed(secret, { fingerprint: "fp-2", fingerprintFields: {} })));
    expect(mismatch.reply).toMatchObject({
      accepted: false,
      name: "node-bravo",
      differingFields: ["members"],
      hasState: true,
    });
    const fenced = wire(input(signed(secret), {
      checkPeer: () => ({ kind: "fenced", reason: "incarnation inc-alpha-1 was replaced" }),
    }));
    expect(fenced.reply).toMatchObject({
      accepted: false,
      name: "node-bravo",
      incarnation: "inc-bravo-7f3a9c",
      fenced: true,
      reason: "incarnation inc-alpha-1 was replaced",
    });
  });

  test("a hello signed for another member is told it reached us (it holds the secret)", () => {
    const { verdict, reply } = wire(input(signed(secret, {}, "node-charlie")));
    expect(verdict.accepted).toBe(false);
    expect(reply.reason).toContain('the peer meant to reach "node-charlie"');
    expect(reply.name).toBe("node-bravo");
    expect(reply.hasState).toBe(false);
  });
});
