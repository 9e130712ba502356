// The set of linearized ops. Its ops with a known outcome are a bitset with a Zobrist hash
// (two 32-bit halves) kept in step; its ops with an unknown outcome are a stack, since they
// are placed and unplaced in LIFO order. Ops with unknown outcome have their bit set
// throughout, so they leave no holes in the bitset's runs.

import { assert } from "../lib/assert.ts";
import { Prng } from "../lib/prng.ts";
import type { TimedOperation } from "./model.ts";
import type { OpFacts } from "./op_facts.ts";
import { growInt32, tabulate } from "./tables.ts";

/** zobristSeed fixes the hash keys, so that a check is the same every run. */
const zobristSeed = 0x6b65656c;

export class LinearizedSet {
  readonly #known: readonly boolean[];
  readonly #words: Uint32Array;
  readonly #zobristLow: Uint32Array;
  readonly #zobristHigh: Uint32Array;
  /** hashLow and hashHigh hash the ops with a known outcome in the set. */
  hashLow = 0;
  hashHigh = 0;
  /** unknownPlaced[id] is 1 while op id (unknown outcome) is in the set. */
  readonly unknownPlaced: Uint8Array;
  /** unknownStack[0, unknownDepth) are those ops, oldest placement first. */
  readonly unknownStack: Int32Array;
  unknownDepth = 0;
  /** runs[0, runsLength) are the bitset's run boundaries, as encodeRuns last found them. */
  runs = new Int32Array(64);
  runsLength = 0;
  // Words below fullBelow are all ones, and above zeroAbove all zeros: the encoding skips them.
  #fullBelow = 0;
  #zeroAbove: number;

  constructor(facts: OpFacts<unknown, TimedOperation>) {
    const opCount = facts.byId.length;
    this.#known = facts.known;
    this.#words = new Uint32Array(Math.ceil(opCount / 32) + 1);
    const prng = new Prng(zobristSeed);
    this.#zobristLow = tabulate(new Uint32Array(opCount), () => (prng.next() * 2 ** 32) >>> 0);
    this.#zobristHigh = tabulate(new Uint32Array(opCount), () => (prng.next() * 2 ** 32) >>> 0);
    for (let id = 0; id < opCount; id++) {
      if (!this.#known[id]) this.#words[id >>> 5]! |= 1 << (id & 31);
    }
    this.unknownPlaced = new Uint8Array(opCount);
    this.unknownStack = new Int32Array(opCount);
    this.#zeroAbove = this.#words.length - 1;
  }

  /** flip adds op id to the set, or takes it out when it is in. */
  flip(id: number): void {
    if (this.#known[id]) {
      const w = id >>> 5;
      this.#words[w]! ^= 1 << (id & 31);
      if (w < this.#fullBelow) this.#fullBelow = w;
      if (w > this.#zeroAbove) this.#zeroAbove = w;
      this.hashLow ^= this.#zobristLow[id]!;
      this.hashHigh ^= this.#zobristHigh[id]!;
    } else if (this.unknownPlaced[id] === 0) {
      this.unknownPlaced[id] = 1;
      this.unknownStack[this.unknownDepth++] = id;
    } else {
      assert(this.unknownStack[this.unknownDepth - 1] === id, "ops are unplaced in reverse order");
      this.unknownPlaced[id] = 0;
      this.unknownDepth--;
    }
  }

  /** encodeRuns sets runs to the positions where the bitset changes value, from zero. */
  encodeRuns(): void {
    const words = this.#words;
    this.runsLength = 0;
    let bit = 0;
    while (this.#fullBelow < words.length && words[this.#fullBelow] === 0xffffffff) {
      this.#fullBelow++;
    }
    while (this.#zeroAbove >= 0 && words[this.#zeroAbove] === 0) this.#zeroAbove--;
    if (this.#fullBelow > 0) {
      this.runs[this.runsLength++] = 0;
      bit = 1;
    }
    for (let w = this.#fullBelow; w <= this.#zeroAbove; w++) {
      const word = words[w]!;
      // Bits of this word that differ from the current run, lowest first.
      let differ = bit === 1 ? ~word : word;
      while (differ !== 0) {
        const position = 31 - Math.clz32(differ & -differ);
        if (this.runsLength === this.runs.length) {
          this.runs = growInt32(this.runs, this.runsLength + 1);
        }
        this.runs[this.runsLength++] = w * 32 + position;
        bit ^= 1;
        const above = position === 31 ? 0 : ~0 << (position + 1);
        differ = (bit === 1 ? ~word : word) & above;
      }
    }
  }
}
