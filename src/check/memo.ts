// The memo of the (linearized set, state) pairs the search visited. A pair seen before
// cannot lead anywhere new.
//
// An open-addressing hash table keyed by a 64-bit hash of the set's known ops and the state.
// Each slot heads a chain of the entries with the same known ops and state, which differ in
// their unknown ops; a slot is taken only after comparing the known ops (run-length
// encoded) and the state exactly, so a collision costs time, not truth. The encodings live
// end to end in one pool.
//
// Ops with an unknown outcome are optional, which makes a visited pair dominate more than
// itself: if (K + U, s) failed, so does (K + U', s) for every U' that includes U, since
// every continuation of the second is one of the first. So a hit needs only the same known
// ops and state and a recorded set of unknown ops within the current one.

import type { LinearizedSet } from "./linearized_set.ts";
import type { Model, TimedOperation } from "./model.ts";
import { growInt32, nil } from "./tables.ts";

export class Memo<State, Op extends TimedOperation> {
  /** entries counts the pairs recorded: the search's "explored". */
  entries = 0;
  #capacity = 1024;
  #slotLow = new Uint32Array(this.#capacity);
  #slotHigh = new Uint32Array(this.#capacity);
  #slotEntry = new Int32Array(this.#capacity).fill(nil);
  #keys = 0;
  readonly #entryState: State[] = [];
  #entryNext = new Int32Array(1024);
  // Entry e's runs are pool[entryStart[e], entryUnknown[e]); its unknown ops follow, to
  // entryStart[e + 1], newest placement first, as that is where two sets tend to differ.
  #entryStart = new Int32Array(1024);
  #entryUnknown = new Int32Array(1024);
  #pool = new Int32Array(4096);
  #poolLength = 0;
  // seen leaves here the slot and hash for record, which must follow before the set or the
  // memo changes.
  #seenSlot = 0;
  #seenLow = 0;
  #seenHigh = 0;

  constructor(readonly model: Model<State, Op>, readonly set: LinearizedSet) {}

  /** seen says whether a visited pair dominates (current set, state). */
  seen(state: State): boolean {
    const stateHash = this.model.hash(state) >>> 0;
    const low = (this.set.hashLow ^ Math.imul(stateHash, 0x9e3779b1)) >>> 0;
    const high = (this.set.hashHigh ^ Math.imul(stateHash ^ (stateHash >>> 16), 0x85ebca6b)) >>> 0;
    const mask = this.#capacity - 1;
    let slot = low & mask;
    this.set.encodeRuns();
    while (
      this.#slotEntry[slot] !== nil &&
      (this.#slotLow[slot] !== low || this.#slotHigh[slot] !== high ||
        !this.#sameKey(this.#slotEntry[slot]!, state))
    ) {
      slot = (slot + 1) & mask;
    }
    for (let entry = this.#slotEntry[slot]!; entry !== nil; entry = this.#entryNext[entry]!) {
      if (this.#dominates(entry)) return true;
    }
    this.#seenSlot = slot;
    this.#seenLow = low;
    this.#seenHigh = high;
    return false;
  }

  /** record adds (current set, state) to the memo, at the slot seen found. */
  record(state: State): void {
    const set = this.set;
    const slot = this.#seenSlot;
    const chain = this.#slotEntry[slot]!;
    const entry = this.entries++;
    this.#entryState.push(state);
    this.#pool = growInt32(this.#pool, this.#poolLength + set.runsLength + set.unknownDepth);
    this.#entryStart = growInt32(this.#entryStart, entry + 2);
    this.#entryUnknown = growInt32(this.#entryUnknown, entry + 1);
    this.#entryNext = growInt32(this.#entryNext, entry + 1);
    const pool = this.#pool;
    this.#entryStart[entry] = this.#poolLength;
    for (let i = 0; i < set.runsLength; i++) pool[this.#poolLength++] = set.runs[i]!;
    this.#entryUnknown[entry] = this.#poolLength;
    for (let i = set.unknownDepth - 1; i >= 0; i--) pool[this.#poolLength++] = set.unknownStack[i]!;
    this.#entryStart[entry + 1] = this.#poolLength;
    this.#entryNext[entry] = chain;
    this.#slotEntry[slot] = entry;
    if (chain === nil) {
      this.#slotLow[slot] = this.#seenLow;
      this.#slotHigh[slot] = this.#seenHigh;
      this.#keys++;
      if (this.#keys * 2 > this.#capacity) this.#grow();
    }
  }

  /** sameKey: entry has the set's known ops (as runs) and `state`. */
  #sameKey(entry: number, state: State): boolean {
    const set = this.set;
    const start = this.#entryStart[entry]!;
    if (this.#entryUnknown[entry]! - start !== set.runsLength) return false;
    for (let i = 0; i < set.runsLength; i++) {
      if (this.#pool[start + i] !== set.runs[i]) return false;
    }
    return this.model.equal(this.#entryState[entry]!, state);
  }

  /** dominates: every unknown op of entry is in the set (see above). */
  #dominates(entry: number): boolean {
    const unknownFrom = this.#entryUnknown[entry]!;
    const end = this.#entryStart[entry + 1]!;
    for (let i = unknownFrom; i < end; i++) {
      if (this.set.unknownPlaced[this.#pool[i]!] === 0) return false;
    }
    return true;
  }

  #grow(): void {
    const oldLow = this.#slotLow;
    const oldHigh = this.#slotHigh;
    const oldEntry = this.#slotEntry;
    this.#capacity *= 2;
    this.#slotLow = new Uint32Array(this.#capacity);
    this.#slotHigh = new Uint32Array(this.#capacity);
    this.#slotEntry = new Int32Array(this.#capacity).fill(nil);
    const mask = this.#capacity - 1;
    for (let slot = 0; slot < oldEntry.length; slot++) {
      if (oldEntry[slot] === nil) continue;
      let at = oldLow[slot]! & mask;
      while (this.#slotEntry[at] !== nil) at = (at + 1) & mask;
      this.#slotLow[at] = oldLow[slot]!;
      this.#slotHigh[at] = oldHigh[slot]!;
      this.#slotEntry[at] = oldEntry[slot]!;
    }
  }
}
