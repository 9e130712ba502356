import { describe, expect, test } from "bun:test";
import {
  decodeKvResult,
  encodeCas,
  encodeDelete,
  encodePut,
  kvKeyBytesMax,
  KvService,
  validateKey,
} from "../../src/service/kv.ts";
import { Prng } from "../../src/lib/prng.ts";

const text = new TextEncoder();
const bytes = (value: string) => text.encode(value);

function apply(kv: KvService, command: Uint8Array, index: number) {
  return decodeKvResult(kv.apply(command, { index, term: 1 }));
}

describe("KvService commands", () => {
  test("put stores the value with the log index as its modification index", () => {
    const kv = new KvService();
    expect(apply(kv, encodePut("a", bytes("one")), 7)).toEqual({ type: "put", ok: true, index: 7 });
    expect(kv.get("a")).toEqual({ value: bytes("one"), modIndex: 7 });
    apply(kv, encodePut("a", bytes("two")), 9);
    expect(kv.get("a")).toEqual({ value: bytes("two"), modIndex: 9 });
    expect(kv.size).toBe(1);
  });

  test("put keeps its own copy of the value", () => {
    const kv = new KvService();
    const command = encodePut("a", bytes("xyz"));
    apply(kv, command, 1);
    command.fill(0);
    expect(kv.get("a")?.value).toEqual(bytes("xyz"));
  });

  test("binary values and empty values round-trip", () => {
    const kv = new KvService();
    const binary = Uint8Array.from({ length: 256 }, (_, i) => i);
    apply(kv, encodePut("bin", binary), 1);
    apply(kv, encodePut("empty", new Uint8Array(0)), 2);
    expect(kv.get("bin")?.value).toEqual(binary);
    expect(kv.get("empty")?.value).toEqual(new Uint8Array(0));
  });

  test("delete says whether the key existed", () => {
    const kv = new KvService();
    apply(kv, encodePut("a", bytes("1")), 1);
    expect(apply(kv, encodeDelete("a"), 2)).toEqual({ type: "delete", deleted: true, index: 2 });
    expect(kv.get("a")).toBeUndefined();
    expect(apply(kv, encodeDelete("a"), 3)).toEqual({ type: "delete", deleted: false, index: 3 });
  });

  test("cas with expected null succeeds only when the key is absent", () => {
    const kv = new KvService();
    expect(apply(kv, encodeCas("a", null, bytes("first")), 1)).toEqual({
      type: "cas",
      ok: true,
      index: 1,
    });
    expect(apply(kv, encodeCas("a", null, bytes("second")), 2)).toEqual({
      type: "cas",
      ok: false,
      index: 2,
      current: bytes("first"),
    });
    expect(kv.get("a")).toEqual({ value: bytes("first"), modIndex: 1 });
  });

  test("cas with an expected value compares bytes and reports the current value", () => {
    const kv = new KvService();
    apply(kv, encodePut("a", bytes("v1")), 1);
    expect(apply(kv, encodeCas("a", bytes("v0"), bytes("v2")), 2)).toEqual({
      type: "cas",
      ok: false,
      index: 2,
      current: bytes("v1"),
    });
    expect(apply(kv, encodeCas("a", bytes("v1"), bytes("v2")), 3)).toMatchObject({ ok: true });
    expect(kv.get("a")).toEqual({ value: bytes("v2"), modIndex: 3 });
    // Expected a value but the key is absent: current is null.
    expect(apply(kv, encodeCas("b", bytes("x"), bytes("y")), 4)).toEqual({
      type: "cas",
      ok: false,
      index: 4,
      current: null,
    });
  });

  test("cas with value null deletes the key", () => {
    const kv = new KvService();
    apply(kv, encodePut("a", bytes("v1")), 1);
    expect(apply(kv, encodeCas("a", bytes("v1"), null), 2)).toMatchObject({ ok: true });
    expect(kv.get("a")).toBeUndefined();
    expect(kv.list("", 10).items).toEqual([]);
  });
});

