import { describe, expect, test } from "bun:test";
import type { Entry, Message, MessageType } from "../../src/consensus/types.ts";
import { AssertionError } from "../../src/lib/assert.ts";
import { Prng } from "../../src/lib/prng.ts";
import {
  DecodeError,
  decodeFrame,
  decodeHello,
  decodeHelloReply,
  decodeMessage,
  encodeChallengeFrame,
  encodeHello,
  encodeHelloAuthInput,
  encodeHelloFrame,
  encodeHelloReply,
  encodeHelloReplyFrame,
  encodeMessage,
  encodeMessagesFrame,
  encodeReplyAuthInput,
  FrameKind,
  messageBytesUpperBound,
} from "../../src/transport/codec.ts";
import { frameHeaderBytes } from "../../src/transport/frame.ts";
import type { Hello, HelloReply } from "../../src/transport/handshake.ts";
import { entriesPerMessageMax } from "../../src/transport/limits.ts";

const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i);
const max = Number.MAX_SAFE_INTEGER;

const entries: Entry[] = [
  { index: 8, term: 3, kind: "noop", data: new Uint8Array(0) },
  { index: 9, term: 3, kind: "command", data: allBytes },
  { index: 10, term: 4, kind: "fence", data: new TextEncoder().encode('{"name":"node-b"}') },
];

/** One message of every type; `satisfies` makes a new MessageType fail to compile here. */
const samples = {
  requestVote: {
    type: "requestVote",
    term: 7,
    from: "node-a",
    to: "node-b",
    lastLogIndex: 1_000_000,
    lastLogTerm: 6,
    transfer: true,
  },
  preVote: {
    type: "preVote",
    term: max,
    from: "nœud-é",
    to: "节点",
    lastLogIndex: max,
    lastLogTerm: 0,
    transfer: false,
  },
  requestVoteResponse: {
    type: "requestVoteResponse",
    term: 7,
    from: "b",
    to: "a",
    granted: true,
  },
  preVoteResponse: { type: "preVoteResponse", term: 0, from: "b", to: "a", granted: false },
  appendEntries: {
    type: "appendEntries",
    term: 4,
    from: "node-a",
    to: "node-c",
    prevLogIndex: 7,
    prevLogTerm: 3,
    entries,
    commitIndex: 2 ** 40 + 3,
  },
  appendEntriesResponse: {
    type: "appendEntriesResponse",
    term: 4,
    from: "node-c",
    to: "node-a",
    success: false,
    matchIndex: 0,
    rejectHintIndex: 127,
    rejectHintTerm: 128,
  },
  heartbeat: {
    type: "heartbeat",
    term: 2 ** 31,
    from: "a",
    to: "b",
    commitIndex: 2 ** 32 - 1,
    context: 16383,
  },
  heartbeatResponse: {
    type: "heartbeatResponse",
    term: 2 ** 31 - 1,
    from: "b",
    to: "a",
    context: 16384,
    lastIndex: 2 ** 53 - 2,
  },
  installSnapshot: {
    type: "installSnapshot",
    term: 9,
    from: "a",
    to: "b",
    snapshot: { index: 500, term: 8, bytes: 70_000 },
    offset: 65536,
    data: allBytes,
    done: true,
  },
  installSnapshotResponse: {
    type: "installSnapshotResponse",
    term: 9,
    from: "b",
    to: "a",
    snapshotIndex: 500,
    offset: 65792,
    success: true,
    done: false,
  },
  timeoutNow: { type: "timeoutNow", term: 12, from: "a", to: "b" },
  readIndex: { type: "readIndex", term: 12, from: "b", to: "a", requestId: 99 },
  readIndexResponse: {
    type: "readIndexResponse",
    term: 12,
    from: "a",
    to: "b",
    requestId: 99,
    index: 0,
  },
} satisfies Record<MessageType, Message>;

const messages: Message[] = Object.values(samples);

const emptyAppend: Message = {
  type: "appendEntries",
  term: 1,
  from: "a",
  to: "b",
  prevLogIndex: 0,
  prevLogTerm: 0,
  entries: [],
  commitIndex: 0,
};

