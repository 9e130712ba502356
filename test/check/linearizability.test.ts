// Hand-written histories, each small enough to reason about by eye, with the verdict the
// checker must reach.

import { describe, expect, test } from "bun:test";
import { checkHistory, checkOperations, type Model } from "../../src/check/linearizability.ts";
import type { KvCasOutput, KvOperation, KvValue } from "../../src/check/kv_model.ts";

// Builders: times are [call, return]; a return of null means the outcome is unknown.
type Interval = [number, number | null];
const at = ([call, ret]: Interval) => ({ call, return: ret });

function get(when: Interval, output: KvValue, clientId = 1, key = "x"): KvOperation {
  return { clientId, key, op: "get", output, ...at(when) };
}
function put(when: Interval, value: string, clientId = 2, key = "x"): KvOperation {
  return { clientId, key, op: "put", input: value, output: "ok", ...at(when) };
}
function del(when: Interval, deleted: boolean | "ok", clientId = 3, key = "x"): KvOperation {
  return { clientId, key, op: "delete", output: deleted, ...at(when) };
}
function cas(
  when: Interval,
  expected: KvValue,
  value: KvValue,
  output: boolean | KvCasOutput,
  clientId = 4,
  key = "x",
): KvOperation {
  return { clientId, key, op: "cas", input: { expected, value }, output, ...at(when) };
}

// verdict checks a history twice, with and without the refutation before the search, and
// insists that both agree.
function verdict(history: KvOperation[]) {
  const result = checkHistory(history, { timeoutMs: 5_000 }).result;
  expect(checkHistory(history, { timeoutMs: 5_000, refuteFirst: false }).result).toBe(result);
  return result;
}

function counterexample(history: KvOperation[], refuteFirst = true, key = "x") {
  const report = checkHistory(history, { timeoutMs: 5_000, refuteFirst });
  expect(report.result).toBe("illegal");
  const partition = report.perKey.get(key);
  expect(partition?.result).toBe("illegal");
  return partition!.counterexample!;
}

