// The service host (src/node/service_host.ts): the context apply sees (the log's time, a
// seeded random, timers), timers fired by log entries, and a throwing apply rolled back.

import { describe, expect, test } from "bun:test";
import type { Entry } from "../../src/consensus/types.ts";
import {
  decodeHostState,
  encodeCommandEntry,
  encodeHostState,
  encodeTimerEntry,
  type HostOutcome,
  type HostState,
  ServiceFatalError,
  ServiceHost,
  stampedTime,
  timersMax,
} from "../../src/node/service_host.ts";
import type { ApplyContext, Service } from "../../src/service/service.ts";
import { decodeSessionResult, encodeEnvelope, SessionService } from "../../src/service/sessions.ts";

const utf8 = new TextEncoder();
const text = new TextDecoder();

/**
 * Script is a test service: a command is JSON naming what to do. It records everything it
 * saw so tests can compare members.
 */
class Script implements Service {
  counter = 0;
  seen: Array<{ index: number; timeMs: number; random: number }> = [];
  fired: Array<{ id: string; index: number; timeMs: number }> = [];
  failRestore = false;

  apply(command: Uint8Array, context: ApplyContext): Uint8Array {
    const op = JSON.parse(text.decode(command)) as {
      op: string;
      id?: string;
      at?: number;
      by?: number;
    };
    this.seen.push({ index: context.index, timeMs: context.timeMs, random: context.random() });
    switch (op.op) {
      case "add":
        this.counter += op.by ?? 1;
        break;
      case "schedule":
        context.schedule(op.id!, op.at!);
        break;
      case "cancel":
        return utf8.encode(String(context.cancel(op.id!)));
      case "half-then-throw":
        this.counter += 1000;
        context.schedule("from-failed", 1);
        throw new RangeError("boom");
    }
    return utf8.encode(String(this.counter));
  }

  onTimer(id: string, context: ApplyContext): void {
    this.fired.push({ id, index: context.index, timeMs: context.timeMs });
    if (id === "bad") {
      this.counter += 1;
      throw new Error("timer boom");
    }
    if (id === "again") context.schedule("again", context.timeMs + 10);
  }

  snapshot(): Uint8Array {
    return utf8.encode(JSON.stringify({ counter: this.counter }));
  }

  restore(data: Uint8Array): void {
    if (this.failRestore) throw new Error("cannot read this");
    this.counter = (JSON.parse(text.decode(data)) as { counter: number }).counter;
  }
}

/** Member is a service host fed from a shared log, with the log as its rollback source. */
class Member {
  readonly script = new Script();
  readonly service = new SessionService(this.script);
  readonly host: ServiceHost;
  readonly log: Entry[] = [];
  base: { index: number; service: Uint8Array; state: HostState };

  constructor() {
    this.base = { index: 0, service: this.service.snapshot(), state: { timeMs: 0, timers: [] } };
    this.host = new ServiceHost(this.service, {
      base: () => this.base,
      entry: (index) => this.log[index - 1],
    });
  }

  apply(entry: Entry): HostOutcome {
    this.log.push(entry);
    return this.host.apply(entry);
  }

  snapshotNow(): void {
    this.base = {
      index: this.log.length,
      service: this.service.snapshot(),
      state: this.host.state(),
    };
    this.host.forgetFailuresThrough(this.base.index);
  }
}

let nextIndex = 1;
function command(op: object, timeMs: number, term = 1): Entry {
  return {
    index: nextIndex++,
    term,
    kind: "command",
    data: encodeCommandEntry(timeMs, encodeEnvelope(undefined, utf8.encode(JSON.stringify(op)))),
  };
}

function result(outcome: HostOutcome): string {
  if (outcome.type !== "result") throw new Error(`expected a result, got ${outcome.type}`);
  const decoded = decodeSessionResult(outcome.result);
  if (decoded.type === "rejected") throw new Error(decoded.message);
  return text.decode(decoded.result);
}

function reset(): void {
  nextIndex = 1;
}

