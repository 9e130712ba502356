// Fuzzing of the peer codec (src/transport/codec.ts): every frame payload a peer sends,
// handshake included, goes through decodeFrame, and tcp.ts treats anything it throws
// other than DecodeError as a bug of this process.

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import type { Entry, Message } from "../../src/consensus/types.ts";
import {
  DecodeError,
  decodeFrame,
  decodeHello,
  decodeHelloReply,
  decodeMessage,
  encodeChallengeFrame,
  encodeHello,
  encodeHelloFrame,
  encodeHelloReply,
  encodeHelloReplyFrame,
  encodeMessage,
  encodeMessagesFrame,
  FrameKind,
  messageBytesUpperBound,
} from "../../src/transport/codec.ts";
import { frameHeaderBytes } from "../../src/transport/frame.ts";
import type { Challenge, Hello, HelloReply } from "../../src/transport/handshake.ts";
import { entriesPerMessageMax, nonceBytes } from "../../src/transport/limits.ts";
import {
  bytes,
  fuzzParams,
  fuzzTimeoutMs,
  largestAllocationDuring,
  mutate,
  mutations,
  text,
  thrownBy,
} from "./fuzz.ts";

const utf8 = new TextEncoder();

// ---- Arbitraries -----------------------------------------------------------------------

/** wireInteger is any value a varint carries, small ones and the extremes favoured. */
const wireInteger = fc.oneof(
  fc.nat(300),
  fc.maxSafeNat(),
  fc.constantFrom(0x7f, 0x80, 0x3fff, 0x4000, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER),
);

/**
 * wireName is a name the codec can carry: 1 to 255 bytes of UTF-8. It never starts with
 * U+FEFF: the decoder drops a leading byte-order mark (see the failing test below), so such
 * names do not round-trip.
 */
const wireName = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "node-a",
      "node-b",
      "n",
      "keel-3.example",
      "__proto__",
      "constructor",
    ),
  },
  { weight: 2, arbitrary: text(40, 1) },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.integer({ min: 1, max: 255 }).map((length) => "n".repeat(length)),
      fc.integer({ min: 1, max: 85 }).map((length) => "\u20ac".repeat(length)),
    ),
  },
).filter((name) => {
  const length = utf8.encode(name).byteLength;
  return length >= 1 && length <= 255 && !name.startsWith("\ufeff");
});

const envelope = { term: wireInteger, from: wireName, to: wireName };

/** entries after prevLogIndex: contiguous indexes and terms >= 1, as the decoder demands. */
function entriesAfter(prevLogIndex: number): fc.Arbitrary<Entry[]> {
  const entry = fc.record({
    term: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 2 ** 53 - 1 })),
    kind: fc.constantFrom("noop" as const, "command" as const, "fence" as const),
    data: bytes(64),
  });
  const countMax = Math.max(0, Math.min(6, Number.MAX_SAFE_INTEGER - prevLogIndex));
  return fc.array(entry, { maxLength: countMax }).map((list) =>
    list.map((fields, i) => ({ index: prevLogIndex + 1 + i, ...fields }))
  );
}

const appendEntries: fc.Arbitrary<Message> = fc.record({
  ...envelope,
  prevLogIndex: wireInteger,
  prevLogTerm: wireInteger,
  commitIndex: wireInteger,
}).chain((fields) =>
  entriesAfter(fields.prevLogIndex).map((entries): Message => ({
    type: "appendEntries",
    ...fields,
    entries,
  }))
);

/** message is any consensus Message with values the encoder accepts. */
const message: fc.Arbitrary<Message> = fc.oneof(
  fc.record({
    type: fc.constantFrom("requestVote" as const, "preVote" as const),
    ...envelope,
    lastLogIndex: wireInteger,
    lastLogTerm: wireInteger,
    transfer: fc.boolean(),
  }),
  fc.record({
    type: fc.constantFrom("requestVoteResponse" as const, "preVoteResponse" as const),
    ...envelope,
    granted: fc.boolean(),
  }),
  appendEntries,
  fc.record({
    type: fc.constant("appendEntriesResponse" as const),
    ...envelope,
    success: fc.boolean(),
    matchIndex: wireInteger,
    rejectHintIndex: wireInteger,
    rejectHintTerm: wireInteger,
  }),
  fc.record({
    type: fc.constant("heartbeat" as const),
    ...envelope,
    commitIndex: wireInteger,
    context: wireInteger,
  }),
  fc.record({
    type: fc.constant("heartbeatResponse" as const),
    ...envelope,
    context: wireInteger,
    lastIndex: wireInteger,
  }),
  fc.record({
    type: fc.constant("installSnapshot" as const),
    ...envelope,
    snapshot: fc.record({ index: wireInteger, term: wireInteger, bytes: wireInteger }),
    offset: wireInteger,
    data: bytes(200),
    done: fc.boolean(),
  }),
  fc.record({
    type: fc.constant("installSnapshotResponse" as const),
    ...envelope,
    snapshotIndex: wireInteger,
    offset: wireInteger,
    success: fc.boolean(),
    done: fc.boolean(),
  }),
  fc.record({ type: fc.constant("timeoutNow" as const), ...envelope }),
  fc.record({ type: fc.constant("readIndex" as const), ...envelope, requestId: wireInteger }),
  fc.record({
    type: fc.constant("readIndexResponse" as const),
    ...envelope,
    requestId: wireInteger,
    index: wireInteger,
  }),
);