describe("linearizable histories", () => {
  test("an empty history is linearizable", () => {
    const report = checkHistory([]);
    expect(report.result).toBe("ok");
    expect(report.perKey.size).toBe(0);
  });

  test("a sequential history of every operation is linearizable", () => {
    const history = [
      get([0, 1], null),
      put([2, 3], "a"),
      get([4, 5], "a"),
      put([6, 7], "b"),
      get([8, 9], "b"),
      del([10, 11], true),
      get([12, 13], null),
      del([14, 15], false),
      cas([16, 17], null, "c", true),
      cas([18, 19], "b", "d", { ok: false, current: "c" }),
      get([20, 21], "c"),
    ];
    const report = checkHistory(history);
    expect(report.result).toBe("ok");
    expect(report.perKey.get("x")).toMatchObject({ result: "ok", ops: 11 });
  });

  test("reads concurrent with two overlapping puts may see either value, or none yet", () => {
    const puts = [put([0, 10], "a", 1), put([1, 9], "b", 2)];
    expect(verdict([...puts, get([11, 12], "a", 3)])).toBe("ok");
    expect(verdict([...puts, get([11, 12], "b", 3)])).toBe("ok");
    expect(verdict([...puts, get([2, 3], null, 3)])).toBe("ok");
    // The reads may even disagree, as long as one order explains both: b then a.
    expect(verdict([...puts, get([2, 3], "b", 3), get([4, 5], "a", 4)])).toBe("ok");
  });

  test("operations that touch in time count as concurrent", () => {
    // The get is called at the instant the put returns; either order is allowed.
    expect(verdict([put([0, 5], "a"), get([5, 6], null)])).toBe("ok");
  });

  test("a chain of cas operations where concurrent losers fail is linearizable", () => {
    const history = [
      put([0, 1], "0"),
      cas([2, 6], "0", "1", true, 1),
      cas([3, 7], "0", "2", { ok: false, current: "1" }, 2),
      cas([8, 9], "1", "3", true, 1),
      cas([8, 10], "1", "4", false, 2),
      get([11, 12], "3"),
      cas([13, 14], "3", null, true, 1),
      get([15, 16], null),
    ];
    expect(verdict(history)).toBe("ok");
  });

  test("a delete concurrent with a put may land on either side of it", () => {
    expect(verdict([put([0, 10], "a"), del([1, 9], true), get([11, 12], null)])).toBe("ok");
    expect(verdict([put([0, 10], "a"), del([1, 9], false), get([11, 12], "a")])).toBe("ok");
    expect(verdict([put([0, 1], "a"), del([2, 3], "ok"), get([4, 5], null)])).toBe("ok");
  });

  test("a put with unknown outcome may have taken effect", () => {
    const history = [put([0, 1], "a"), put([2, null], "b"), get([5, 6], "b")];
    expect(verdict(history)).toBe("ok");
  });

  test("a put with unknown outcome may never take effect", () => {
    const history = [put([0, 1], "a"), put([2, null], "b"), get([5, 6], "a"), get([7, 8], "a")];
    expect(verdict(history)).toBe("ok");
  });

  test("a put with unknown outcome may take effect long after its client gave up", () => {
    const history = [put([0, 1], "a"), put([2, null], "b"), get([50, 51], "a"), get([90, 91], "b")];
    expect(verdict(history)).toBe("ok");
  });

  test("a chain of timed-out cas operations may explain a later read", () => {
    const history = [
      put([0, 1], "a"),
      cas([2, null], "a", "b", true, 1),
      cas([3, null], "b", "c", false, 2),
      get([10, 11], "c"),
    ];
    expect(verdict(history)).toBe("ok");
    // Not if the second cas was only sent after the read returned.
    expect(verdict([...history.slice(0, 2), cas([12, null], "b", "c", false, 2), history[3]!]))
      .toBe("illegal");
  });

  test("a delete that found a value may need a timed-out put to have happened", () => {
    const history = [
      put([0, 1], "a"),
      del([2, 3], true),
      put([4, null], "b"),
      del([10, 11], true),
    ];
    expect(verdict(history)).toBe("ok");
    expect(verdict([...history.slice(0, 2), put([12, null], "b"), history[3]!])).toBe("illegal");
  });

  test("the recorded output of an operation with unknown outcome is ignored", () => {
    const history: KvOperation[] = [
      put([0, 1], "a"),
      { clientId: 5, key: "x", op: "get", output: "garbage", call: 2, return: null },
      {
        clientId: 6,
        key: "x",
        op: "cas",
        input: { expected: "a", value: "b" },
        output: false,
        call: 2,
        return: Infinity,
      },
      get([5, 6], "b"),
    ];
    expect(verdict(history)).toBe("ok");
  });

  test("keys are independent registers", () => {
    const history = [
      put([0, 10], "a", 1, "x"),
      put([0, 10], "b", 2, "y"),
      get([11, 12], "a", 3, "x"),
      get([11, 12], "b", 3, "y"),
      get([13, 14], null, 3, "z"),
    ];
    const report = checkHistory(history);
    expect(report.result).toBe("ok");
    expect([...report.perKey.keys()].sort()).toEqual(["x", "y", "z"]);
  });
});