describe("the apply context", () => {
  test("the log's time is the leader's stamp and never goes back", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "add" }, 1000));
    member.apply(command({ op: "add" }, 900)); // a new leader with a slower clock
    member.apply(command({ op: "add" }, 1500));
    expect(member.script.seen.map((s) => s.timeMs)).toEqual([1000, 1000, 1500]);
    expect(member.host.timeMs).toBe(1500);
  });

  test("entries written before stamping apply at the log's time so far", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "add" }, 700));
    const legacy: Entry = {
      index: nextIndex++,
      term: 1,
      kind: "command",
      data: encodeEnvelope(undefined, utf8.encode('{"op":"add"}')),
    };
    expect(stampedTime(legacy.data)).toBeUndefined();
    expect(result(member.apply(legacy))).toBe("2");
    expect(member.script.seen[1]!.timeMs).toBe(700);
  });

  test("random draws the same numbers for the same entry, different ones across entries", () => {
    reset();
    const one = new Member();
    const two = new Member();
    const entries = [command({ op: "add" }, 1), command({ op: "add" }, 2, 2)];
    for (const entry of entries) {
      one.apply(entry);
      two.apply(entry);
    }
    expect(one.script.seen.map((s) => s.random)).toEqual(two.script.seen.map((s) => s.random));
    expect(one.script.seen[0]!.random).not.toBe(one.script.seen[1]!.random);
  });

  test("a context kept past its apply refuses to be used", () => {
    reset();
    let kept: ApplyContext | undefined;
    const host = new ServiceHost(
      {
        apply(_command, context) {
          kept = context;
          return new Uint8Array(0);
        },
        snapshot: () => new Uint8Array(0),
        restore: () => {},
      },
      {
        base: () => ({ index: 0, service: new Uint8Array(0), state: { timeMs: 0, timers: [] } }),
        entry: () => undefined,
      },
    );
    host.apply(command({}, 1));
    expect(() => kept!.schedule("late", 5)).toThrow("after its apply returned");
  });
});

describe("timers", () => {
  test("a timer fires once, at the first fired entry; duplicates and stale ones are no-ops", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "schedule", id: "t", at: 5000 }, 1000));
    const timer = member.host.timer("t")!;
    expect(timer).toEqual({ id: "t", deadlineMs: 5000, generation: 1 });
    expect(member.host.dueTimers(4999, 10, () => true)).toEqual([]);
    expect(member.host.dueTimers(5000, 10, () => true)).toEqual([timer]);
    const fire = (timeMs: number): Entry => ({
      index: nextIndex++,
      term: 1,
      kind: "command",
      data: encodeTimerEntry(timeMs, timer),
    });
    expect(member.apply(fire(5001))).toMatchObject({ type: "timer", fired: true });
    // A new leader that had not seen the first firing proposes it again.
    expect(member.apply(fire(5002))).toMatchObject({ type: "timer", fired: false });
    expect(member.script.fired).toEqual([{ id: "t", index: 2, timeMs: 5001 }]);
    expect(member.host.timerCount).toBe(0);
  });

  test("a rescheduled or cancelled timer is not fired by an entry for its old deadline", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "schedule", id: "t", at: 100 }, 10));
    const old = member.host.timer("t")!;
    member.apply(command({ op: "schedule", id: "t", at: 100 }, 20)); // same deadline, new generation
    member.apply({
      index: nextIndex++,
      term: 1,
      kind: "command",
      data: encodeTimerEntry(150, old),
    });
    expect(member.script.fired).toEqual([]);
    expect(result(member.apply(command({ op: "cancel", id: "t" }, 160)))).toBe("true");
    expect(result(member.apply(command({ op: "cancel", id: "t" }, 170)))).toBe("false");
    expect(member.host.timerCount).toBe(0);
  });

  test("onTimer may schedule its own id again", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "schedule", id: "again", at: 10 }, 1));
    const first = member.host.timer("again")!;
    member.apply({
      index: nextIndex++,
      term: 1,
      kind: "command",
      data: encodeTimerEntry(10, first),
    });
    expect(member.host.timer("again")).toEqual({ id: "again", deadlineMs: 20, generation: 2 });
  });

  test("the timer table round-trips through the snapshot section", () => {
    const state: HostState = {
      timeMs: 123,
      timers: [
        { id: "a", deadlineMs: 5, generation: 1 },
        { id: "ü", deadlineMs: 2 ** 40, generation: 7 },
      ],
    };
    expect(decodeHostState(encodeHostState(state))).toEqual(state);
    expect(() => decodeHostState(new Uint8Array(5))).toThrow(/^Snapshot timer table/);
    const bad = encodeHostState(state);
    expect(() => decodeHostState(bad.subarray(0, bad.length - 1))).toThrow(/malformed/);
  });

  test("schedule past timersMax throws, and the apply fails without scheduling anything", () => {
    reset();
    let calls = 0;
    const host = new ServiceHost(
      {
        apply(_command, context) {
          calls++;
          for (let i = 0; i <= timersMax; i++) context.schedule(`t${i}`, 1);
          return new Uint8Array(0);
        },
        snapshot: () => new Uint8Array(0),
        restore: () => {},
      },
      {
        base: () => ({ index: 0, service: new Uint8Array(0), state: { timeMs: 0, timers: [] } }),
        entry: () => undefined,
      },
    );
    const outcome = host.apply(command({}, 1));
    expect(outcome.type).toBe("error");
    expect((outcome as { message: string }).message).toContain("the maximum");
    expect(calls).toBe(1);
    expect(host.timerCount).toBe(0);
  });
});

