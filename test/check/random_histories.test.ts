// Random histories with a known answer. A generator simulates clients against atomic
// registers: each operation takes effect at one instant inside its [call, return] interval,
// so the history is linearizable by construction. Mutating a read to a value it provably
// could not see makes it illegal. Small random histories are also checked against a brute
// force search over every order.

import { describe, expect, test } from "bun:test";
import { checkHistory, checkOperations } from "../../src/check/linearizability.ts";
import { kvModel, type KvOperation, kvStep, type KvValue } from "../../src/check/kv_model.ts";
import { Prng } from "../../src/lib/prng.ts";

interface GeneratorOptions {
  clients: number;
  opsPerClient: number;
  keys: number;
  /** unknownChance is the chance an operation's outcome is lost (timeout). */
  unknownChance: number;
  /** durationMax is the longest operation, in the same units as the gaps between them. */
  durationMax: number;
}

function known(op: KvOperation): boolean {
  return op.return !== null && op.return !== Infinity;
}

/**
 * generateHistory simulates clients against atomic registers. Each client runs its ops one
 * after another; an op takes effect at a random instant inside its interval (an op with
 * unknown outcome: at a random instant after its call, possibly after the client gave up,
 * or never). Outputs are what the register returned at that instant.
 */
function generateHistory(seed: number, options: GeneratorOptions): KvOperation[] {
  const prng = new Prng(seed);
  interface Planned {
    op: KvOperation;
    /** effectAt is when it takes effect; undefined: never. */
    effectAt: number | undefined;
  }
  const planned: Planned[] = [];
  for (let client = 0; client < options.clients; client++) {
    let time = prng.next() * 3;
    for (let i = 0; i < options.opsPerClient; i++) {
      const call = time + prng.next() * 2;
      const duration = 0.01 + prng.next() * options.durationMax;
      const lost = prng.chance(options.unknownChance);
      const key = `k${prng.int(0, options.keys)}`;
      const value = `c${client}-${i}`;
      const roll = prng.next();
      // Inputs of cas are filled in when it takes effect (below); outputs likewise.
      const op: KvOperation = roll < 0.4
        ? { clientId: client, key, op: "get", call, return: call + duration }
        : roll < 0.65
        ? { clientId: client, key, op: "put", input: value, call, return: call + duration }
        : roll < 0.75
        ? { clientId: client, key, op: "delete", call, return: call + duration }
        : {
          clientId: client,
          key,
          op: "cas",
          input: { expected: null, value: prng.chance(0.1) ? null : value },
          call,
          return: call + duration,
        };
      let effectAt: number | undefined = call + prng.next() * duration;
      if (lost) {
        op.return = prng.chance(0.5) ? null : Infinity;
        effectAt = prng.chance(0.5) ? call + prng.next() * duration * 3 : undefined;
      }
      planned.push({ op, effectAt });
      time = call + duration;
    }
  }
  const registers = new Map<string, KvValue>();
  const written = new Map<string, string[]>();
  const effective = planned.filter((p) => p.effectAt !== undefined)
    .sort((a, b) => a.effectAt! - b.effectAt!);
  for (const { op } of effective) {
    const state = registers.get(op.key) ?? null;
    switch (op.op) {
      case "get":
        op.output = state;
        break;
      case "put":
        op.output = "ok";
        registers.set(op.key, op.input);
        break;
      case "delete":
        op.output = prng.chance(0.8) ? state !== null : "ok";
        registers.set(op.key, null);
        break;
      case "cas": {
        // Usually expect the current value, so that many cas operations succeed.
        const history = written.get(op.key) ?? [];
        op.input.expected = prng.chance(0.6) || history.length === 0
          ? state
          : prng.chance(0.2)
          ? null
          : prng.pick(history.slice(-3));
        const ok = op.input.expected === state;
        op.output = ok ? true : prng.chance(0.5) ? { ok, current: state } : false;
        if (ok) registers.set(op.key, op.input.value);
        break;
      }
    }
    if ((op.op === "put" || op.op === "cas") && op.output !== undefined) {
      const value = op.op === "put" ? op.input : op.input.value;
      if (value !== null) {
        const values = written.get(op.key) ?? [];
        values.push(value);
        written.set(op.key, values);
      }
    }
  }
  // Lost operations keep no output worth trusting: give some a wrong one to prove it ignored.
  for (const { op, effectAt } of planned) {
    if (known(op)) continue;
    if (op.op === "get") op.output = "garbage";
    if (op.op === "cas" && effectAt === undefined) op.output = prng.chance(0.5);
  }
  // Lost ops that never took effect still need a cas expected value; any will do.
  return planned.map((p) => p.op);
}

