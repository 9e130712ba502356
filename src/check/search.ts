// The search for a linearization of one partition (Wing & Gong, with Lowe's refinement and
// the memo): one level per placed op. Level d holds the state after d placements and its
// candidates; its blocker is the op of the first return entry in the list, which must be
// placed before anything called after it returned.
//
// Refinements of plain Wing & Gong, each sound for any model that states the facts it
// relies on:
// - A read that fits is placed at once, with no alternative tried (Model.readOnly).
// - A level is abandoned when an unplaced op needs a state other than the current one that
//   no unplaced op can produce (Model.requires and Model.produces): it can never fit
//   (need_ledger.ts).
// - Ops with unknown outcome are offered only where they could matter (unknown_offers.ts).
// - Candidates are tried first if they produce a state some candidate needs, then by
//   return time: an op that must finish soon usually took effect soon.

import { assert } from "../lib/assert.ts";
import { EntryList, head } from "./entry_list.ts";
import { LinearizedSet } from "./linearized_set.ts";
import { Memo } from "./memo.ts";
import type { Model, TimedOperation } from "./model.ts";
import { NeedLedger } from "./need_ledger.ts";
import type { OpFacts } from "./op_facts.ts";
import { growInt32, nil } from "./tables.ts";
import { type UnknownOffers, unknownOffers } from "./unknown_offers.ts";

/** orphanBlocked is a level's blocker when the need ledger doomed it. */
export const orphanBlocked = -2;
/** clockCheckIterations is how many search steps pass between reads of the clock. */
const clockCheckIterations = 1024;
/** Outcomes of scanCalls other than the end of the candidates it listed. */
const placedRead = -1;
const hopeless = -2;

/** SearchLimits bound a search: the clock's deadline and the memo's size. */
export interface SearchLimits {
  deadline: number;
  now: () => number;
  memoEntriesMax: number;
}

export type SearchOutcome =
  | { result: "ok" | "illegal" }
  | { result: "unknown"; reason: string };

export class Search<State, Op extends TimedOperation> {
  readonly #offers: UnknownOffers;
  readonly #list: EntryList;
  readonly #set: LinearizedSet;
  readonly memo: Memo<State, Op>;
  readonly #ledger: NeedLedger<State, Op>;

  // The stack of placements, and each level's candidates[levelCursor, levelEnd) left to try.
  readonly #placedId: Int32Array;
  readonly #placedForced: Uint8Array;
  readonly #stateBefore: State[] = [];
  readonly #levelEnd: Int32Array;
  readonly #levelCursor: Int32Array;
  readonly #levelBlocker: Int32Array;
  #candidates = new Int32Array(256);
  #depth = 0;
  #state: State;
  #knownLeft: number;
  // Per level (marked with stamp): the needed states wanted, the ops and groups offered.
  readonly #wanted: Int32Array;
  readonly #wantedList: number[] = [];
  readonly #offered: Int32Array;
  readonly #groupOffered: Int32Array;
  #stamp = 0;
  /** Set by scanCalls: the level has an op the model says too little about. */
  #imprecise = false;

  // The longest linearization found: best[0..bestLength) agrees with the stack up to
  // `agree`, so extending it copies only what changed since. blocked is the op that
  // stopped it (orphanBlocked when the ledger did), nil while unknown.
  readonly #best: Int32Array;
  #bestLength = 0;
  #agree = 0;
  blocked = nil;

