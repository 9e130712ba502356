// Which operations with unknown outcome a level of the search offers as candidates.
//
// They are candidates only where they could matter. If there is a linearization, there is
// one in which each op with unknown outcome that is placed at all is followed at once by an
// op it makes possible or changes: from any linearization, drop each such op that is a no-op
// where it stands, and each whose successor fits the state before it too with the same
// result, until none is left to drop. The successor is a candidate already at the level
// where the op is placed, so a level need offer the op only if some candidate could be that
// successor:
// - a known op that requires the state the op produces, and does not fit the current one;
// - an op with unknown outcome that the produced state enables (followed backwards: an
//   enabled op on offer makes the state that enables it wanted too);
// - an op the model says too little about, an "imprecise" one: a read-only op without a
//   required state that does not fit, or an op neither read-only, blind nor with a
//   required state, unless it fits now and always leaves one state. Then the level offers
//   every op with unknown outcome called by then.
//
// Ops with unknown outcome that act alike are interchangeable, and one called earlier can
// go wherever one called later can: so only the earliest unplaced op of each such group
// is offered, which spares the search every choice among them. Two act alike when both
// are blind and produce the same state, or when both change the same enabling state into
// the same produced state (two timed-out cas from null to values nobody read).

import type { Model, TimedOperation } from "./model.ts";
import { type OpFacts, StateInterner } from "./op_facts.ts";
import { nil } from "./tables.ts";

/** UnknownOffers index the ops with unknown outcome (not read-only) for offering. */
export interface UnknownOffers {
  /** groupOf[id] is the group of ops acting alike that id belongs to, or nil. */
  groupOf: Int32Array;
  groupCount: number;
  /** unknownIds are the ops with unknown outcome that are not read-only, in call order. */
  unknownIds: number[];
  /** unknownProducers[need] are those producing needed state `need`, in call order. */
  unknownProducers: number[][];
  /** unknownWildcards are those that may produce any state, in call order. */
  unknownWildcards: number[];
  /** impreciseUnknownCall is the first call of one neither blind nor with an enabling state. */
  impreciseUnknownCall: number;
}

/** unknownOffers groups the ops with unknown outcome and lists them by what they produce. */
export function unknownOffers<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
): UnknownOffers {
  const { byId, known, readOnly, blind, enabledId, produceId, wildcard } = facts;
  const groups = groupsOf(model, facts);
  const unknownIds: number[] = [];
  const unknownProducers = facts.neededStates.map((): number[] => []);
  const unknownWildcards: number[] = [];
  let impreciseUnknownCall = Infinity;
  for (let id = 0; id < byId.length; id++) {
    if (known[id] || readOnly[id] === 1) continue;
    unknownIds.push(id);
    if (produceId[id] !== nil) unknownProducers[produceId[id]!]!.push(id);
    if (wildcard[id] === 1) unknownWildcards.push(id);
    if (blind[id] === 0 && enabledId[id] === nil) {
      impreciseUnknownCall = Math.min(impreciseUnknownCall, byId[id]!.call);
    }
  }
  return { ...groups, unknownIds, unknownProducers, unknownWildcards, impreciseUnknownCall };
}

/** groupsOf puts ops with unknown outcome that act alike (see above) in one group. */
function groupsOf<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  facts: OpFacts<State, Op>,
): { groupOf: Int32Array; groupCount: number } {
  const { byId, known, readOnly, blind } = facts;
  const groupOf = new Int32Array(byId.length).fill(nil);
  const groupIds = new Map<string, number>();
  const states = new StateInterner(model);
  for (let id = 0; id < byId.length; id++) {
    if (known[id] || readOnly[id] === 1) continue;
    const left = model.produces?.(byId[id]!);
    const enabler = blind[id] === 1 ? undefined : model.enabledBy?.(byId[id]!);
    if (left === undefined || (blind[id] === 0 && enabler === undefined)) continue;
    const key = blind[id] === 1
      ? `blind ${states.intern(left, true)}`
      : `${states.intern(enabler, true)} to ${states.intern(left, true)}`;
    if (!groupIds.has(key)) groupIds.set(key, groupIds.size);
    groupOf[id] = groupIds.get(key)!;
  }
  return { groupOf, groupCount: groupIds.size };
}