describe("histories that are not linearizable", () => {
  const stale = [put([0, 1], "a"), put([2, 3], "b"), get([4, 5], "a")];

  test("a stale read: a read after a completed write sees the value before it", () => {
    const found = counterexample(stale);
    expect(found.blocked).toMatchObject({ op: "get", output: "a" });
    expect(found.involved).toEqual(stale);
    expect(found.explanation).toBe(
      'Key "x": get() -> "a" [client 1, 4..5] cannot take effect in any order: it needs a ' +
        'state where the value is "a"; only put("a") -> ok [client 2, 0..1] could produce it ' +
        'in time, but put("b") -> ok [client 2, 2..3], which always leaves another state, was ' +
        "called after that returned and returned before it was called.",
    );
  });

  test("the search alone explains a stale read with the longest linearizable prefix", () => {
    const found = counterexample(stale, false);
    expect(found.blocked).toMatchObject({ op: "get", output: "a" });
    expect(found.linearized.map((op) => op.op === "put" && op.input)).toEqual(["a", "b"]);
    // No operation reads "b", so the check sees it as one anonymous unread value.
    expect(found.state).toBe("the value is one no operation read");
    expect(found.explanation).toContain('(last changed by put("b") -> ok [client 2, 2..3])');
    expect(found.involved.map((op) => op.op)).toEqual(["put", "get"]);
    expect(found.explanation).toContain('Key "x"');
    expect(found.explanation).toContain(
      'it read "a" but the value was one no operation read, and nothing left can produce a ' +
        'state where the value is "a"',
    );
  });

  test("a lost write: a completed put is never seen and later reads see the older value", () => {
    const history = [
      put([0, 1], "a", 1),
      get([2, 3], "a", 2),
      put([4, 5], "b", 1),
      get([4.5, 7], "a", 2),
      get([8, 9], "a", 3),
      get([10, 11], "a", 2),
    ];
    for (const refuteFirst of [true, false]) {
      expect(counterexample(history, refuteFirst).blocked).toMatchObject({ op: "get", call: 8 });
    }
  });

  test("a read of a value nobody wrote", () => {
    const history = [put([0, 1], "a"), get([2, 3], "z")];
    const found = counterexample(history);
    expect(found.blocked).toMatchObject({ op: "get", output: "z" });
    expect(found.explanation).toContain("nothing called before it returned produces that state");
    const searched = counterexample(history, false);
    expect(searched.explanation).toContain(
      'it read "z" but the value was absent, and nothing left can produce a state where the ' +
        'value is "z"',
    );
  });

  test("a read of a value written only after the read returned", () => {
    expect(verdict([get([0, 1], "a"), put([2, 3], "a")])).toBe("illegal");
  });

  test("two cas operations succeed from the same expected value", () => {
    const history = [
      put([0, 1], "0"),
      cas([2, 6], "0", "1", true, 1),
      cas([3, 7], "0", "2", true, 2),
    ];
    const found = counterexample(history);
    expect(found.pending.some(({ why }) => why.includes("it succeeded but the value was"))).toBe(
      true,
    );
    expect(found.involved.filter((op) => op.op === "cas")).toHaveLength(2);
  });

  test("a cas fails although the value was the expected one", () => {
    const history = [put([0, 1], "0"), cas([2, 3], "0", "1", false), get([4, 5], "0")];
    expect(verdict(history)).toBe("illegal");
    const found = counterexample(history, false);
    expect(found.explanation).toContain('it failed but the value was the expected "0"');
  });

  test("a failed cas reports a current value the key never had at that time", () => {
    const history = [
      put([0, 1], "0"),
      put([2, 3], "1"),
      cas([4, 5], "2", "3", { ok: false, current: "0" }),
    ];
    expect(verdict(history)).toBe("illegal");
  });

  test("a read goes back in time: sequential reads see the new value, then the old", () => {
    const history = [
      put([0, 1], "a", 1),
      put([2, 20], "b", 2),
      get([3, 4], "b", 3),
      get([5, 6], "a", 3),
    ];
    expect(verdict(history)).toBe("illegal");
    // The same reads the other way round are fine: b had not yet taken effect.
    expect(
      verdict([
        put([0, 1], "a", 1),
        put([2, 20], "b", 2),
        get([3, 4], "a", 3),
        get([5, 6], "b", 3),
      ]),
    )
      .toBe("ok");
  });

  test("reads seeing a then b then a again of two concurrent puts", () => {
    const history = [
      put([0, 10], "a", 1),
      put([1, 9], "b", 2),
      get([2, 3], "a", 3),
      get([4, 5], "b", 3),
      get([6, 7], "a", 3),
    ];
    expect(verdict(history)).toBe("illegal");
  });

  test("a delete reports it removed a key that was never written", () => {
    expect(verdict([del([0, 1], true)])).toBe("illegal");
  });

  test("more deletes found a value than timed-out puts could have written", () => {
    // 200 puts time out; 201 deletes, one after another, each report removing a value.
    const history: KvOperation[] = [];
    for (let i = 0; i < 200; i++) history.push(put([i * 10, null], `lost-${i}`, 100 + i));
    for (let i = 0; i <= 200; i++) history.push(del([i * 10 + 5, i * 10 + 6], true, 1));
    const report = checkHistory(history, { timeoutMs: 5_000 });
    expect(report.result).toBe("illegal");
    expect(report.perKey.get("x")!.counterexample!.blocked).toBe(history.at(-1)!);
    // With one delete fewer, each delete can have removed a different lost value.
    expect(verdict(history.slice(0, -1))).toBe("ok");
  });

  test("a put whose outcome is unknown cannot undo a later completed write", () => {
    const history = [
      put([0, null], "a", 1),
      put([2, 3], "b", 2),
      get([4, 5], "b", 3),
      get([6, 7], "a", 3),
      get([8, 9], "b", 3),
    ];
    expect(verdict(history)).toBe("illegal");
  });

  test("one bad key makes the history illegal and the others still report ok", () => {
    const history = [
      put([0, 1], "a", 1, "good"),
      get([2, 3], "a", 1, "good"),
      put([0, 1], "a", 2, "bad"),
      get([2, 3], "b", 2, "bad"),
    ];
    const report = checkHistory(history);
    expect(report.result).toBe("illegal");
    expect(report.perKey.get("good")?.result).toBe("ok");
    expect(report.perKey.get("bad")?.result).toBe("illegal");
  });
});

