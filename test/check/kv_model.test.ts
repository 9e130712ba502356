// The kv model: its step function, the facts it declares to the search (which the search's
// pruning trusts), and the acknowledged-writes check.

import { describe, expect, test } from "bun:test";
import {
  anonymizeUnread,
  checkAcknowledgedWritesPresent,
  kvModel,
  type KvOperation,
  kvStep,
  type KvValue,
  unreadValue,
  validateHistory,
} from "../../src/check/kv_model.ts";
import { Prng } from "../../src/lib/prng.ts";

type Interval = [number, number | null];
const at = ([call, ret]: Interval) => ({ call, return: ret });
const get = (when: Interval, output: KvValue, key = "x"): KvOperation => ({
  clientId: 1,
  key,
  op: "get",
  output,
  ...at(when),
});
const put = (when: Interval, value: string, key = "x"): KvOperation => ({
  clientId: 2,
  key,
  op: "put",
  input: value,
  output: "ok",
  ...at(when),
});
const del = (when: Interval, deleted: boolean | "ok", key = "x"): KvOperation => ({
  clientId: 3,
  key,
  op: "delete",
  output: deleted,
  ...at(when),
});
const cas = (
  when: Interval,
  expected: KvValue,
  value: KvValue,
  output: KvOperation["output"],
  key = "x",
): KvOperation => ({
  clientId: 4,
  key,
  op: "cas",
  input: { expected, value },
  output: output as boolean,
  ...at(when),
});

describe("kvStep", () => {
  test("get fits only the value it read", () => {
    expect(kvStep("a", get([0, 1], "a"))).toBe("a");
    expect(kvStep("a", get([0, 1], "b"))).toBeUndefined();
    expect(kvStep(null, get([0, 1], null))).toBeNull();
    expect(kvStep("a", get([0, 1], null))).toBeUndefined();
  });

  test("put always applies", () => {
    expect(kvStep(null, put([0, 1], "a"))).toBe("a");
    expect(kvStep("b", put([0, 1], "a"))).toBe("a");
  });

  test("delete's reported outcome must match whether the key existed", () => {
    expect(kvStep("a", del([0, 1], true))).toBeNull();
    expect(kvStep(null, del([0, 1], true))).toBeUndefined();
    expect(kvStep(null, del([0, 1], false))).toBeNull();
    expect(kvStep("a", del([0, 1], false))).toBeUndefined();
    expect(kvStep("a", del([0, 1], "ok"))).toBeNull();
    expect(kvStep(null, del([0, 1], "ok"))).toBeNull();
  });

  test("cas succeeds exactly when the value is the expected one", () => {
    expect(kvStep("a", cas([0, 1], "a", "b", true))).toBe("b");
    expect(kvStep("a", cas([0, 1], "a", null, true))).toBeNull();
    expect(kvStep(null, cas([0, 1], null, "b", { ok: true }))).toBe("b");
    expect(kvStep("c", cas([0, 1], "a", "b", true))).toBeUndefined();
    expect(kvStep("c", cas([0, 1], "a", "b", false))).toBe("c");
    expect(kvStep("a", cas([0, 1], "a", "b", false))).toBeUndefined();
  });

  test("a failed cas that reports the current value must report the right one", () => {
    expect(kvStep("c", cas([0, 1], "a", "b", { ok: false, current: "c" }))).toBe("c");
    expect(kvStep("d", cas([0, 1], "a", "b", { ok: false, current: "c" }))).toBeUndefined();
    expect(kvStep(null, cas([0, 1], "a", "b", { ok: false, current: null }))).toBeNull();
  });

  test("an op with unknown outcome applies whatever output was recorded", () => {
    expect(kvStep("a", get([0, null], "zzz"))).toBe("a");
    expect(kvStep(null, del([0, null], true))).toBeNull();
    expect(kvStep("a", cas([0, Infinity], "a", "b", false))).toBe("b");
    expect(kvStep("c", cas([0, null], "a", "b", true))).toBe("c");
  });
});

