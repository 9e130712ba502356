// The counterexample of a failed search: the longest linearizable prefix it found, the op
// that blocked it, and what could have come next, for a person to read.

import { assert } from "../lib/assert.ts";
import type { Counterexample, Model, TimedOperation } from "./model.ts";
import type { OpFacts } from "./op_facts.ts";
import { nil } from "./tables.ts";

/** counterexampleTailOps is how many prefix operations an explanation prints. */
const counterexampleTailOps = 8;

/** Pending is an op that could have come next after the prefix, and why it did not. */
type Pending<Op> = { op: Op; why: string };

/**
 * orphanBlocker names the op that doomed the level after `prefix` for want of a producer:
 * the earliest to return of the unplaced ops needing a state other than the current one
 * that no unplaced op produces.
 */
export function orphanBlocker<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
  prefix: readonly number[],
): number {
  const { byId } = facts;
  const placed = new Set(prefix);
  let state = model.init();
  for (const id of prefix) state = model.step(state, byId[id]!)!;
  const produced = new Set<number>();
  facts.produceId.forEach((need, id) => {
    if (need !== nil && !placed.has(id)) produced.add(need);
  });
  let found = nil;
  facts.needId.forEach((need, id) => {
    if (need === nil || placed.has(id) || !facts.known[id] || produced.has(need)) return;
    if (model.equal(state, facts.neededStates[need]!)) return;
    if (found === nil || byId[id]!.return! < byId[found]!.return!) found = id;
  });
  assert(found !== nil, "a doomed level has an unplaced op that can never fit");
  return found;
}

/** explain builds the counterexample from the longest prefix and the op that blocked it. */
export function explain<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
  prefix: number[],
  blocked: number,
): Counterexample<Op> {
  const { byId } = facts;
  const { state, writer } = replay(model, byId, prefix);
  const inPrefix = new Set(prefix);
  // Pending: known outcome, not linearized, and called before the blocked op returned.
  const deadline = byId[blocked]!.return!;
  const isPending = (id: number) =>
    facts.known[id] === true && !inPrefix.has(id) && byId[id]!.call <= deadline;
  const pending = pendingOps(model, facts, inPrefix, isPending, state);
  const windowStart = Math.min(...pending.map(({ op }) => op.call));
  const involvedIds = new Set<number>(byId.map((_, id) => id).filter(isPending));
  if (writer !== nil) involvedIds.add(writer);
  for (const id of prefix) {
    const returned = byId[id]!.return;
    if (returned === null || returned >= windowStart) involvedIds.add(id);
  }
  const involved = [...involvedIds].sort((a, b) => a - b).map((id) => byId[id]!);
  const linearized = prefix.map((id) => byId[id]!);
  const blockedOp = byId[blocked]!;
  const writerOp = writer === nil ? undefined : byId[writer]!;
  return {
    linearized,
    state: model.describeState(state),
    blocked: blockedOp,
    pending,
    involved,
    explanation: explanation(model, byId.length, linearized, blockedOp, state, writerOp, pending),
  };
}

/** replay steps the model through prefix: the state after it, and the op that last changed it. */
function replay<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  byId: readonly Op[],
  prefix: readonly number[],
): { state: State; writer: number } {
  let state = model.init();
  let writer = nil;
  for (const id of prefix) {
    const nextState = model.step(state, byId[id]!);
    assert(nextState !== undefined, "the longest prefix replays");
    if (!model.equal(state, nextState)) writer = id;
    state = nextState;
  }
  return { state, writer };
}

/** pendingOps says, for each pending op, why it could not come next in `state`. */
function pendingOps<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
  inPrefix: ReadonlySet<number>,
  isPending: (id: number) => boolean,
  state: State,
): Pending<Op>[] {
  const producible = new Set<number>();
  facts.produceId.forEach((need, id) => {
    if (need !== nil && !inPrefix.has(id)) producible.add(need);
  });
  const orphaned = (id: number) => {
    const need = facts.needId[id]!;
    if (need === nil || producible.has(need)) return "";
    return `, and nothing left can produce a state where ${
      model.describeState(facts.neededStates[need]!)
    }`;
  };
  const pending: Pending<Op>[] = [];
  facts.byId.forEach((op, id) => {
    if (!isPending(id)) return;
    const nextState = model.step(state, op);
    const why = nextState === undefined
      ? `cannot take effect now: ${model.explainStep?.(state, op) ?? "the model refuses it"}` +
        orphaned(id)
      : "could take effect now, but no order of the remaining operations works after it";
    pending.push({ op, why });
  });
  return pending;
}

/** explanation is the counterexample as text for a person. */
function explanation<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  opCount: number,
  linearized: readonly Op[],
  blocked: Op,
  state: State,
  writer: Op | undefined,
  pending: readonly Pending<Op>[],
): string {
  const lines = [
    `No linearization places ${model.describeOperation(blocked)} before it returned.`,
    `The longest linearizable prefix has ${linearized.length} of ${opCount} operations` +
    (linearized.length > 0 ? `; it ends with:` : "."),
    ...(linearized.length > counterexampleTailOps ? ["  ..."] : []),
    ...linearized.slice(-counterexampleTailOps).map((op) => `  ${model.describeOperation(op)}`),
    `After it ${model.describeState(state)}` +
    (writer === undefined ? "" : ` (last changed by ${model.describeOperation(writer)})`) +
    ". The operations that could come next:",
    ...pending.map(({ op, why }) => `  ${model.describeOperation(op)}: ${why}`),
  ];
  return lines.join("\n");
}