describe("the time bound", () => {
  // Twenty-four puts that all overlap, then two deletes that each report removing a value:
  // the second is impossible, but a delete's output names no one value, so nothing prunes
  // the search, which visits every subset of the puts with each last value, 24 * 2^23 pairs.
  function pathological(): KvOperation[] {
    const history: KvOperation[] = [];
    for (let i = 0; i < 24; i++) history.push(put([i * 0.01, 100 + i * 0.01], `v${i}`, i));
    history.push(del([200, 201], true, 98), del([202, 203], true, 99));
    return history;
  }

  test("a smaller pathological history is illegal, as the search proves", () => {
    const history = pathological().slice(18);
    expect(history).toHaveLength(8);
    expect(verdict(history)).toBe("illegal");
  });

  test("a pathological history reports unknown within the bound instead of hanging", () => {
    const started = performance.now();
    const report = checkHistory(pathological(), { timeoutMs: 200 });
    const elapsedMs = performance.now() - started;
    expect(report.result).toBe("unknown");
    expect(report.perKey.get("x")).toMatchObject({
      result: "unknown",
      reason: "time bound reached",
    });
    expect(report.perKey.get("x")!.explored).toBeGreaterThan(1000);
    expect(elapsedMs).toBeLessThan(200 + 300);
  });

  test("the time bound follows an injected clock", () => {
    let ticks = 0;
    const report = checkHistory(pathological(), { timeoutMs: 50, now: () => ticks++ });
    expect(report.result).toBe("unknown");
    // The clock is read every 1024 search steps, so 50 ticks allow about 50k steps.
    expect(report.perKey.get("x")!.explored).toBeLessThan(60 * 1024);
  });

  test("the memo limit also reports unknown", () => {
    const report = checkHistory(pathological(), { timeoutMs: 60_000, memoEntriesMax: 5_000 });
    expect(report.perKey.get("x")).toMatchObject({
      result: "unknown",
      reason: "memo exceeded 5000 entries",
    });
  });

  test("keys left when the time runs out are unknown, and an illegal key still wins", () => {
    const history = [
      ...pathological(),
      put([0, 1], "a", 1, "bad"),
      get([2, 3], "b", 2, "bad"),
    ];
    const report = checkHistory(history, { timeoutMs: 100 });
    expect(report.result).toBe("illegal");
    expect(report.perKey.get("bad")?.result).toBe("illegal");
    expect(report.perKey.get("x")?.result).toBe("unknown");
  });
});

describe("input validation", () => {
  test("a malformed history is refused with the operation named", () => {
    expect(() => checkHistory([get([5, 4], null)])).toThrow(
      'Operation 0 (get of key "x") returns at 4, before its call at 5',
    );
    const noOutput: KvOperation = { clientId: 1, key: "x", op: "get", call: 0, return: 1 };
    expect(() => checkHistory([noOutput, noOutput])).toThrow(
      "returned but has no output (and 1 more problems)",
    );
  });
});

describe("checkOperations with another model", () => {
  // A counter whose ops add a delta and report the total: a model unlike the kv one.
  interface CounterOp {
    call: number;
    return: number | null;
    delta: number;
    total: number;
  }
  const counter: Model<number, CounterOp> = {
    init: () => 0,
    step: (state, op) =>
      op.return === null || state + op.delta === op.total ? state + op.delta : undefined,
    hash: (state) => state,
    equal: (a, b) => a === b,
    describeOperation: (op) => `add(${op.delta}) -> ${op.total}`,
    describeState: (state) => `the total is ${state}`,
  };
  const check = (ops: CounterOp[]) =>
    checkOperations(counter, ops, { deadline: Infinity, now: () => 0 }).result;

  test("concurrent additions in either order are linearizable", () => {
    expect(check([
      { call: 0, return: 10, delta: 1, total: 3 },
      { call: 1, return: 9, delta: 2, total: 2 },
    ])).toBe("ok");
  });

  test("a total no order produces is flagged", () => {
    expect(check([
      { call: 0, return: 1, delta: 1, total: 1 },
      { call: 2, return: 3, delta: 2, total: 2 },
    ])).toBe("illegal");
  });
});
