import { describe, expect, test } from "bun:test";
import { Prng } from "../../src/lib/prng.ts";
import {
  decodeMessage,
  type DnsMessage,
  dnsPointerJumpsMax,
  DnsWireError,
  encodeMessage,
  encodeQuery,
  formatIPv6,
  nameLabels,
  namesEqual,
  parseIPv4,
  parseIPv6,
  Rcode,
  RecordClass,
  RecordType,
} from "../../src/resolver/dns_wire.ts";

function response(overrides: Partial<DnsMessage> = {}): DnsMessage {
  return {
    header: {
      id: 0xbeef,
      response: true,
      opcode: 0,
      authoritative: true,
      truncated: false,
      recursionDesired: true,
      recursionAvailable: false,
      rcode: Rcode.noError,
    },
    questions: [{ name: "node-b.keel.test", type: RecordType.A, class: RecordClass.IN }],
    answers: [
      {
        name: "node-b.keel.test",
        class: RecordClass.IN,
        ttlSeconds: 30,
        data: { type: "CNAME", target: "host-7.keel.test" },
      },
      {
        name: "host-7.keel.test",
        class: RecordClass.IN,
        ttlSeconds: 5,
        data: { type: "A", address: "127.0.0.72" },
      },
      {
        name: "host-7.keel.test",
        class: RecordClass.IN,
        ttlSeconds: 5,
        data: { type: "AAAA", address: "2001:db8::7" },
      },
    ],
    authorities: [
      {
        name: "keel.test",
        class: RecordClass.IN,
        ttlSeconds: 3600,
        data: { type: "other", code: RecordType.NS, bytes: new Uint8Array([1, 2, 3]) },
      },
    ],
    additionals: [],
    ...overrides,
  };
}

function header(id: number, flags: number, counts: [number, number, number, number]): number[] {
  return [
    id >> 8,
    id & 0xff,
    flags >> 8,
    flags & 0xff,
    ...counts.flatMap((c) => [c >> 8, c & 0xff]),
  ];
}

function expectWireError(bytes: Uint8Array | number[], pattern: RegExp): void {
  const input = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let caught: unknown;
  try {
    decodeMessage(input);
  } catch (error: unknown) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(DnsWireError);
  expect((caught as Error).message).toMatch(pattern);
}

describe("queries", () => {
  test("a query round-trips with its id, name and type, recursion desired", () => {
    const decoded = decodeMessage(encodeQuery(4321, "Node-B.Keel.Test.", RecordType.AAAA));
    expect(decoded.header.id).toBe(4321);
    expect(decoded.header.response).toBe(false);
    expect(decoded.header.recursionDesired).toBe(true);
    expect(decoded.questions).toEqual([
      { name: "Node-B.Keel.Test", type: RecordType.AAAA, class: RecordClass.IN },
    ]);
    expect(decoded.answers).toEqual([]);
  });

  test("a query has the exact RFC 1035 layout", () => {
    const bytes = encodeQuery(0x1234, "a.bc", RecordType.A);
    expect(Array.from(bytes)).toEqual([
      ...header(0x1234, 0x0100, [1, 0, 0, 0]),
      1,
      0x61,
      2,
      0x62,
      0x63,
      0,
      0,
      1,
      0,
      1,
    ]);
  });

  test("names that cannot be encoded are refused with a DnsWireError", () => {
    expect(() => encodeQuery(1, "a..b", RecordType.A)).toThrow(/empty label/);
    expect(() => encodeQuery(1, "x".repeat(64) + ".test", RecordType.A)).toThrow(/64 bytes/);
    expect(() => encodeQuery(1, Array(130).fill("ab").join("."), RecordType.A)).toThrow(
      /maximum is 255/,
    );
    expect(() => encodeQuery(1, "sp ace.test", RecordType.A)).toThrow(DnsWireError);
    expect(() => encodeQuery(70000, "a.test", RecordType.A)).toThrow(/0 to 65535/);
    expect(nameLabels("a.b.")).toEqual(["a", "b"]);
    expect(nameLabels("")).toEqual([]);
  });
});

