// The history as a list of call and return entries sorted by time (at equal times calls
// first: operations that touch are treated as concurrent), one pair per op with a known
// outcome; ops with unknown outcome have no return entry and stay out of it. Node 0 is
// the head. Placing an op lifts its two entries out; undoing it puts them back.

import type { TimedOperation } from "./model.ts";
import type { OpFacts } from "./op_facts.ts";
import { nil } from "./tables.ts";

/** head is the list's first node, which holds no entry. */
export const head = 0;

/** EntryList is a doubly linked list in typed arrays; nodes are numbered in time order. */
export class EntryList {
  readonly next: Int32Array;
  readonly prev: Int32Array;
  /** nodeId[node] is the op of an entry; nodeIsCall[node] is 1 for its call, 0 for its return. */
  readonly nodeId: Int32Array;
  readonly nodeIsCall: Uint8Array;
  readonly #callNode: Int32Array;
  readonly #returnNode: Int32Array;

  constructor(facts: OpFacts<unknown, TimedOperation>) {
    const { byId, known } = facts;
    const entries: { time: number; id: number; isCall: boolean }[] = [];
    byId.forEach((op, id) => {
      if (!known[id]) return;
      entries.push({ time: op.call, id, isCall: true });
      entries.push({ time: op.return!, id, isCall: false });
    });
    entries.sort((a, b) =>
      a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1)
    );
    const nodeCount = entries.length + 1;
    this.next = new Int32Array(nodeCount);
    this.prev = new Int32Array(nodeCount);
    this.nodeId = new Int32Array(nodeCount);
    this.nodeIsCall = new Uint8Array(nodeCount);
    this.#returnNode = new Int32Array(byId.length).fill(nil);
    this.#callNode = new Int32Array(byId.length).fill(nil);
    for (let node = 0; node < nodeCount; node++) {
      this.next[node] = node + 1 < nodeCount ? node + 1 : nil;
      this.prev[node] = node - 1;
    }
    entries.forEach((entry, position) => {
      const node = position + 1;
      this.nodeId[node] = entry.id;
      this.nodeIsCall[node] = entry.isCall ? 1 : 0;
      if (entry.isCall) this.#callNode[entry.id] = node;
      else this.#returnNode[entry.id] = node;
    });
  }

  /** lift removes an op's call and return from the list. */
  lift(id: number): void {
    this.#remove(this.#callNode[id]!);
    this.#remove(this.#returnNode[id]!);
  }

  /** unlift puts back the op lifted last, in reverse order. */
  unlift(id: number): void {
    this.#restore(this.#returnNode[id]!);
    this.#restore(this.#callNode[id]!);
  }

  // A removed node keeps its own prev and next, which is what makes restoring it O(1).
  #remove(node: number): void {
    const next = this.next;
    const prev = this.prev;
    next[prev[node]!] = next[node]!;
    if (next[node] !== nil) prev[next[node]!] = prev[node]!;
  }

  #restore(node: number): void {
    const next = this.next;
    const prev = this.prev;
    next[prev[node]!] = node;
    if (next[node] !== nil) prev[next[node]!] = node;
  }
}