/** definitelyWrote: a put that returned, or a cas that reported success. */
function definitelyWrote(op: KvOperation): boolean {
  if (!known(op)) return false;
  if (op.op === "put" || op.op === "delete") return true;
  if (op.op !== "cas") return false;
  return op.output === true || (typeof op.output === "object" && op.output?.ok === true);
}

/**
 * unseeableValues lists written values `read` provably could not have returned (values are
 * unique): written by an op called after the read returned, written by a cas that failed,
 * or written by an op that definitely took effect and was then definitely overwritten by an
 * op that returned before the read was called.
 */
function unseeableValues(history: KvOperation[], read: KvOperation): string[] {
  const values: string[] = [];
  for (const writer of history) {
    if (writer.key !== read.key) continue;
    const value = writer.op === "put"
      ? writer.input
      : writer.op === "cas"
      ? writer.input.value
      : null;
    if (value === null) continue;
    if (writer.call > read.return!) {
      values.push(value);
    } else if (writer.op === "cas" && known(writer) && !definitelyWrote(writer)) {
      values.push(value);
    } else if (
      definitelyWrote(writer) &&
      history.some((later) =>
        later !== writer && later.key === read.key && definitelyWrote(later) &&
        later.call > writer.return! && later.return! < read.call
      )
    ) {
      values.push(value);
    }
  }
  return values;
}

/** mutate changes one read to a value it could not see; returns the key and the kind. */
function mutate(history: KvOperation[], prng: Prng): { key: string; kind: string } {
  const reads = history.filter((op) => op.op === "get" && known(op));
  const read = prng.pick(reads);
  const values = unseeableValues(history, read).filter((value) => value !== read.output);
  read.output = values.length > 0 ? prng.pick(values) : "never-written";
  return { key: read.key, kind: values.length > 0 ? "unseeable" : "never-written" };
}

/** bruteForce tries every order that respects real time (unknown ops optional). */
function bruteForce(ops: KvOperation[]): boolean {
  const done = new Array<boolean>(ops.length).fill(false);
  const search = (state: KvValue, knownLeft: number): boolean => {
    if (knownLeft === 0) return true;
    for (let i = 0; i < ops.length; i++) {
      if (done[i]) continue;
      const op = ops[i]!;
      // op may go next only if every op that returned before op was called is done.
      const blocked = ops.some((other, j) => !done[j] && known(other) && other.return! < op.call);
      if (blocked) continue;
      const next = kvStep(state, op);
      if (next === undefined) continue;
      done[i] = true;
      const found = search(next, knownLeft - (known(op) ? 1 : 0));
      done[i] = false;
      if (found) return true;
    }
    return false;
  };
  return search(null, ops.filter(known).length);
}

/** randomSmallHistory: up to 9 ops with random (often impossible) outputs and small times. */
function randomSmallHistory(prng: Prng): KvOperation[] {
  const values = prng.chance(0.5) ? ["a", "b"] : ["a", "b", "c"];
  const maybe = () => prng.chance(0.3) ? null : prng.pick(values);
  const unknownChance = prng.pick([0.1, 0.4]);
  const ops: KvOperation[] = [];
  const count = prng.int(1, 10);
  for (let i = 0; i < count; i++) {
    const call = prng.int(0, 10);
    const ret = prng.chance(unknownChance) ? null : call + prng.int(0, 5);
    const base = { clientId: i, key: "x", call, return: ret };
    const roll = prng.next();
    ops.push(
      roll < 0.4
        ? { ...base, op: "get", output: maybe() }
        : roll < 0.7
        ? { ...base, op: "put", input: prng.pick(values), output: "ok" }
        : roll < 0.8
        ? { ...base, op: "delete", output: prng.pick([true, false, "ok"] as const) }
        : {
          ...base,
          op: "cas",
          input: { expected: maybe(), value: maybe() },
          output: prng.chance(0.5) ? prng.chance(0.5) : { ok: false, current: maybe() },
        },
    );
  }
  return ops;
}