describe("responses", () => {
  test("a response with A, AAAA, CNAME and other records round-trips", () => {
    const message = response();
    expect(decodeMessage(encodeMessage(message))).toEqual(message);
  });

  test("repeated names are compressed with pointers, and decode the same", () => {
    const message = response();
    const bytes = encodeMessage(message);
    // The question's name is written once; every later "node-b.keel.test" is a pointer.
    const text = new TextDecoder("latin1").decode(bytes);
    expect(text.split("node-b").length - 1).toBe(1);
    expect(text.split("host-7").length - 1).toBe(1);
    expect(bytes.some((byte, i) => (byte & 0xc0) === 0xc0 && i >= 12)).toBe(true);
    expect(decodeMessage(bytes).answers[2]!.name).toBe("host-7.keel.test");
  });

  test("a hand-written answer using a pointer to the question decodes", () => {
    const bytes = [
      ...header(7, 0x8180, [1, 1, 0, 0]),
      // offset 12: question "ab.test"
      2,
      0x61,
      0x62,
      4,
      0x74,
      0x65,
      0x73,
      0x74,
      0,
      0,
      1,
      0,
      1,
      // answer: name = pointer to 12
      0xc0,
      12,
      0,
      1,
      0,
      1,
      0,
      0,
      0,
      60,
      0,
      4,
      10,
      0,
      0,
      9,
    ];
    const decoded = decodeMessage(new Uint8Array(bytes));
    expect(decoded.header.recursionAvailable).toBe(true);
    expect(decoded.answers).toEqual([
      {
        name: "ab.test",
        class: RecordClass.IN,
        ttlSeconds: 60,
        data: { type: "A", address: "10.0.0.9" },
      },
    ]);
  });

  test("a TTL with the top bit set reads as 0 (RFC 2181 §8)", () => {
    const bytes = encodeMessage(response());
    // The first answer's TTL follows its name pointer (2), type (2) and class (2).
    const question = 12 + 18 + 4; // header, "node-b.keel.test" (18 bytes), type and class
    const ttlOffset = question + 2 + 4;
    expect(bytes[ttlOffset + 3]).toBe(30);
    bytes[ttlOffset] = 0x80;
    expect(decodeMessage(bytes).answers[0]!.ttlSeconds).toBe(0);
  });

  test("labels with dots or unprintable bytes are escaped, not confused with other names", () => {
    const bytes = [
      ...header(1, 0x8000, [1, 0, 0, 0]),
      3,
      0x61,
      0x2e,
      0x01,
      0,
      0,
      1,
      0,
      1,
    ];
    expect(decodeMessage(new Uint8Array(bytes)).questions[0]!.name).toBe("a\\.\\001");
  });
});