describe("KvService malformed commands", () => {
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["unknown op", Uint8Array.of(9, 0, 1, 97)],
    ["truncated key", Uint8Array.of(2, 0, 5, 97)],
    ["empty key", Uint8Array.of(2, 0, 0)],
    ["trailing bytes", Uint8Array.of(...encodeDelete("a"), 0)],
    ["truncated value", encodePut("a", bytes("hello")).subarray(0, 8)],
    ["invalid utf-8 key", Uint8Array.of(2, 0, 2, 0xc3, 0x28)],
    ["unknown cas flags", Uint8Array.of(3, 0, 1, 97, 4)],
    [
      "key over the maximum",
      (() => {
        const command = new Uint8Array(3 + kvKeyBytesMax + 1).fill(97);
        command.set([2, (kvKeyBytesMax + 1) >> 8, (kvKeyBytesMax + 1) & 0xff]);
        return command;
      })(),
    ],
  ];
  for (const [name, command] of cases) {
    test(`a command with ${name} yields an error result and changes nothing`, () => {
      const kv = new KvService();
      apply(kv, encodePut("a", bytes("keep")), 1);
      const before = kv.snapshot();
      const first = kv.apply(command, { index: 2, term: 1 });
      const again = new KvService().apply(command, { index: 2, term: 1 });
      const result = decodeKvResult(first);
      expect(result.type).toBe("error");
      expect(again).toEqual(first); // deterministic
      expect(kv.snapshot()).toEqual(before);
    });
  }

  test("random bytes never throw out of apply", () => {
    const prng = new Prng(42);
    const kv = new KvService();
    for (let i = 0; i < 2000; i++) {
      const command = Uint8Array.from({ length: prng.int(0, 24) }, () => prng.int(0, 256));
      if (prng.chance(0.5)) command[0] = prng.int(1, 4);
      expect(() => decodeKvResult(kv.apply(command, { index: i + 1, term: 1 }))).not.toThrow();
    }
  });

  test("encoders refuse keys that apply would refuse", () => {
    expect(() => encodePut("", bytes("x"))).toThrow(RangeError);
    expect(() => encodeDelete("k".repeat(kvKeyBytesMax + 1))).toThrow("exceeds the maximum");
    expect(() => encodeCas("\ud800", null, null)).toThrow("lone surrogates");
    expect(validateKey("k".repeat(kvKeyBytesMax))).toBeUndefined();
    // 4096 bytes is the bound, not 4096 characters.
    expect(validateKey("é".repeat(kvKeyBytesMax / 2 + 1))).toContain("exceeds the maximum");
  });

  test("decodeKvResult rejects malformed result bytes", () => {
    expect(() => decodeKvResult(new Uint8Array(0))).toThrow("Invalid kv result");
    expect(() => decodeKvResult(Uint8Array.of(7))).toThrow("unknown result tag");
    expect(() => decodeKvResult(Uint8Array.of(1, 0, 0))).toThrow("truncated");
  });
});

describe("KvService list", () => {
  function filled(keys: string[]): KvService {
    const kv = new KvService();
    keys.forEach((key, i) => apply(kv, encodePut(key, bytes(`v-${key}`)), i + 1));
    return kv;
  }

  test("list returns keys with the prefix in sorted order", () => {
    const kv = filled(["b/2", "a", "b/1", "b/3", "c", "b"]);
    expect(kv.list("b/", 10).items.map((item) => item.key)).toEqual(["b/1", "b/2", "b/3"]);
    expect(kv.list("", 10).items.map((item) => item.key)).toEqual([
      "a",
      "b",
      "b/1",
      "b/2",
      "b/3",
      "c",
    ]);
    expect(kv.list("b/", 10).items[0]).toEqual({ key: "b/1", value: bytes("v-b/1"), modIndex: 3 });
  });

  test("list pages with limit, more and after", () => {
    const kv = filled(["p1", "p2", "p3", "p4", "q"]);
    const first = kv.list("p", 2);
    expect(first.items.map((item) => item.key)).toEqual(["p1", "p2"]);
    expect(first.more).toBe(true);
    const second = kv.list("p", 2, "p2");
    expect(second.items.map((item) => item.key)).toEqual(["p3", "p4"]);
    expect(second.more).toBe(false);
    // after need not be a stored key, and an after below the prefix starts at the prefix.
    expect(kv.list("p", 10, "p25").items.map((item) => item.key)).toEqual(["p3", "p4"]);
    expect(kv.list("p", 10, "a").items.map((item) => item.key)).toEqual(["p1", "p2", "p3", "p4"]);
    expect(kv.list("p", 10, "z")).toEqual({ items: [], more: false });
    expect(kv.list("x", 10)).toEqual({ items: [], more: false });
  });

  test("list stays sorted through many inserts and deletes", () => {
    const prng = new Prng(7);
    const kv = new KvService();
    const reference = new Set<string>();
    for (let i = 1; i <= 6000; i++) {
      const key = `k${prng.int(0, 3000)}`;
      if (prng.chance(0.3)) {
        apply(kv, encodeDelete(key), i);
        reference.delete(key);
      } else {
        apply(kv, encodePut(key, bytes("v")), i);
        reference.add(key);
      }
    }
    const expected = [...reference].sort();
    const listed: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = kv.list("", 1000, after);
      listed.push(...page.items.map((item) => item.key));
      if (!page.more) break;
      after = listed[listed.length - 1];
    }
    expect(listed).toEqual(expected);
    expect(kv.list("k12", 1000).items.map((item) => item.key)).toEqual(
      expected.filter((key) => key.startsWith("k12")),
    );

    // Emptying the map and filling it again exercises removal of emptied chunks.
    let index = 10_000;
    for (const key of expected) apply(kv, encodeDelete(key), index++);
    expect(kv.list("", 1000)).toEqual({ items: [], more: false });
    for (const key of ["z", "a", "m"]) apply(kv, encodePut(key, bytes("v")), index++);
    expect(kv.list("", 1000).items.map((item) => item.key)).toEqual(["a", "m", "z"]);
  });
});