describe("the facts kvModel declares to the search", () => {
  // The search prunes on these claims, so an untrue one would make it wrong. Check each
  // against kvStep on every state of a small universe, for many random ops.
  const values: KvValue[] = [null, "a", "b"];
  function randomOp(prng: Prng): KvOperation {
    const when: Interval = [0, prng.chance(0.25) ? prng.pick([null, Infinity]) : 1];
    const value = () => prng.pick(values);
    switch (prng.int(0, 4)) {
      case 0:
        return get(when, value());
      case 1:
        return put(when, prng.pick(["a", "b"]));
      case 2:
        return del(when, prng.pick([true, false, "ok"] as const));
      default:
        return cas(
          when,
          value(),
          value(),
          prng.pick([true, false, null, { ok: false, current: value() }, { ok: true }]),
        );
    }
  }

  test("readOnly, requires, produces, overwrites, blind and enabledBy agree with kvStep", () => {
    const prng = new Prng(5);
    const problems: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const op = randomOp(prng);
      const name = kvModel.describeOperation(op);
      const fits = values.filter((state) => kvStep(state, op) !== undefined);
      for (const state of fits) {
        const next = kvStep(state, op)!;
        if (kvModel.readOnly!(op) && next !== state) problems.push(`${name} is not read-only`);
        const required = kvModel.requires!(op);
        if (required !== undefined && state !== required) {
          problems.push(`${name} fits ${state} though it requires ${required}`);
        }
        const produced = kvModel.produces!(op);
        if (next !== state && next !== produced) {
          problems.push(`${name} leaves ${next}, not what it produces`);
        }
        if (kvModel.overwrites!(op) && next !== produced) {
          problems.push(`${name} does not always leave ${produced}`);
        }
      }
      if (kvModel.blind!(op)) {
        const results = new Set(values.map((state) => kvStep(state, op)));
        if (fits.length !== values.length || results.size !== 1) {
          problems.push(`${name} is not blind`);
        }
      }
      const enabler = kvModel.enabledBy!(op);
      const lost = op.return === null || op.return === Infinity;
      if (lost && !kvModel.readOnly!(op) && !kvModel.blind!(op) && enabler !== undefined) {
        for (const state of fits) {
          if (kvStep(state, op) !== state && state !== enabler) {
            problems.push(`${name} changes ${state} though only ${enabler} enables it`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
    expect(kvModel.hash(null)).not.toBe(kvModel.hash("a"));
    expect(kvModel.hash("a")).not.toBe(kvModel.hash("b"));
  });
});

describe("anonymizeUnread", () => {
  test("replaces written values no operation observes, and only those", () => {
    const history = [
      put([0, 1], "read"),
      put([0, 1], "unread"),
      get([2, 3], "read"),
      cas([2, 3], "expected", "also-unread", true),
      cas([2, 3], "x", "seen-by-cas", { ok: false, current: "seen-by-cas" }),
      put([4, null], "lost"),
    ];
    const { ops, originals } = anonymizeUnread(history);
    expect(ops.map((op) => op.op === "get" ? op.output : op.input)).toEqual([
      "read",
      unreadValue,
      "read",
      { expected: "expected", value: unreadValue },
      { expected: "x", value: "seen-by-cas" },
      unreadValue,
    ]);
    expect(originals.get(ops[1]!)).toBe(history[1]);
    expect(originals.get(ops[5]!)).toBe(history[5]);
    expect(originals.size).toBe(3);
  });

  test("leaves alone a history that uses the stand-in value itself", () => {
    const history = [put([0, 1], unreadValue), put([0, 1], "unread")];
    expect(anonymizeUnread(history).ops).toEqual(history);
  });
});

describe("validateHistory", () => {
  test("names every malformed operation", () => {
    const problems = validateHistory([
      get([0, 1], "a"),
      { clientId: 1, key: "x", op: "get", call: 0, return: 1 },
      put([NaN, 1], "a"),
      { ...put([0, 1], "a"), input: 7 } as unknown as KvOperation,
      { ...cas([0, 1], null, null, true), input: null } as unknown as KvOperation,
      { ...get([0, 1], null), op: "scan" } as unknown as KvOperation,
    ]);
    expect(problems).toEqual([
      'Operation 1 (get of key "x") returned but has no output',
      'Operation 2 (put of key "x") has a call time of NaN',
      'Operation 3 (put of key "x") has no string value',
      'Operation 4 (cas of key "x") needs an input of { expected, value }',
      'Operation 5 has an unknown op "scan"',
    ]);
  });

  test("accepts operations with unknown outcome and no output", () => {
    expect(validateHistory([
      { clientId: 1, key: "x", op: "get", call: 0, return: null },
      { clientId: 1, key: "x", op: "put", input: "a", call: 0, return: Infinity },
    ])).toEqual([]);
  });
});

describe("checkAcknowledgedWritesPresent", () => {
  const final = (entries: [string, KvValue][]) => new Map(entries);

  test("the last acknowledged write is in the final state", () => {
    const history = [put([0, 1], "a"), put([2, 3], "b"), get([4, 5], "b")];
    const report = checkAcknowledgedWritesPresent(history, final([["x", "b"]]));
    expect(report).toEqual({ ok: true, lost: [], checkedKeys: 1, unchecked: [] });
  });

  test("a final state without the last acknowledged write reports it lost", () => {
    const history = [put([0, 1], "a"), put([2, 3], "b")];
    const report = checkAcknowledgedWritesPresent(history, final([["x", "a"]]));
    expect(report.ok).toBe(false);
    expect(report.lost).toEqual([{ key: "x", final: "a", possible: ["b"], writes: [history[1]!] }]);
  });

  test("either of two concurrent acknowledged writes may be the final value", () => {
    const history = [put([0, 1], "a"), put([2, 10], "b"), put([3, 9], "c")];
    for (const value of ["b", "c"]) {
      expect(checkAcknowledgedWritesPresent(history, final([["x", value]])).ok).toBe(true);
    }
    const report = checkAcknowledgedWritesPresent(history, final([["x", "a"]]));
    expect(report.lost[0]).toMatchObject({ possible: ["b", "c"] });
    expect(report.lost[0]!.writes).toHaveLength(2);
  });

  test("a write with unknown outcome may or may not be in the final state", () => {
    const history = [put([0, 1], "a"), put([2, null], "b")];
    expect(checkAcknowledgedWritesPresent(history, final([["x", "a"]])).ok).toBe(true);
    expect(checkAcknowledgedWritesPresent(history, final([["x", "b"]])).ok).toBe(true);
    expect(checkAcknowledgedWritesPresent(history, final([["x", null]])).ok).toBe(false);
  });

  test("deletes and successful cas count as writes; failed cas does not", () => {
    const deleted = [put([0, 1], "a"), del([2, 3], true)];
    expect(checkAcknowledgedWritesPresent(deleted, final([["x", null]])).ok).toBe(true);
    expect(checkAcknowledgedWritesPresent(deleted, final([["x", "a"]])).ok).toBe(false);
    const swapped = [put([0, 1], "a"), cas([2, 3], "a", "b", true), cas([4, 5], "a", "c", false)];
    expect(checkAcknowledgedWritesPresent(swapped, final([["x", "b"]])).ok).toBe(true);
    expect(checkAcknowledgedWritesPresent(swapped, final([["x", "c"]])).ok).toBe(false);
  });

  test("a key never written must be absent; one the final state omits is unchecked", () => {
    const history = [get([0, 1], null, "read-only"), put([0, 1], "a", "unread")];
    const report = checkAcknowledgedWritesPresent(history, final([["read-only", "ghost"]]));
    expect(report.lost).toEqual([{
      key: "read-only",
      final: "ghost",
      possible: [null],
      writes: [],
    }]);
    expect(report.unchecked).toEqual(["unread"]);
    expect(report.checkedKeys).toBe(1);
    const stray = checkAcknowledgedWritesPresent([], final([["stray", "value"]]));
    expect(stray.lost.map((lost) => lost.key)).toEqual(["stray"]);
  });
});
