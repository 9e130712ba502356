// Fuzzing of the gossip datagram codec (src/resolver/gossip_wire.ts): anyone who can
// reach the UDP port can send one, so decodeGossip must answer every input with a value,
// never throw, and accept nothing that fails its signature check.

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  decodeGossip,
  encodeGossip,
  type GossipClaim,
  type GossipEndpoint,
  type GossipMessage,
  gossipMessageBytesMax,
} from "../../src/resolver/gossip_wire.ts";
import { bytes, fuzzParams, fuzzTimeoutMs, mutate, mutations, text } from "./fuzz.ts";

const utf8 = new TextEncoder();

const memberName = fc.stringMatching(/^[A-Za-z0-9._-]{1,63}$/);
const port = fc.integer({ min: 1, max: 65535 });

/** endpoint is a dialable endpoint in the decoder's normal form (lower-case host). */
const endpoint: fc.Arbitrary<GossipEndpoint> = fc.record({
  host: fc.oneof(
    fc.ipV4().filter((host) => host !== "0.0.0.0"),
    fc.ipV6().map((host) => host.toLowerCase()).filter((host) => !/^[0:]+$/.test(host)),
    fc.domain().map((host) => host.toLowerCase()),
  ),
  port,
});

const claim: fc.Arbitrary<GossipClaim> = fc.record({
  name: memberName,
  incarnation: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
  recovering: fc.boolean(),
  seq: fc.maxSafeNat(),
  peer: endpoint,
  http: endpoint,
  gossip: endpoint,
});

const gossipMessage: fc.Arbitrary<GossipMessage> = fc.record({
  cluster: text(63, 1),
  from: memberName,
  pull: fc.boolean(),
  entries: fc.array(claim, { maxLength: 4 }),
});

const secret = fc.option(bytes(32), { nil: undefined });

/** Envelope fields of a datagram: magic "KGS1", a flags byte, 32 bytes of mac. */
const magic = [0x4b, 0x47, 0x53, 0x31];

describe("gossip datagrams under fuzzing", () => {
  test("messages round-trip, signed and unsigned", () => {
    fc.assert(
      fc.property(gossipMessage, secret, (message, key) => {
        const decoded = decodeGossip(encodeGossip(message, key), key);
        expect(decoded).toEqual({ ok: true, message });
      }),
      fuzzParams(300),
    );
  }, fuzzTimeoutMs);

  test("arbitrary bytes, and arbitrary JSON behind a valid envelope, never throw", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          bytes(200),
          fc.jsonValue({ maxDepth: 4 }).map((value) =>
            Uint8Array.of(...magic, 0, ...new Uint8Array(32), ...utf8.encode(JSON.stringify(value)))
          ),
          fc.record({
            cluster: fc.oneof(text(8), fc.jsonValue({ maxDepth: 1 })),
            from: fc.oneof(memberName, fc.jsonValue({ maxDepth: 1 })),
            pull: fc.oneof(fc.boolean(), fc.jsonValue({ maxDepth: 1 })),
            entries: fc.array(fc.oneof(claim, fc.jsonValue({ maxDepth: 2 })), { maxLength: 3 }),
          }).map((body) =>
            Uint8Array.of(...magic, 0, ...new Uint8Array(32), ...utf8.encode(JSON.stringify(body)))
          ),
        ),
        secret,
        (input, key) => {
          const decoded = decodeGossip(input, key);
          if (!decoded.ok) expect(decoded.detail.length).toBeGreaterThan(0);
        },
      ),
      fuzzParams(1000),
    );
  }, fuzzTimeoutMs);

  test("a mutated signed datagram is never accepted", () => {
    fc.assert(
      fc.property(gossipMessage, bytes(32), mutations, (message, key, edits) => {
        const datagram = encodeGossip(message, key);
        const mutated = mutate(datagram, edits);
        fc.pre(
          !mutated.every((byte, i) => byte === datagram[i]) || mutated.length !== datagram.length,
        );
        const decoded = decodeGossip(mutated, key);
        expect(decoded.ok).toBe(false);
      }),
      fuzzParams(500),
    );
  }, fuzzTimeoutMs);

  test("oversized datagrams are refused by size alone", () => {
    const decoded = decodeGossip(new Uint8Array(gossipMessageBytesMax + 1), undefined);
    expect(decoded).toMatchObject({ ok: false, reason: "oversize" });
  });
});