describe("KvService snapshots", () => {
  test("snapshot bytes depend on state only, not on the order of writes", () => {
    const writes: [string, string, number][] = [["b", "2", 2], ["a", "1", 1], ["c", "3", 3]];
    const forward = new KvService();
    const backward = new KvService();
    for (const [key, value, index] of writes) apply(forward, encodePut(key, bytes(value)), index);
    for (const [key, value, index] of writes.toReversed()) {
      apply(backward, encodePut(key, bytes(value)), index);
    }
    apply(backward, encodePut("gone", bytes("x")), 4);
    apply(backward, encodeDelete("gone"), 5);
    expect(backward.snapshot()).toEqual(forward.snapshot());
  });

  test("restore rebuilds values, modification indexes and order", () => {
    const kv = new KvService();
    for (let i = 1; i <= 2500; i++) {
      apply(kv, encodePut(`key-${i}`, Uint8Array.of(i & 0xff, 0, 255)), i);
    }
    const snapshot = kv.snapshot();
    const restored = new KvService();
    apply(restored, encodePut("stale", bytes("replaced")), 1);
    restored.restore(snapshot);
    expect(restored.snapshot()).toEqual(snapshot);
    expect(restored.get("stale")).toBeUndefined();
    expect(restored.get("key-300")).toEqual({
      value: Uint8Array.of(300 & 0xff, 0, 255),
      modIndex: 300,
    });
    expect(restored.list("key-1", 3).items.map((item) => item.key)).toEqual([
      "key-1",
      "key-10",
      "key-100",
    ]);
    // The restored ordered index still accepts writes in the right places.
    apply(restored, encodePut("key-1000a", bytes("new")), 2501);
    apply(restored, encodeDelete("key-10"), 2502);
    expect(restored.list("key-100", 3).items.map((item) => item.key)).toEqual([
      "key-100",
      "key-1000",
      "key-1000a",
    ]);
    expect(restored.size).toBe(2500);
  });

  test("the empty snapshot restores to an empty map", () => {
    const restored = new KvService();
    apply(restored, encodePut("a", bytes("1")), 1);
    restored.restore(new KvService().snapshot());
    expect(restored.size).toBe(0);
    expect(restored.list("", 10)).toEqual({ items: [], more: false });
  });

  test("a malformed snapshot throws and leaves the state unchanged", () => {
    const source = new KvService();
    apply(source, encodePut("a", bytes("1")), 1);
    apply(source, encodePut("b", bytes("2")), 2);
    const good = source.snapshot();
    const target = new KvService();
    apply(target, encodePut("mine", bytes("x")), 1);
    const before = target.snapshot();

    const outOfOrder = good.slice();
    // Swap the one-byte keys "a" and "b": same layout, keys now descending.
    const keyA = good.indexOf(97);
    const keyB = good.indexOf(98);
    outOfOrder[keyA] = 98;
    outOfOrder[keyB] = 97;
    for (
      const bad of [
        good.subarray(0, good.length - 1),
        Uint8Array.of(...good, 0),
        Uint8Array.of(0x58, ...good.subarray(1)),
        outOfOrder,
      ]
    ) {
      expect(() => target.restore(bad)).toThrow("Invalid kv snapshot");
      expect(target.snapshot()).toEqual(before);
    }
  });
});
