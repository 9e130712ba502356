// A check before the search: an op that needs a state no order can give it.
//
// It needs state v, and either nothing called before it returned produces v (and the
// initial state is not v), or every such producer returned before some op Y was called that
// returned before the needy op was called and always leaves a state other than v. Then, in
// every linearization, the state when the op runs is not v: nothing can produce v after Y
// and before the op. This catches stale reads and lost writes in histories far too
// concurrent for the search to refute by exhaustion. Each op costs a binary search and a
// scan of the overwriters called while it waited; refute passes over an op when in doubt (a
// producer with unknown outcome, or the op produces what it needs).

import type { Counterexample, Model, TimedOperation } from "./model.ts";
import type { OpFacts } from "./op_facts.ts";
import { nil } from "./tables.ts";

/** Producers are the indexes refute searches, built once per partition. */
interface Producers<State> {
  /** produced[id] is the state op id leaves when it changes the state, if one. */
  produced: (State | undefined)[];
  /** producersOf[need] are the producers of each needed state, in call order. */
  producersOf: number[][];
  producerCallsOf: number[][];
  /** producedUntilOf[need][i]: the latest return among the first i + 1 producers (Infinity once one's outcome is unknown). */
  producedUntilOf: number[][];
  /** overwriters are the known ops that always leave their produced state, in call order. */
  overwriters: number[];
  overwriterCalls: number[];
}

/** refute finds an op no linearization can place (see above), or undefined. */
export function refute<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
): Counterexample<Op> | undefined {
  const { byId, needId, produceId, neededStates } = facts;
  const producers = producersOf(model, facts);
  const initial = model.init();
  for (let id = 0; id < byId.length; id++) {
    const need = needId[id]!;
    // An op that produces what it needs (a cas from v to v) is left to the search.
    if (need === nil || produceId[id] === need) continue;
    const op = byId[id]!;
    const wanted = neededStates[need]!;
    // Producers that could come before op: called no later than op returned.
    const count = countUpTo(producers.producerCallsOf[need]!, op.return!);
    const producedUntil = count === 0 ? -Infinity : producers.producedUntilOf[need]![count - 1]!;
    if (producedUntil === Infinity) continue;
    const overwriter = overwriterBefore(model, facts, producers, op, wanted, producedUntil);
    const unproduced = count === 0 && !model.equal(initial, wanted);
    if (overwriter === nil && !unproduced) continue;
    const before = producers.producersOf[need]!.slice(0, count);
    const produced = producers.produced;
    return refutation(model, facts, { id, wanted, before, overwriter, unproduced, produced });
  }
  return undefined;
}

function producersOf<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
): Producers<State> {
  const { byId, known, readOnly, produceId, neededStates } = facts;
  const produced = byId.map((op, id) => readOnly[id] === 1 ? undefined : model.produces?.(op));
  const producersOf = neededStates.map((): number[] => []);
  produceId.forEach((need, id) => {
    if (need !== nil) producersOf[need]!.push(id);
  });
  const producerCallsOf = producersOf.map((producers) => producers.map((id) => byId[id]!.call));
  const producedUntilOf = producersOf.map((producers) => {
    let latest = -Infinity;
    return producers.map((
      id,
    ) => (latest = Math.max(latest, known[id] ? byId[id]!.return! : Infinity)));
  });
  const overwriters = byId.map((_, id) => id).filter((id) =>
    known[id] && produced[id] !== undefined && model.overwrites?.(byId[id]!) === true
  );
  const overwriterCalls = overwriters.map((id) => byId[id]!.call);
  return { produced, producersOf, producerCallsOf, producedUntilOf, overwriters, overwriterCalls };
}

/** countUpTo is how many of the ascending `values` are at most `limit`. */
function countUpTo(values: readonly number[], limit: number): number {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (values[middle]! <= limit) low = middle + 1;
    else high = middle;
  }
  return low;
}

/**
 * overwriterBefore is the first overwriter called after every producer returned that
 * returned before op was called, leaving a state other than `wanted`; or nil.
 */
function overwriterBefore<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
  producers: Producers<State>,
  op: Op,
  wanted: State,
  producedUntil: number,
): number {
  const { overwriters, overwriterCalls, produced } = producers;
  const first = countUpTo(overwriterCalls, producedUntil);
  for (let k = first; k < overwriters.length && overwriterCalls[k]! < op.call; k++) {
    const candidate = overwriters[k]!;
    if (facts.byId[candidate]!.return! < op.call && !model.equal(produced[candidate]!, wanted)) {
      return candidate;
    }
  }
  return nil;
}

/** Refuted is what refute found: op id, the state it wanted, its producers and the overwriter. */
interface Refuted<State> {
  id: number;
  wanted: State;
  /** before are the producers called before the op returned, in call order. */
  before: number[];
  /** overwriter is the op that provably overwrote the wanted state, or nil. */
  overwriter: number;
  /** unproduced: nothing called before the op returned produces the wanted state. */
  unproduced: boolean;
  produced: (State | undefined)[];
}

/** refutation explains a refuted op as a counterexample. */
function refutation<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
  refuted: Refuted<State>,
): Counterexample<Op> {
  const { byId } = facts;
  const { id, wanted, before, overwriter, unproduced } = refuted;
  const op = byId[id]!;
  const count = before.length;
  // The latest few producers are the ones worth showing.
  const producers = before.slice(Math.max(0, count - 3), count);
  const needs = `it needs a state where ${model.describeState(wanted)}`;
  const describe = (ids: number[]) => ids.map((p) => model.describeOperation(byId[p]!)).join(", ");
  let why: string;
  let state: State;
  if (unproduced) {
    why = `${needs}, and nothing called before it returned produces that state`;
    state = model.init();
  } else {
    state = refuted.produced[overwriter]!;
    const earlier = producers.length === 0
      ? "only the initial state has it, but"
      : `only ${count > 3 ? `${count - 3} earlier ops and ` : ""}${describe(producers)} ` +
        "could produce it in time, but";
    why = `${needs}; ${earlier} ${describe([overwriter])}, which always leaves another ` +
      `state, was called after ${producers.length === 0 ? "the start" : "that returned"} ` +
      `and returned before it was called`;
  }
  const involved = [...producers, ...(overwriter === nil ? [] : [overwriter]), id]
    .sort((a, b) => a - b).map((p) => byId[p]!);
  return {
    linearized: [],
    state: model.describeState(state),
    blocked: op,
    pending: [{ op, why }],
    involved,
    explanation: `${model.describeOperation(op)} cannot take effect in any order: ${why}.`,
  };
}