describe("random histories from a sequential model", () => {
  const smallOptions: GeneratorOptions = {
    clients: 4,
    opsPerClient: 25,
    keys: 2,
    unknownChance: 0.05,
    durationMax: 4,
  };
  const mediumOptions: GeneratorOptions = {
    clients: 8,
    opsPerClient: 40,
    keys: 1,
    unknownChance: 0.02,
    durationMax: 10,
  };
  const largeOptions: GeneratorOptions = {
    clients: 16,
    opsPerClient: 60,
    keys: 1,
    unknownChance: 0.02,
    durationMax: 20,
  };
  // One op in ten times out, as when a partition cuts clients off.
  const lossyOptions: GeneratorOptions = { ...largeOptions, unknownChance: 0.1 };

  test("every generated history is linearizable (300 small seeds, 30 large, 30 lossy)", () => {
    const failures: string[] = [];
    for (let seed = 1; seed <= 360; seed++) {
      const options = seed <= 300 ? smallOptions : seed <= 330 ? largeOptions : lossyOptions;
      const report = checkHistory(generateHistory(seed, options), { timeoutMs: 5_000 });
      if (report.result !== "ok") failures.push(`seed ${seed}: ${report.result}`);
    }
    expect(failures).toEqual([]);
  }, 60_000);

  // mutatedVerdicts mutates one read of each generated history and checks it.
  function mutatedFailures(seeds: number[], options: GeneratorOptions, refuteFirst: boolean) {
    const failures: string[] = [];
    const kinds = new Map<string, number>();
    for (const seed of seeds) {
      const history = generateHistory(seed, options);
      const { key, kind } = mutate(history, new Prng(seed * 7919));
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      const report = checkHistory(history, { timeoutMs: 5_000, refuteFirst });
      if (report.result !== "illegal" || report.perKey.get(key)?.result !== "illegal") {
        failures.push(`seed ${seed} (${kind}): ${report.result}`);
      }
      for (const [other, partition] of report.perKey) {
        if (other !== key && partition.result !== "ok") failures.push(`seed ${seed}: key ${other}`);
      }
    }
    return { failures, kinds };
  }
  const seeds = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => from + i);

  test("every mutated history is flagged, on the mutated key (300 small seeds, 30 large)", () => {
    const small = mutatedFailures(seeds(1, 300), smallOptions, true);
    const large = mutatedFailures(seeds(301, 330), largeOptions, true);
    expect([...small.failures, ...large.failures]).toEqual([]);
    // Most mutations must be the subtle kind: a value that was written, just not visible.
    expect(small.kinds.get("unseeable") ?? 0).toBeGreaterThan(200);
  }, 60_000);

  test("the search alone flags every mutated history of 8 clients (100 seeds)", () => {
    const { failures } = mutatedFailures(seeds(1, 100), mediumOptions, false);
    expect(failures).toEqual([]);
  }, 60_000);

  test("the checker agrees with a brute force search on 5000 small random histories", () => {
    const prng = new Prng(42);
    const verdicts = { ok: 0, illegal: 0 };
    const disagreements: string[] = [];
    for (let i = 0; i < 5000; i++) {
      const ops = randomSmallHistory(prng);
      const expected = bruteForce(ops) ? "ok" : "illegal";
      verdicts[expected]++;
      for (const refuteFirst of [true, false]) {
        const options = { deadline: Infinity, now: () => 0, refuteFirst };
        const actual = checkOperations(kvModel, ops, options).result;
        if (actual !== expected) {
          disagreements.push(`${JSON.stringify(ops)} (refuteFirst ${refuteFirst}): ${actual}`);
        }
      }
      // checkHistory also drops reads with unknown outcome and anonymizes unread values.
      const viaHistory = checkHistory(ops, { timeoutMs: 60_000 }).result;
      if (viaHistory !== expected) disagreements.push(`${JSON.stringify(ops)}: ${viaHistory}`);
    }
    expect(disagreements.slice(0, 3)).toEqual([]);
    // Both verdicts must be common, or the comparison proves little.
    expect(verdicts.ok).toBeGreaterThan(1000);
    expect(verdicts.illegal).toBeGreaterThan(1000);
  }, 60_000);
});

describe("speed", () => {
  test("4000 ops on one key from 16 concurrent clients check in well under a second", () => {
    const history = generateHistory(7, {
      clients: 16,
      opsPerClient: 250,
      keys: 1,
      unknownChance: 0.01,
      durationMax: 20,
    });
    const report = checkHistory(history, { timeoutMs: 10_000 });
    expect(report.result).toBe("ok");
    expect(report.perKey.get("k0")!.ops).toBeGreaterThan(3800);
    expect(report.elapsedMs).toBeLessThan(1_000);
  });

  test("4000 ops on one key with one in twenty timed out check in about a second", () => {
    const history = generateHistory(3, {
      clients: 16,
      opsPerClient: 250,
      keys: 1,
      unknownChance: 0.05,
      durationMax: 20,
    });
    expect(history.filter((op) => !known(op)).length).toBeGreaterThan(150);
    const report = checkHistory(history, { timeoutMs: 10_000 });
    expect(report.result).toBe("ok");
    expect(report.elapsedMs).toBeLessThan(2_000);
  });

  test("32000 ops over 200 keys check in well under a second", () => {
    const history = generateHistory(9, {
      clients: 16,
      opsPerClient: 2000,
      keys: 200,
      unknownChance: 0.01,
      durationMax: 20,
    });
    const report = checkHistory(history, { timeoutMs: 10_000 });
    expect(report.result).toBe("ok");
    expect(report.perKey.size).toBe(200);
    expect(report.elapsedMs).toBeLessThan(1_500);
  });
});