  constructor(readonly model: Model<State, Op>, readonly facts: OpFacts<State, Op>) {
    const opCount = facts.byId.length;
    this.#offers = unknownOffers(model, facts);
    this.#list = new EntryList(facts);
    this.#set = new LinearizedSet(facts);
    this.memo = new Memo(model, this.#set);
    this.#ledger = new NeedLedger(model, facts);
    this.#placedId = new Int32Array(opCount);
    this.#placedForced = new Uint8Array(opCount);
    this.#levelEnd = new Int32Array(opCount + 1);
    this.#levelCursor = new Int32Array(opCount + 1);
    this.#levelBlocker = new Int32Array(opCount + 1);
    this.#wanted = new Int32Array(facts.neededStates.length);
    this.#offered = new Int32Array(opCount);
    this.#groupOffered = new Int32Array(this.#offers.groupCount);
    this.#best = new Int32Array(opCount);
    this.#state = model.init();
    this.#knownLeft = facts.known.filter((isKnown) => isKnown).length;
  }

  /**
   * run places ops until every op with a known outcome is placed ("ok"), or the search has
   * undone everything ("illegal"), or a limit stops it ("unknown").
   */
  run(limits: SearchLimits): SearchOutcome {
    let entering = true;
    let iterations = 0;
    while (this.#knownLeft > 0) {
      if (++iterations % clockCheckIterations === 0 && limits.now() > limits.deadline) {
        return { result: "unknown", reason: "time bound reached" };
      }
      if (this.memo.entries > limits.memoEntriesMax) {
        return { result: "unknown", reason: `memo exceeded ${limits.memoEntriesMax} entries` };
      }
      if (entering) entering = this.#enter();
      else if (this.#levelCursor[this.#depth]! < this.#levelEnd[this.#depth]!) {
        entering = this.#tryCandidate();
      } else if (!this.#backtrack()) return { result: "illegal" };
    }
    return { result: "ok" };
  }

  /** longestPrefix is the longest linearization found, as op ids. */
  longestPrefix(): number[] {
    return Array.from(this.#best.subarray(0, this.#bestLength));
  }

  /** atBest: the stack is the longest prefix, and nothing has blocked it yet. */
  get #atBest(): boolean {
    return this.#depth === this.#bestLength && this.#agree === this.#depth && this.blocked === nil;
  }

  /**
   * tryCandidate tries the level's next candidate; it returns true when it placed it (a new
   * level to enter).
   */
  #tryCandidate(): boolean {
    const cursor = this.#levelCursor[this.#depth]!;
    this.#levelCursor[this.#depth] = cursor + 1;
    const id = this.#candidates[cursor]!;
    const nextState = this.model.step(this.#state, this.facts.byId[id]!);
    if (nextState === undefined) return false;
    this.#set.flip(id);
    if (this.memo.seen(nextState)) {
      this.#set.flip(id);
      return false;
    }
    // A placement that leaves some op unable ever to fit is undone at once, and not
    // remembered: finding that again is cheaper than a memo crowded with dead ends.
    this.#place(id, nextState, false);
    if (this.#ledger.doomed(this.#state)) {
      if (this.#atBest) this.blocked = orphanBlocked;
      this.#unplace();
      return false;
    }
    this.memo.record(nextState);
    return true;
  }

  /**
   * backtrack: no candidate leads anywhere, so the blocker can never be placed from here.
   * It undoes placements back to the newest level with a candidate left, and returns false
   * when there is none.
   */
  #backtrack(): boolean {
    if (this.#atBest) this.blocked = this.#levelBlocker[this.#depth]!;
    do {
      if (this.#depth === 0) return false;
    } while (this.#unplace());
    return true;
  }

  /** place linearizes op id (already flipped into the set and remembered). */
  #place(id: number, nextState: State, forced: boolean): void {
    const depth = this.#depth;
    this.#placedId[depth] = id;
    this.#placedForced[depth] = forced ? 1 : 0;
    this.#stateBefore[depth] = this.#state;
    this.#depth = depth + 1;
    if (this.#depth > this.#bestLength) {
      for (let i = this.#agree; i < this.#depth; i++) this.#best[i] = this.#placedId[i]!;
      this.#bestLength = this.#depth;
      this.#agree = this.#depth;
      this.blocked = nil;
    }
    this.#state = nextState;
    if (this.facts.known[id]) {
      this.#list.lift(id);
      this.#knownLeft--;
    }
    this.#ledger.placed(id);
  }

  /** unplace undoes the newest placement; it returns whether that placement was forced. */
  #unplace(): boolean {
    const depth = --this.#depth;
    const id = this.#placedId[depth]!;
    this.#state = this.#stateBefore[depth]!;
    this.#set.flip(id);
    if (this.facts.known[id]) {
      this.#list.unlift(id);
      this.#knownLeft++;
    }
    this.#ledger.unplaced(id);
    if (this.#agree > depth) this.#agree = depth;
    return this.#placedForced[depth] === 1;
  }

  /**
   * enter fills in the current level. It returns true when it placed a read that fits (a
   * new level to enter); otherwise the level's candidates are ready, and none when the
   * level is hopeless.
   */
  #enter(): boolean {
    const depth = this.#depth;
    const start = depth === 0 ? 0 : this.#levelEnd[depth - 1]!;
    this.#levelCursor[depth] = start;
    this.#levelEnd[depth] = start;
    if (this.#ledger.doomed(this.#state)) {
      this.#levelBlocker[depth] = orphanBlocked;
      return false;
    }
    this.#stamp++;
    this.#wantedList.length = 0;
    let end = this.#scanCalls(start);
    if (end === placedRead) return true;
    if (end === hopeless) return false;
    // Ops with unknown outcome called by the time the blocker returned.
    end = this.#offerUnknown(end, this.facts.byId[this.#levelBlocker[depth]!]!.return!);
    this.#orderCandidates(start, end);
    this.#levelEnd[depth] = end;
    return false;
  }

  /**
   * scanCalls lists as candidates the ops whose calls lie ahead of the first return entry,
   * from candidates[start], and returns the end of the list; the op of that return is the
   * level's blocker. It returns placedRead instead when it placed a read that fits, and
   * hopeless when the level cannot succeed.
   */
  #scanCalls(start: number): number {
    const { byId, needId, produceId, readOnly, blind, overwrites, neededStates } = this.facts;
    const { next, nodeId, nodeIsCall } = this.#list;
    const state = this.#state;
    let end = start;
    this.#imprecise = false;
    let scan = next[head]!;
    for (; scan !== nil && nodeIsCall[scan] === 1; scan = next[scan]!) {
      const id = nodeId[scan]!;
      const need = needId[id]!;
      if (need !== nil && !this.model.equal(state, neededStates[need]!)) {
        const left = this.#ledger.producersLeft[need]! - (produceId[id] === need ? 1 : 0);
        if (left === 0 && this.#ledger.wildcardsLeft === 0) {
          this.#levelBlocker[this.#depth] = id;
          return hopeless;
        }
        this.#want(need);
        if (readOnly[id] === 1) continue;
      }
      if (readOnly[id] === 1) {
        const nextState = this.model.step(state, byId[id]!);
        if (nextState !== undefined) return this.#placeRead(id, nextState);
        if (need === nil) this.#imprecise = true;
        continue;
      }
      // An op that fits now and always leaves the same state makes any op before it moot.
      if (blind[id] === 0 && need === nil) {
        this.#imprecise ||= overwrites[id] === 0 || this.model.step(state, byId[id]!) === undefined;
      }
      end = this.#push(end, id);
    }
    assert(scan !== nil, "an op with a known outcome has a return entry ahead of the cursor");
    this.#levelBlocker[this.#depth] = nodeId[scan]!;
    return end;
  }

  /** placeRead places a read that fits, unless that was explored before (then all fails). */
  #placeRead(id: number, nextState: State): number {
    this.#set.flip(id);
    if (!this.memo.seen(nextState)) {
      this.memo.record(nextState);
      this.#place(id, nextState, true);
      return placedRead;
    }
    // Placing this read was explored before and failed, so this level fails too.
    this.#set.flip(id);
    this.#levelBlocker[this.#depth] = id;
    return hopeless;
  }

  /**
   * offerUnknown adds the ops with unknown outcome called by `calledBy` that could matter
   * here (unknown_offers.ts): all of them when the level is imprecise, else the producers
   * of wanted states and the wildcards.
   */
  #offerUnknown(end: number, calledBy: number): number {
    const { byId } = this.facts;
    const offers = this.#offers;
    if (this.#imprecise || offers.impreciseUnknownCall <= calledBy) {
      for (const id of offers.unknownIds) {
        if (byId[id]!.call > calledBy) break;
        end = this.#offer(id, end);
      }
      return end;
    }
    // Offering an op may want another state: the list grows as it is read.
    for (let i = 0; i < this.#wantedList.length; i++) {
      for (const id of offers.unknownProducers[this.#wantedList[i]!]!) {
        if (byId[id]!.call > calledBy) break;
        end = this.#offer(id, end);
      }
    }
    for (const id of offers.unknownWildcards) {
      if (byId[id]!.call > calledBy) break;
      end = this.#offer(id, end);
    }
    return end;
  }

  /** offer adds op id (unknown outcome) as a candidate, once, and the first of its group. */
  #offer(id: number, end: number): number {
    if (this.#offered[id] === this.#stamp || this.#set.unknownPlaced[id] === 1) return end;
    const group = this.#offers.groupOf[id]!;
    if (group !== nil) {
      if (this.#groupOffered[group] === this.#stamp) return end;
      this.#groupOffered[group] = this.#stamp;
    }
    this.#offered[id] = this.#stamp;
    const enabling = this.facts.enabledId[id]!;
    end = this.#push(end, id);
    if (enabling !== nil && !this.model.equal(this.#state, this.facts.neededStates[enabling]!)) {
      this.#want(enabling);
    }
    return end;
  }

  #want(need: number): void {
    if (this.#wanted[need] === this.#stamp) return;
    this.#wanted[need] = this.#stamp;
    this.#wantedList.push(need);
  }

  /** push sets candidates[end] to id, growing the array when full, and returns end + 1. */
  #push(end: number, id: number): number {
    if (end === this.#candidates.length) this.#candidates = growInt32(this.#candidates, end + 1);
    this.#candidates[end] = id;
    return end + 1;
  }

  /**
   * orderCandidates sorts candidates[start, end): known ops that produce a wanted state,
   * unknown ones that do, other known ops, other unknown ones; known ops by return time (an
   * insertion sort, as they are about as many as the clients), unknown ones in call order.
   * It sorts into the space after end and copies back.
   */
  #orderCandidates(start: number, end: number): void {
    const { known, produceId, returnTime } = this.facts;
    let sorted = end;
    for (let rank = 0; rank < 4; rank++) {
      const knownRank = rank % 2 === 0;
      const first = sorted;
      for (let i = start; i < end; i++) {
        const id = this.#candidates[i]!;
        const helps = produceId[id] !== nil && this.#wanted[produceId[id]!] === this.#stamp;
        if (helps !== rank < 2 || known[id] !== knownRank) continue;
        if (sorted === this.#candidates.length) {
          this.#candidates = growInt32(this.#candidates, sorted + 1);
        }
        const candidates = this.#candidates;
        let at = sorted++;
        if (knownRank) {
          const returned = returnTime[id]!;
          while (at > first && returnTime[candidates[at - 1]!]! > returned) {
            candidates[at] = candidates[at - 1]!;
            at--;
          }
        }
        candidates[at] = id;
      }
    }
    this.#candidates.copyWithin(start, end, sorted);
  }
}