const hello: Hello = {
  protocolVersion: 1,
  clusterName: "prod-east",
  fingerprint: "f".repeat(64),
  fingerprintFields: { members: "h1", "raft.electionTimeoutMs": "h2", __proto__x: "h3" },
  name: "node-a",
  incarnation: "3b1f9c0e",
  nonce: allBytes.subarray(0, 16),
  auth: new Uint8Array(0),
  hasState: true,
  recovering: false,
  term: 7,
  lastIndex: 123456,
};

const refusal: HelloReply = {
  accepted: false,
  reason: "Config fingerprint differs; differing fields: members, ünïcode",
  differingFields: ["members", "ünïcode"],
  name: "node-b",
  incarnation: "77",
  hasState: true,
  recovering: false,
  fenced: true,
  rolledBack: false,
  auth: allBytes.subarray(100, 132),
};

const acceptance: HelloReply = {
  accepted: true,
  name: "node-b",
  incarnation: "77",
  hasState: false,
  recovering: true,
  fenced: false,
  rolledBack: true,
  auth: new Uint8Array(0),
};

/** expectDecodeError fails unless fn throws a DecodeError, and returns its message. */
function expectDecodeError(fn: () => unknown): string {
  try {
    fn();
  } catch (error: unknown) {
    if (error instanceof DecodeError) return error.message;
    throw error;
  }
  throw new Error("expected a DecodeError, but decoding succeeded");
}

function payloadOf(frame: Uint8Array): Uint8Array {
  return frame.subarray(frameHeaderBytes);
}