const shortBytes = bytes(64);

const hello: fc.Arbitrary<Hello> = fc.record({
  protocolVersion: wireInteger,
  clusterName: wireName,
  fingerprint: wireName,
  fingerprintFields: fc.dictionary(wireName, wireName, { maxKeys: 6 }),
  name: wireName,
  incarnation: wireName,
  nonce: shortBytes,
  auth: shortBytes,
  hasState: fc.boolean(),
  recovering: fc.boolean(),
  term: wireInteger,
  lastIndex: wireInteger,
});

const helloReply: fc.Arbitrary<HelloReply> = fc.record({
  accepted: fc.boolean(),
  // At most 4096 bytes of UTF-8; a leading U+FEFF is dropped like a name's (see wireName).
  reason: fc.oneof(text(80), fc.string({ unit: "binary", maxLength: 1024 }))
    .filter((reason) => !reason.startsWith("\ufeff")),
  differingFields: fc.array(wireName, { maxLength: 6 }),
  name: wireName,
  incarnation: wireName,
  hasState: fc.boolean(),
  recovering: fc.boolean(),
  fenced: fc.boolean(),
  rolledBack: fc.boolean(),
  auth: shortBytes,
}, {
  requiredKeys: [
    "accepted",
    "name",
    "incarnation",
    "hasState",
    "recovering",
    "fenced",
    "rolledBack",
    "auth",
  ],
});

const challenge: fc.Arbitrary<Challenge> = fc.record({
  nonce: fc.uint8Array({ minLength: nonceBytes, maxLength: nonceBytes }),
});

/** payloadOf drops the length prefix of a whole frame. */
function payloadOf(frame: Uint8Array): Uint8Array {
  return frame.subarray(frameHeaderBytes);
}

/** validFramePayload is any frame payload this codec produces. */
const validFramePayload = fc.oneof(
  hello.map((value) => payloadOf(encodeHelloFrame(value))),
  helloReply.map((value) => payloadOf(encodeHelloReplyFrame(value))),
  challenge.map((value) => payloadOf(encodeChallengeFrame(value))),
  fc.array(message, { minLength: 1, maxLength: 4 }).map((list) =>
    payloadOf(encodeMessagesFrame(list))
  ),
);

// ---- Properties ------------------------------------------------------------------------