describe("a throwing apply", () => {
  test("is answered with its message and leaves the state as before the entry", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "add", by: 5 }, 1));
    member.apply(command({ op: "schedule", id: "keep", at: 99 }, 2));
    member.snapshotNow();
    member.apply(command({ op: "add", by: 2 }, 3));
    const outcome = member.apply(command({ op: "half-then-throw" }, 4));
    expect(outcome).toEqual({
      type: "error",
      message: "Service failed at index 4: RangeError: boom",
    });
    // The half-applied +1000 is gone, +2 after the snapshot was re-applied, the timer the
    // failed apply scheduled was dropped and the older one kept; time still moved on.
    expect(member.script.counter).toBe(7);
    expect(member.host.timer("from-failed")).toBeUndefined();
    expect(member.host.timer("keep")).toBeDefined();
    expect(member.host.timeMs).toBe(4);
    expect(result(member.apply(command({ op: "add" }, 5)))).toBe("8");
  });

  test("members that fail the same entry stay equal, also after a later rollback", () => {
    reset();
    const one = new Member();
    const two = new Member();
    const entries = [
      command({ op: "add" }, 1),
      command({ op: "half-then-throw" }, 2),
      command({ op: "add" }, 3),
      command({ op: "half-then-throw" }, 4), // re-applies 1..3, leaving out 2 again
      command({ op: "add" }, 5),
    ];
    const outcomes = entries.map((entry) => [one.apply(entry), two.apply(entry)]);
    for (const [a, b] of outcomes) expect(a).toEqual(b);
    expect(one.script.counter).toBe(3);
    expect(two.service.snapshot()).toEqual(one.service.snapshot());
  });

  test("a throwing onTimer is rolled back but the timer is gone: it does not fire forever", () => {
    reset();
    const member = new Member();
    member.apply(command({ op: "schedule", id: "bad", at: 10 }, 1));
    const timer = member.host.timer("bad")!;
    const outcome = member.apply({
      index: nextIndex++,
      term: 1,
      kind: "command",
      data: encodeTimerEntry(10, timer),
    });
    expect(outcome).toMatchObject({ type: "error", timer });
    expect(member.script.counter).toBe(0);
    expect(member.host.timerCount).toBe(0);
  });

  test("a service that cannot restore the rollback base is fatal", () => {
    reset();
    const member = new Member();
    member.script.failRestore = true;
    expect(() => member.apply(command({ op: "half-then-throw" }, 1))).toThrow(ServiceFatalError);
  });
});