describe("codec round trips", () => {
  test("every message type round-trips through encodeMessage", () => {
    for (const key of Object.keys(samples) as MessageType[]) {
      expect(samples[key].type).toBe(key);
    }
    for (const message of [...messages, emptyAppend]) {
      expect(decodeMessage(encodeMessage(message))).toEqual(message);
    }
  });

  test("messages round-trip as single and batch frames", () => {
    const single = encodeMessagesFrame([samples.heartbeat]);
    expect(payloadOf(single)[0]).toBe(FrameKind.message);
    expect(decodeFrame(payloadOf(single))).toEqual({
      kind: "messages",
      messages: [samples.heartbeat],
    });
    const batch = encodeMessagesFrame([...messages, emptyAppend]);
    expect(payloadOf(batch)[0]).toBe(FrameKind.batch);
    expect(new DataView(batch.buffer, batch.byteOffset).getUint32(0)).toBe(
      batch.byteLength - frameHeaderBytes,
    );
    expect(decodeFrame(payloadOf(batch))).toEqual({
      kind: "messages",
      messages: [...messages, emptyAppend],
    });
  });

  test("decoded entry data is the exact bytes sent", () => {
    const decoded = decodeMessage(encodeMessage(samples.appendEntries));
    if (decoded.type !== "appendEntries") throw new Error("wrong type");
    expect(decoded.entries[1]?.data).toEqual(allBytes);
    expect(decoded.entries[0]?.data.byteLength).toBe(0);
  });

  test("small values encode compactly", () => {
    // tag, term, 2 names of 1 byte (1 + 1 each), commitIndex, context.
    expect(
      encodeMessage({ type: "heartbeat", term: 5, from: "a", to: "b", commitIndex: 9, context: 0 })
        .byteLength,
    )
      .toBe(8);
  });

  test("messageBytesUpperBound bounds the encoded size", () => {
    for (const message of [...messages, emptyAppend]) {
      expect(encodeMessage(message).byteLength).toBeLessThanOrEqual(
        messageBytesUpperBound(message),
      );
    }
  });

  test("hello and replies round-trip, alone and as frames", () => {
    expect(decodeHello(encodeHello(hello))).toEqual(hello);
    expect(decodeHelloReply(encodeHelloReply(refusal))).toEqual(refusal);
    expect(decodeHelloReply(encodeHelloReply(acceptance))).toEqual(acceptance);
    expect(decodeFrame(payloadOf(encodeHelloFrame(hello)))).toEqual({ kind: "hello", hello });
    expect(decodeFrame(payloadOf(encodeHelloReplyFrame(refusal)))).toEqual({
      kind: "helloReply",
      reply: refusal,
    });
    const challenge = { nonce: allBytes.subarray(16, 32) };
    expect(decodeFrame(payloadOf(encodeChallengeFrame(challenge)))).toEqual({
      kind: "challenge",
      challenge,
    });
  });

  test("a challenge nonce has exactly nonceBytes bytes, both ways", () => {
    expect(() => encodeChallengeFrame({ nonce: new Uint8Array(15) })).toThrow(AssertionError);
    for (const length of [0, 15, 17, 64]) {
      const payload = new Uint8Array([FrameKind.challenge, length, ...new Uint8Array(length)]);
      expect(expectDecodeError(() => decodeFrame(payload))).toBe(
        `Challenge nonce of ${length} bytes; it must be 16 bytes`,
      );
    }
    const tooLong = new Uint8Array([FrameKind.challenge, 65, ...new Uint8Array(65)]);
    expect(expectDecodeError(() => decodeFrame(tooLong))).toBe(
      "challenge nonce of 65 bytes exceeds the maximum of 64",
    );
  });

  test("auth inputs: labelled, bound to nonces and names, independent of field order", () => {
    const challenge = allBytes.subarray(16, 32);
    const input = encodeHelloAuthInput(challenge, "node-b", hello);
    expect(new TextDecoder().decode(input.subarray(1, 14))).toBe("keel-hello-v1");
    // The auth field itself is left out; fingerprint field order does not matter.
    expect(encodeHelloAuthInput(challenge, "node-b", { ...hello, auth: allBytes.subarray(0, 32) }))
      .toEqual(input);
    const reordered = Object.fromEntries(Object.entries(hello.fingerprintFields).reverse());
    expect(encodeHelloAuthInput(challenge, "node-b", { ...hello, fingerprintFields: reordered }))
      .toEqual(input);
    // Everything else changes it.
    for (
      const other of [
        encodeHelloAuthInput(allBytes.subarray(17, 33), "node-b", hello),
        encodeHelloAuthInput(challenge, "node-c", hello),
        encodeHelloAuthInput(challenge, "node-b", { ...hello, nonce: allBytes.subarray(1, 17) }),
        encodeHelloAuthInput(challenge, "node-b", { ...hello, term: 8 }),
        encodeHelloAuthInput(challenge, "node-b", { ...hello, recovering: true }),
      ]
    ) {
      expect(other).not.toEqual(input);
    }
    const reply = encodeReplyAuthInput(hello.nonce, challenge, refusal);
    expect(new TextDecoder().decode(reply.subarray(1, 14))).toBe("keel-reply-v1");
    expect(encodeReplyAuthInput(hello.nonce, challenge, { ...refusal, auth: new Uint8Array(0) }))
      .toEqual(reply);
    expect(encodeReplyAuthInput(allBytes.subarray(1, 17), challenge, refusal)).not.toEqual(reply);
    expect(encodeReplyAuthInput(hello.nonce, challenge, { ...refusal, fenced: false })).not
      .toEqual(reply);
  });

  test("a fingerprint field named __proto__ stays an ordinary field", () => {
    const tricky: Hello = {
      ...hello,
      fingerprintFields: Object.fromEntries([["__proto__", "h9"], ["constructor", "h8"]]),
    };
    const decoded = decodeHello(encodeHello(tricky));
    expect(Object.keys(decoded.fingerprintFields)).toEqual(["__proto__", "constructor"]);
    expect(Object.getPrototypeOf(decoded.fingerprintFields)).toBe(Object.prototype);
  });

  test("encoding an invalid value is a local bug and asserts", () => {
    expect(() => encodeMessage({ ...samples.timeoutNow, term: -1 })).toThrow(AssertionError);
    expect(() => encodeMessage({ ...samples.timeoutNow, term: 1.5 })).toThrow(AssertionError);
    expect(() => encodeMessage({ ...samples.timeoutNow, from: "x".repeat(256) })).toThrow(
      AssertionError,
    );
    expect(() => encodeMessage({ ...samples.timeoutNow, to: "" })).toThrow(AssertionError);
    expect(() => encodeMessagesFrame([])).toThrow(AssertionError);
  });
});

