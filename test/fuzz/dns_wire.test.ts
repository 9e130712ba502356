// Fuzzing of the DNS message decoder (src/resolver/dns_wire.ts): it reads whatever answers
// a UDP socket, so it must refuse garbage with DnsWireError alone, and terminate on
// pointer loops.

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  decodeMessage,
  type DnsMessage,
  type DnsRecord,
  DnsWireError,
  encodeMessage,
  formatIPv6,
  namesEqual,
  RecordClass,
  RecordType,
} from "../../src/resolver/dns_wire.ts";
import { bytes, fuzzParams, fuzzTimeoutMs, mutate, mutations, thrownBy } from "./fuzz.ts";

// ---- Arbitraries -----------------------------------------------------------------------

/** labelChars are what an encodable label holds: printable ASCII but "." and "\". */
const labelChars = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i))
  .filter((c) => c !== "." && c !== "\\" && !(c >= "A" && c <= "Z"));

/** A few shared labels, so that names share suffixes and the encoder compresses them. */
const label = fc.oneof(
  fc.constantFrom("example", "com", "keel", "node-a", "x"),
  fc.integer({ min: 1, max: 63 }).chain((length) =>
    fc.array(fc.constantFrom(...labelChars), { minLength: length, maxLength: length })
      .map((chars) => chars.join(""))
  ),
);

/** name is a lower-case name within 255 bytes in wire form; "" is the root. */
const name = fc.array(label, { maxLength: 4 })
  .filter((labels) => labels.reduce((sum, l) => sum + 1 + l.length, 1) <= 255)
  .map((labels) => labels.join("."));

const u16 = fc.integer({ min: 0, max: 0xffff });

const recordData = fc.oneof(
  fc.ipV4().map((address) => ({ rclass: RecordClass.IN, data: { type: "A" as const, address } })),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((raw) => ({
    rclass: RecordClass.IN,
    data: { type: "AAAA" as const, address: formatIPv6(raw) },
  })),
  fc.tuple(name, u16).map(([target, rclass]) => ({
    rclass,
    data: { type: "CNAME" as const, target },
  })),
  fc.tuple(u16, u16, bytes(40))
    .filter(([code, rclass]) =>
      code !== RecordType.CNAME &&
      !((code === RecordType.A || code === RecordType.AAAA) && rclass === RecordClass.IN)
    )
    .map(([code, rclass, raw]) => ({ rclass, data: { type: "other" as const, code, bytes: raw } })),
);

const record: fc.Arbitrary<DnsRecord> = fc.record({
  name,
  ttlSeconds: fc.integer({ min: 0, max: 0x7fffffff }),
  rdata: recordData,
}).map(({ name, ttlSeconds, rdata }) => ({
  name,
  class: rdata.rclass,
  ttlSeconds,
  data: rdata.data,
}));

const dnsMessage: fc.Arbitrary<DnsMessage> = fc.record({
  header: fc.record({
    id: u16,
    response: fc.boolean(),
    opcode: fc.integer({ min: 0, max: 15 }),
    authoritative: fc.boolean(),
    truncated: fc.boolean(),
    recursionDesired: fc.boolean(),
    recursionAvailable: fc.boolean(),
    rcode: fc.integer({ min: 0, max: 15 }),
  }),
  questions: fc.array(fc.record({ name, type: u16, class: u16 }), { maxLength: 3 }),
  answers: fc.array(record, { maxLength: 4 }),
  authorities: fc.array(record, { maxLength: 2 }),
  additionals: fc.array(record, { maxLength: 2 }),
});

/** upperCased flips the case of some ASCII letters of a name, picked by a mask. */
function upperCased(text: string, mask: number): string {
  return Array.from(text, (c, i) => ((mask >>> (i % 31)) & 1) === 1 ? c.toUpperCase() : c)
    .join("");
}

// ---- Properties ------------------------------------------------------------------------

describe("DNS wire format under fuzzing", () => {
  test("messages round-trip exactly, compressed names included", () => {
    fc.assert(
      fc.property(dnsMessage, (message) => {
        const encoded = encodeMessage(message);
        expect(decodeMessage(encoded)).toEqual(message);
      }),
      fuzzParams(800),
    );
  }, fuzzTimeoutMs);

  test("mixed-case names round-trip up to ASCII case", () => {
    // Compression matches suffixes case-insensitively (as servers do), so a name that
    // repeats an earlier one in another case comes back in the earlier case.
    fc.assert(
      fc.property(fc.array(name, { minLength: 1, maxLength: 4 }), fc.nat(), (names, mask) => {
        const questions = names.map((n) => ({ name: upperCased(n, mask), type: 1, class: 1 }));
        const decoded = decodeMessage(encodeMessage({
          header: {
            id: 1,
            response: true,
            opcode: 0,
            authoritative: false,
            truncated: false,
            recursionDesired: false,
            recursionAvailable: false,
            rcode: 0,
          },
          questions,
          answers: [],
          authorities: [],
          additionals: [],
        }));
        expect(decoded.questions.length).toBe(questions.length);
        decoded.questions.forEach((question, i) => {
          expect(namesEqual(question.name, questions[i]!.name)).toBe(true);
        });
      }),
      fuzzParams(300),
    );
  }, fuzzTimeoutMs);

  test("arbitrary bytes only ever raise DnsWireError", () => {
    fc.assert(
      fc.property(
        // A plausible header (small counts) makes the decoder read on into names and records.
        fc.tuple(
          u16,
          u16,
          fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 4, maxLength: 4 }),
        ),
        bytes(300),
        fc.boolean(),
        ([id, flags, counts], body, withHeader) => {
          const input = withHeader
            ? Uint8Array.of(
              id >> 8,
              id & 0xff,
              flags >> 8,
              flags & 0xff,
              ...counts.flatMap((c) => [0, c]),
              ...body,
            )
            : body;
          thrownBy(() => decodeMessage(input), DnsWireError);
        },
      ),
      fuzzParams(3000),
    );
  }, fuzzTimeoutMs);

  test("mutated valid messages only ever raise DnsWireError", () => {
    fc.assert(
      fc.property(dnsMessage, mutations, (message, edits) => {
        const mutated = mutate(encodeMessage(message), edits);
        let decoded: DnsMessage | undefined;
        thrownBy(() => {
          decoded = decodeMessage(mutated);
        }, DnsWireError);
        // What decodes either encodes again or is refused with DnsWireError (escaped label
        // bytes such as "\\046" are not encodable), never another error.
        if (decoded !== undefined) thrownBy(() => encodeMessage(decoded!), DnsWireError);
      }),
      fuzzParams(1500),
    );
  }, fuzzTimeoutMs);

  test("runs of compression pointers, loops included, end with a message or DnsWireError", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 80 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 4, maxLength: 4 }),
        (targets, counts) => {
          // Names made only of pointers into the message, many into themselves or forward:
          // each is refused or followed a bounded number of times.
          const pointers = targets.flatMap((target) => [0xc0 | (target >> 8), target & 0xff]);
          const header = [0, 1, 0, 0, ...counts.flatMap((count) => [0, count])];
          thrownBy(() => decodeMessage(Uint8Array.of(...header, ...pointers)), DnsWireError);
        },
      ),
      fuzzParams(1000),
    );
    // A pointer to itself is refused, not followed forever.
    const selfPointer = Uint8Array.of(0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1);
    expect(thrownBy(() => decodeMessage(selfPointer), DnsWireError)?.message).toContain(
      "points forward or into its own name",
    );
  }, fuzzTimeoutMs);
});
