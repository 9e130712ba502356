// What the search knows of each operation before it starts: the ops in call order (an op's
// id is its position), which outcomes are known, and the facts the model states about each
// op (see Model), with the states ops need interned as small integers.

import type { Model, TimedOperation } from "./model.ts";
import { nil, tabulate } from "./tables.ts";

/** OpFacts are the per-op tables the search, refute and explain read. */
export interface OpFacts<State, Op extends TimedOperation> {
  /**
   * byId lists the ops by call time, ties in input order. Ids in call order keep the
   * linearized set's bitset mostly a run of ones then zeros (a short encoding).
   */
  byId: readonly Op[];
  known: readonly boolean[];
  /** returnTime[id] is the op's return, Infinity when its outcome is unknown. */
  returnTime: Float64Array;
  readOnly: Uint8Array;
  /** blind: not read-only, fits every state and always leaves the same one. */
  blind: Uint8Array;
  overwrites: Uint8Array;
  /** neededStates are the interned states ops need: needId, enabledId and produceId index it. */
  neededStates: State[];
  /** needId[id] is the state a known op requires. */
  needId: Int32Array;
  /** enabledId[id] is the state in which an op with unknown outcome takes effect. */
  enabledId: Int32Array;
  /** produceId[id] is the needed state the op produces. */
  produceId: Int32Array;
  /** wildcard: a changing op that may produce any state (the model names none). */
  wildcard: Uint8Array;
}

/** opFacts orders ops by call and asks the model what it can say about each. */
export function opFacts<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  ops: readonly Op[],
): OpFacts<State, Op> {
  const opCount = ops.length;
  const order = ops.map((_, index) => index).sort((a, b) => ops[a]!.call - ops[b]!.call || a - b);
  const byId = order.map((index) => ops[index]!);
  const known = byId.map((op) => op.return !== null && op.return !== Infinity);
  const returnTime = tabulate(
    new Float64Array(opCount),
    (id) => known[id] ? byId[id]!.return! : Infinity,
  );
  const readOnly = tabulate(
    new Uint8Array(opCount),
    (id) => model.readOnly?.(byId[id]!) === true ? 1 : 0,
  );
  const blind = tabulate(
    new Uint8Array(opCount),
    (id) => readOnly[id] === 0 && model.blind?.(byId[id]!) === true ? 1 : 0,
  );
  const overwrites = tabulate(
    new Uint8Array(opCount),
    (id) => known[id] && model.overwrites?.(byId[id]!) === true ? 1 : 0,
  );
  const needed = new StateInterner<State, Op>(model);
  const needId = tabulate(
    new Int32Array(opCount),
    (id) => known[id] ? needed.intern(model.requires?.(byId[id]!), true) : nil,
  );
  const enabledId = tabulate(
    new Int32Array(opCount),
    (id) =>
      known[id] || readOnly[id] === 1 || blind[id] === 1
        ? nil
        : needed.intern(model.enabledBy?.(byId[id]!), true),
  );
  const wildcard = new Uint8Array(opCount);
  const produceId = tabulate(new Int32Array(opCount), (id) => {
    if (readOnly[id] === 1) return nil;
    const left = model.produces?.(byId[id]!);
    if (left === undefined) wildcard[id] = 1;
    return needed.intern(left, false);
  });
  return {
    byId,
    known,
    returnTime,
    readOnly,
    blind,
    overwrites,
    neededStates: needed.states,
    needId,
    enabledId,
    produceId,
    wildcard,
  };
}

/** StateInterner numbers distinct states (by the model's hash and equal) in order of first sight. */
export class StateInterner<State, Op extends TimedOperation> {
  readonly states: State[] = [];
  readonly #byHash = new Map<number, number[]>();

  constructor(readonly model: Model<State, Op>) {}

  /** intern is the number of `wanted`, nil for undefined, or when new and not `add`. */
  intern(wanted: State | undefined, add: boolean): number {
    if (wanted === undefined) return nil;
    const hash = this.model.hash(wanted) >>> 0;
    const ids = this.#byHash.get(hash) ?? [];
    for (const need of ids) if (this.model.equal(this.states[need]!, wanted)) return need;
    if (!add) return nil;
    this.states.push(wanted);
    ids.push(this.states.length - 1);
    this.#byHash.set(hash, ids);
    return this.states.length - 1;
  }
}