describe("peer codec under fuzzing", () => {
  test("every message round-trips exactly, within its size bound", () => {
    fc.assert(
      fc.property(message, (value) => {
        const encoded = encodeMessage(value);
        expect(encoded.byteLength).toBeLessThanOrEqual(messageBytesUpperBound(value));
        expect(decodeMessage(encoded)).toEqual(value);
      }),
      fuzzParams(1500),
    );
  }, fuzzTimeoutMs);

  test("message and batch frames round-trip exactly", () => {
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 6 }), (list) => {
        const frame = encodeMessagesFrame(list);
        expect(new DataView(frame.buffer, frame.byteOffset).getUint32(0)).toBe(
          frame.byteLength - frameHeaderBytes,
        );
        expect(decodeFrame(payloadOf(frame))).toEqual({ kind: "messages", messages: list });
      }),
      fuzzParams(400),
    );
  }, fuzzTimeoutMs);

  test("hello and helloReply round-trip exactly, alone and in frames", () => {
    fc.assert(
      fc.property(hello, helloReply, (h, reply) => {
        expect(decodeHello(encodeHello(h))).toEqual(h);
        expect(decodeFrame(payloadOf(encodeHelloFrame(h)))).toEqual({ kind: "hello", hello: h });
        expect(decodeHelloReply(encodeHelloReply(reply))).toEqual(reply);
        expect(decodeFrame(payloadOf(encodeHelloReplyFrame(reply)))).toEqual({
          kind: "helloReply",
          reply,
        });
      }),
      fuzzParams(500),
    );
  }, fuzzTimeoutMs);

  test("arbitrary bytes only ever raise DecodeError", () => {
    fc.assert(
      fc.property(bytes(200), fc.constantFrom(...Object.values(FrameKind)), (input, kind) => {
        thrownBy(() => decodeMessage(input), DecodeError);
        thrownBy(() => decodeHello(input), DecodeError);
        thrownBy(() => decodeHelloReply(input), DecodeError);
        thrownBy(() => decodeFrame(input), DecodeError);
        // The same bytes behind a valid kind byte reach the deeper decoders.
        thrownBy(() => decodeFrame(Uint8Array.of(kind, ...input)), DecodeError);
      }),
      fuzzParams(3000),
    );
  }, fuzzTimeoutMs);

  test(
    "mutated valid frames only ever raise DecodeError, or decode to their canonical encoding",
    () => {
      fc.assert(
        fc.property(validFramePayload, mutations, (payload, edits) => {
          const mutated = mutate(payload, edits);
          let frame: ReturnType<typeof decodeFrame> | undefined;
          thrownBy(() => {
            frame = decodeFrame(mutated);
          }, DecodeError);
          if (frame === undefined) return;
          // What the decoder accepts is what the encoder can produce (it asserts on values it
          // cannot encode), and each value has one encoding. A hello is compared as a value:
          // its fingerprint fields are a record, whose integer-like keys JavaScript reorders.
          if (frame.kind === "hello") {
            expect(decodeFrame(payloadOf(encodeHelloFrame(frame.hello)))).toEqual(frame);
            return;
          }
          const again = frame.kind === "helloReply"
            ? encodeHelloReplyFrame(frame.reply)
            : frame.kind === "challenge"
            ? encodeChallengeFrame(frame.challenge)
            : encodeMessagesFrame(frame.messages);
          expect(payloadOf(again)).toEqual(mutated);
        }),
        fuzzParams(3000),
      );
    },
    fuzzTimeoutMs,
  );

  test("counts and lengths far beyond the input are refused before allocating", () => {
    // A message frame: appendEntries with a huge entry count, and installSnapshot with a huge
    // data length, each followed by only a few bytes.
    const prefix = [FrameKind.message, 5, 1, 1, 0x61, 1, 0x62, 0, 0, 0];
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 1000, max: entriesPerMessageMax }),
          fc.integer({ min: 1000, max: Number.MAX_SAFE_INTEGER }),
        ),
        bytes(32),
        (count, tail) => {
          const varint: number[] = [];
          for (let value = count;; value = Math.floor(value / 128)) {
            if (value < 128) {
              varint.push(value);
              break;
            }
            varint.push((value % 128) | 0x80);
          }
          const inputs = [
            Uint8Array.of(...prefix, ...varint, ...tail),
            Uint8Array.of(FrameKind.batch, ...varint, ...tail),
            Uint8Array.of(
              FrameKind.message,
              9,
              1,
              1,
              0x61,
              1,
              0x62,
              1,
              1,
              1,
              0,
              ...varint,
              ...tail,
            ),
          ];
          for (const input of inputs) {
            let failure: Error | undefined;
            const largestBytes = largestAllocationDuring(() => {
              failure = thrownBy(() => decodeFrame(input), DecodeError);
            });
            expect(failure).toBeInstanceOf(DecodeError);
            expect(largestBytes).toBeLessThan(1024);
          }
        },
      ),
      fuzzParams(300),
    );
  }, fuzzTimeoutMs);

  // A bug found by this suite, left for the codec's owner: the name decoder uses a
  // TextDecoder without ignoreBOM, which strips a leading U+FEFF. "\ufeff" (bytes EF BB BF)
  // decodes to "", slipping past the "Empty name" check, and "\ufeffx" decodes to "x", so
  // two encodings map to one name. Remove .failing once names decode with ignoreBOM: true.
  test("names starting with a byte-order mark round-trip", () => {
    const value: Message = { type: "timeoutNow", term: 1, from: "\ufeff", to: "\ufeffnode-b" };
    expect(decodeMessage(encodeMessage(value))).toEqual(value);
  });
});