describe("malformed messages", () => {
  test("every truncation of a valid message is rejected with a DnsWireError", () => {
    const bytes = encodeMessage(response());
    for (let length = 0; length < bytes.length; length++) {
      expect(() => decodeMessage(bytes.subarray(0, length))).toThrow(DnsWireError);
    }
  });

  test("a short header is named in the error", () => {
    expectWireError([1, 2, 3], /Message of 3 bytes is shorter than the 12-byte header/);
  });

  test("a count larger than the records present is rejected", () => {
    const bytes = encodeQuery(1, "a.test", RecordType.A);
    bytes[7] = 1; // one answer, none present
    expectWireError(bytes, /ends inside/);
  });

  test("trailing bytes after the last record are rejected", () => {
    const bytes = encodeQuery(1, "a.test", RecordType.A);
    expectWireError([...bytes, 0, 0], /2 trailing bytes/);
  });

  test("an A record whose data is not 4 bytes is rejected", () => {
    const bytes = [
      ...header(1, 0x8000, [0, 1, 0, 0]),
      0,
      0,
      1,
      0,
      1,
      0,
      0,
      0,
      1,
      0,
      5,
      1,
      2,
      3,
      4,
      5,
    ];
    expectWireError(bytes, /A record at offset \d+ has 5 data bytes, not 4/);
  });

  test("a CNAME whose name does not end with its data is rejected", () => {
    const bytes = [
      ...header(1, 0x8000, [0, 1, 0, 0]),
      0,
      0,
      5,
      0,
      1,
      0,
      0,
      0,
      1,
      0,
      5, // rdlength 5, but the name "ab" takes 4 and a pad byte follows
      2,
      0x61,
      0x62,
      0,
      0,
    ];
    expectWireError(bytes, /CNAME record at offset \d+ has 5 data bytes but its name takes 4/);
  });

  test("a pointer to itself is a loop and is rejected", () => {
    expectWireError([...header(1, 0x8000, [1, 0, 0, 0]), 0xc0, 12, 0, 1, 0, 1], /points forward/);
  });

  test("two pointers that point at each other are rejected", () => {
    // offset 12: label "a" then a pointer to 17; offset 17: pointer back to 12.
    const bytes = [
      ...header(1, 0x8000, [2, 0, 0, 0]),
      1,
      0x61,
      0xc0,
      17,
      0,
      0xc0,
      12,
      0,
      1,
      0,
      1,
    ];
    expectWireError(bytes, /points forward or into its own name/);
  });

  test("a pointer back into the middle of its own name is rejected", () => {
    // offset 12: "a", "b", then a pointer to offset 14 ("b" again): a loop through "b".
    const bytes = [...header(1, 0x8000, [1, 0, 0, 0]), 1, 0x61, 1, 0x62, 0xc0, 14, 0, 1, 0, 1];
    expectWireError(bytes, /points forward or into its own name/);
  });

  test("a long chain of backward pointers is bounded", () => {
    // Question 0 (offset 12) is the root name; each later question's name is a pointer to
    // the one before it. Every pointer is legal, but the last name follows too many.
    const questions = dnsPointerJumpsMax + 2;
    const bytes: number[] = [...header(1, 0x8000, [questions, 0, 0, 0]), 0, 0, 1, 0, 1];
    for (let i = 1; i < questions; i++) {
      const previous = 12 + (i === 1 ? 0 : 5 + (i - 2) * 6);
      bytes.push(0xc0 | (previous >> 8), previous & 0xff, 0, 1, 0, 1);
    }
    expectWireError(bytes, new RegExp(`more than ${dnsPointerJumpsMax} compression pointers`));
    // One question fewer stays within the limit and decodes.
    const fewer = bytes.slice(0, bytes.length - 6);
    fewer[5] = questions - 1;
    expect(decodeMessage(new Uint8Array(fewer)).questions.length).toBe(questions - 1);
  });

  test("label type bits 01 and 10 are rejected", () => {
    expectWireError([...header(1, 0x8000, [1, 0, 0, 0]), 0x41, 0, 0, 1, 0, 1], /type bits 0x40/);
    expectWireError([...header(1, 0x8000, [1, 0, 0, 0]), 0x81, 0, 0, 1, 0, 1], /type bits 0x80/);
  });

  test("random bytes never throw anything but a DnsWireError (seeded)", () => {
    const prng = new Prng(20240611);
    let decoded = 0;
    for (let round = 0; round < 20_000; round++) {
      const bytes = new Uint8Array(prng.int(0, 300));
      for (let i = 0; i < bytes.length; i++) bytes[i] = prng.int(0, 256);
      // Plausible headers more often, so decoding gets past the counts.
      if (bytes.length >= 12 && prng.chance(0.7)) {
        bytes.fill(0, 4, 12);
        bytes[5] = prng.int(0, 3);
        bytes[7] = prng.int(0, 4);
      }
      try {
        decodeMessage(bytes);
        decoded++;
      } catch (error: unknown) {
        if (!(error instanceof DnsWireError)) {
          throw new Error(`round ${round}: ${String(error)} for ${Array.from(bytes)}`);
        }
      }
    }
    expect(decoded).toBeGreaterThan(0);
  });

  test("mutated valid messages never throw anything but a DnsWireError (seeded)", () => {
    const prng = new Prng(7);
    const valid = encodeMessage(response());
    for (let round = 0; round < 20_000; round++) {
      const bytes = valid.slice(0, prng.chance(0.2) ? prng.int(0, valid.length) : valid.length);
      for (let flips = prng.int(1, 4); flips > 0 && bytes.length > 0; flips--) {
        bytes[prng.int(0, bytes.length)] = prng.int(0, 256);
      }
      try {
        decodeMessage(bytes);
      } catch (error: unknown) {
        if (!(error instanceof DnsWireError)) {
          throw new Error(`round ${round}: ${String(error)} for ${Array.from(bytes)}`);
        }
      }
    }
  });
});

describe("addresses and names", () => {
  test("IPv4 parses strictly", () => {
    expect(Array.from(parseIPv4("127.0.0.61")!)).toEqual([127, 0, 0, 61]);
    expect(parseIPv4("256.0.0.1")).toBeUndefined();
    expect(parseIPv4("1.2.3")).toBeUndefined();
  });

  test("IPv6 parses and formats canonically (RFC 5952)", () => {
    const cases: Array<[string, string]> = [
      ["::1", "::1"],
      ["::", "::"],
      ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
      ["1:0:0:1:0:0:0:1", "1:0:0:1::1"],
      ["1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"],
      ["::ffff:1.2.3.4", "::ffff:102:304"],
      ["fe80::", "fe80::"],
    ];
    for (const [input, canonical] of cases) {
      const bytes = parseIPv6(input);
      expect(bytes).toBeDefined();
      expect(formatIPv6(bytes!)).toBe(canonical);
    }
    for (const bad of ["1::2::3", "12345::", ":::", "1:2:3:4:5:6:7:8:9", "g::1", ""]) {
      expect(parseIPv6(bad)).toBeUndefined();
    }
  });

  test("names compare case-insensitively, ignoring a trailing dot", () => {
    expect(namesEqual("Node-B.Keel.Test.", "node-b.keel.test")).toBe(true);
    expect(namesEqual("node-b.keel.test", "node-c.keel.test")).toBe(false);
  });
});