describe("codec rejects malformed input with DecodeError", () => {
  test("every truncation of every message", () => {
    for (const message of [...messages, emptyAppend]) {
      const bytes = encodeMessage(message);
      for (let length = 0; length < bytes.byteLength; length++) {
        expectDecodeError(() => decodeMessage(bytes.subarray(0, length)));
      }
    }
  });

  test("every truncation of handshake frames", () => {
    for (
      const frame of [
        encodeHelloFrame(hello),
        encodeHelloReplyFrame(refusal),
        encodeChallengeFrame({ nonce: allBytes.subarray(0, 16) }),
      ]
    ) {
      const payload = payloadOf(frame);
      for (let length = 0; length < payload.byteLength; length++) {
        expectDecodeError(() => decodeFrame(payload.subarray(0, length)));
      }
    }
  });

  test("trailing bytes", () => {
    const withTrailing = new Uint8Array([...encodeMessage(samples.timeoutNow), 0]);
    expect(expectDecodeError(() => decodeMessage(withTrailing))).toBe(
      "1 trailing bytes after the message",
    );
    const frame = payloadOf(encodeHelloFrame(hello));
    expectDecodeError(() => decodeFrame(new Uint8Array([...frame, 1, 2])));
  });

  test("unknown frame kind, message tag, entry kind, bad booleans", () => {
    expect(expectDecodeError(() => decodeFrame(new Uint8Array([9])))).toBe("Unknown frame kind 9");
    expect(expectDecodeError(() => decodeFrame(new Uint8Array([])))).toContain("Truncated input");
    for (const tag of [0, 14, 255]) {
      expect(expectDecodeError(() => decodeMessage(new Uint8Array([tag, 1, 1, 97, 1, 98]))))
        .toBe(`Unknown message type tag ${tag}`);
    }
    const vote = encodeMessage(samples.requestVoteResponse);
    const badBool = vote.slice();
    badBool[badBool.byteLength - 1] = 2;
    expect(expectDecodeError(() => decodeMessage(badBool))).toBe("Invalid boolean 2 for granted");

    const append = encodeMessage({
      ...emptyAppend,
      entries: [{ index: 1, term: 1, kind: "noop", data: new Uint8Array(0) }],
    });
    const badKind = append.slice();
    badKind[badKind.byteLength - 2] = 3; // kind byte, before the data length 0
    expect(expectDecodeError(() => decodeMessage(badKind))).toBe("Unknown entry kind 3");
  });

  test("batch counts out of range", () => {
    expect(expectDecodeError(() => decodeFrame(new Uint8Array([FrameKind.batch, 0])))).toContain(
      "Batch of 0 messages",
    );
    expect(
      expectDecodeError(() => decodeFrame(new Uint8Array([FrameKind.batch, 0xff, 0xff, 0x03]))),
    ).toContain("outside the allowed range");
  });

  test("varints: overlong, unsafe and too long", () => {
    // heartbeat tag 7; term encodings below.
    const withTerm = (term: number[]) => new Uint8Array([7, ...term, 1, 97, 1, 98, 0, 0]);
    expect(decodeMessage(withTerm([0x80, 0x01]))).toMatchObject({ term: 128 });
    expect(expectDecodeError(() => decodeMessage(withTerm([0x80, 0x00])))).toBe(
      "Overlong varint for term",
    );
    // 2^53 exactly: seven 0x80 bytes then 0x10 is 2^53 / 2^49 = 16.
    expect(
      expectDecodeError(() =>
        decodeMessage(withTerm([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]))
      ),
    ).toBe("Varint for term exceeds the maximum safe integer");
    expect(decodeMessage(withTerm([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]))).toMatchObject(
      {
        term: max,
      },
    );
    expect(
      expectDecodeError(() =>
        decodeMessage(withTerm([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))
      ),
    ).toBe("Varint for term is longer than 8 bytes");
  });

  test("names: empty, invalid UTF-8", () => {
    expect(expectDecodeError(() => decodeMessage(new Uint8Array([11, 1, 0, 1, 98])))).toBe(
      "Empty from",
    );
    expect(expectDecodeError(() => decodeMessage(new Uint8Array([11, 1, 1, 97, 2, 0xc3, 0x28]))))
      .toBe("Invalid UTF-8 in to");
  });

  test("entries: count beyond the limit or the input, gaps, term 0", () => {
    const prefix = [5, 1, 1, 97, 1, 98, 0, 0, 0]; // appendEntries, prevLogIndex 0, ...
    const count = (n: number) => {
      const bytes: number[] = [];
      while (n > 0x7f) {
        bytes.push((n & 0x7f) | 0x80);
        n >>>= 7;
      }
      bytes.push(n);
      return bytes;
    };
    expect(
      expectDecodeError(() =>
        decodeMessage(new Uint8Array([...prefix, ...count(entriesPerMessageMax + 1)]))
      ),
    )
      .toBe(
        `Entry count ${entriesPerMessageMax + 1} exceeds the maximum of ${entriesPerMessageMax}`,
      );
    expect(
      expectDecodeError(() =>
        decodeMessage(new Uint8Array([...prefix, ...count(1000), 1, 1, 0, 0]))
      ),
    )
      .toContain("Entry count 1000 needs at least 4000 bytes");
    expect(expectDecodeError(() => decodeMessage(new Uint8Array([...prefix, 1, 2, 1, 0, 0]))))
      .toBe("Entry 0 has index 2, expected 1 (prevLogIndex 0)");
    expect(expectDecodeError(() => decodeMessage(new Uint8Array([...prefix, 1, 1, 0, 0, 0]))))
      .toBe("Entry 1 has term 0");
  });

  test("hello: duplicate fingerprint field, oversized nonce", () => {
    const fields = [2, 1, 120, 1, 49, 1, 120, 1, 50]; // "x"->"1", "x"->"2"
    const dup = new Uint8Array([FrameKind.hello, 1, 1, 99, 1, 102, ...fields, 1, 97, 1, 105, 0, 0]);
    expect(expectDecodeError(() => decodeFrame(dup))).toBe('Duplicate fingerprint field "x"');
    const bigNonce = new Uint8Array([FrameKind.hello, 1, 1, 99, 1, 102, 0, 1, 97, 1, 105, 65]);
    expect(expectDecodeError(() => decodeFrame(bigNonce))).toBe(
      "nonce of 65 bytes exceeds the maximum of 64",
    );
  });

  test("seeded random bytes and mutations throw nothing but DecodeError", () => {
    const seed = 20240611;
    const prng = new Prng(seed);
    const valid = [
      ...[...messages, emptyAppend].map((m) => payloadOf(encodeMessagesFrame([m]))),
      payloadOf(encodeMessagesFrame(messages)),
      payloadOf(encodeHelloFrame(hello)),
      payloadOf(encodeHelloReplyFrame(refusal)),
      payloadOf(encodeChallengeFrame({ nonce: allBytes.subarray(0, 16) })),
    ];
    let decoded = 0;
    for (let i = 0; i < 5000; i++) {
      let input: Uint8Array;
      if (i % 2 === 0) {
        input = Uint8Array.from({ length: prng.int(0, 80) }, () => prng.int(0, 256));
        if (input.byteLength > 0 && prng.chance(0.7)) input[0] = prng.int(1, 6); // a known kind
      } else {
        input = prng.pick(valid).slice();
        for (let flips = prng.int(1, 4); flips > 0; flips--) {
          input[prng.int(0, input.byteLength)] = prng.int(0, 256);
        }
        if (prng.chance(0.2)) input = input.subarray(0, prng.int(0, input.byteLength));
      }
      try {
        decodeFrame(input);
        decoded++;
      } catch (error: unknown) {
        if (!(error instanceof DecodeError)) {
          throw new Error(`seed ${seed}, input ${i} [${input.join(",")}] threw ${String(error)}`);
        }
      }
    }
    // Some mutations (of data bytes) still decode; most inputs must not.
    expect(decoded).toBeGreaterThan(0);
    expect(decoded).toBeLessThan(5000);
  });
});
