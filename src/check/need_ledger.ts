// Facts for abandoning a level of the search early. requirersLeft and producersLeft count
// the unplaced ops that need and produce each needed state. A needed state with requirers
// but no producers left is an orphan: the state must not leave it before its requirers are
// placed, so two orphans, or one that is not the current state, doom the level. A
// "wildcard" op may produce anything; while one is unplaced nothing is abandoned.

import type { Model, TimedOperation } from "./model.ts";
import type { OpFacts } from "./op_facts.ts";
import { nil } from "./tables.ts";

export class NeedLedger<State, Op extends TimedOperation> {
  readonly producersLeft: Int32Array;
  readonly #requirersLeft: Int32Array;
  /** wildcardsLeft counts the unplaced wildcard ops. */
  wildcardsLeft: number;
  #orphans = 0;
  /** The orphan itself when there is one. */
  #orphanSum = 0;

  constructor(readonly model: Model<State, Op>, readonly facts: OpFacts<State, Op>) {
    const needCount = facts.neededStates.length;
    this.producersLeft = new Int32Array(needCount);
    for (const need of facts.produceId) if (need !== nil) this.producersLeft[need]!++;
    this.wildcardsLeft = facts.wildcard.reduce((sum, flag) => sum + flag, 0);
    this.#requirersLeft = new Int32Array(needCount);
    for (const need of facts.needId) if (need !== nil) this.#requirersLeft[need]!++;
    for (let need = 0; need < needCount; need++) {
      if (this.#isOrphan(need)) {
        this.#orphans++;
        this.#orphanSum += need;
      }
    }
  }

  /** doomed: in `state`, some unplaced op can never fit. */
  doomed(state: State): boolean {
    return this.wildcardsLeft === 0 &&
      (this.#orphans > 1 ||
        (this.#orphans === 1 &&
          !this.model.equal(state, this.facts.neededStates[this.#orphanSum]!)));
  }

  /** placed takes op id off the counts; unplaced puts it back. */
  placed(id: number): void {
    this.#count(id, -1);
  }

  unplaced(id: number): void {
    this.#count(id, 1);
  }

  #count(id: number, change: number): void {
    const { needId, produceId, wildcard } = this.facts;
    if (needId[id] !== nil) this.#adjust(needId[id]!, change, 0);
    if (produceId[id] !== nil) this.#adjust(produceId[id]!, 0, change);
    this.wildcardsLeft += change * wildcard[id]!;
  }

  #isOrphan(need: number): boolean {
    return this.#requirersLeft[need]! > 0 && this.producersLeft[need] === 0;
  }

  #adjust(need: number, requirers: number, producers: number): void {
    if (this.#isOrphan(need)) {
      this.#orphans--;
      this.#orphanSum -= need;
    }
    this.#requirersLeft[need]! += requirers;
    this.producersLeft[need]! += producers;
    if (this.#isOrphan(need)) {
      this.#orphans++;
      this.#orphanSum += need;
    }
  }
}
