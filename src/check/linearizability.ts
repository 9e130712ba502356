// A linearizability checker in the manner of Porcupine: Wing & Gong's search for a
// linearization, with Lowe's just-in-time refinement and memoization of
// (set of linearized operations, model state), run on each key of a history separately.
//
// The history of one partition becomes a list of call and return entries sorted by time
// (at equal times calls first: operations that touch are treated as concurrent). Placing an
// operation lifts its call and return out of the list. At any point the candidates to place
// next are the calls ahead of the first return entry; that entry's operation must be placed
// before anything called after it returned. The search places a candidate the model accepts,
// remembers the (set, state) pair, and goes on; when no candidate works it undoes the last
// placement and tries the next candidate there. A pair seen before cannot lead anywhere new.
// The history is linearizable when every operation with a known outcome is placed, and not
// when the search has undone everything.
//
// An operation with an unknown outcome has no return entry: it may be placed any time after
// its call, and leaving it until after everything else is the same as it never taking
// effect, so the search never has to place it.
//
// Plain Wing & Gong is exponential in the number of concurrent operations, and a chaos run
// has many, so the search uses facts a model may declare about its operations (see Model):
// reads are placed as soon as they fit; states where some operation can never fit are
// abandoned at once; operations with unknown outcome are tried only where something could
// observe them, and only one of each group that acts alike; the memo lets one visited pair
// stand for many that differ in operations with unknown outcome; and a check before the
// search refutes stale reads without searching at all. For the kv model, values nobody read
// are also merged into one (kv_model.ts, anonymizeUnread). Each refinement is argued where
// it is made, and the tests compare the checker with a brute-force search over every order.
//
// Pure: no I/O. The clock that enforces the time bound is injectable.

import { assert } from "../lib/assert.ts";
import { Prng } from "../lib/prng.ts";
import {
  anonymizeUnread,
  describeKvOperation,
  kvModel,
  type KvOperation,
  partitionByKey,
  validateHistory,
} from "./kv_model.ts";

/** TimedOperation is the part of an operation the search needs: its interval. */
export interface TimedOperation {
  call: number;
  /** return is null or Infinity when the operation's outcome is unknown. */
  return: number | null;
}

/**
 * Model is a sequential specification. step returns the state after op, or undefined when
 * op's recorded output is impossible in state; for an op with unknown outcome it must
 * ignore the output. hash and equal must agree (equal states, equal hashes).
 *
 * The optional members after explainStep are facts about ops that let the search prune.
 * Each fact a model states must hold for every state, or the checker may answer wrongly;
 * a model that states none gets a plain, slower search.
 */
export interface Model<State, Op extends TimedOperation> {
  init(): State;
  step(state: State, op: Op): State | undefined;
  hash(state: State): number;
  equal(a: State, b: State): boolean;
  describeOperation(op: Op): string;
  describeState(state: State): string;
  /** explainStep says why step(state, op) is undefined. */
  explainStep?(state: State, op: Op): string;
  /**
   * readOnly is true for an op that leaves the state unchanged in every state where its
   * output is possible (a read). The search places such an op as soon as it fits, without
   * trying alternatives: if a read fits the current state, some linearization (if any
   * exists) places it next, because moving a read earlier, to where it still sees its value,
   * changes nothing else.
   */
  readOnly?(op: Op): boolean;
  /**
   * requires names the one state op's output needs, when there is exactly one (a read of v
   * needs v). With produces, it lets the search abandon a state early: an op that needs a
   * state nothing left can produce will never fit.
   */
  requires?(op: Op): State | undefined;
  /**
   * produces names the state op leaves whenever it changes the state (a put of v leaves v),
   * or undefined when that is not one fixed state. Read-only ops need none.
   */
  produces?(op: Op): State | undefined;
  /**
   * blind is true for an op that fits every state and leaves the same state whatever the
   * state before (a put). With enabledBy, it lets the search leave ops with unknown
   * outcome aside until something could observe them.
   */
  blind?(op: Op): boolean;
  /**
   * enabledBy names, for an op with unknown outcome that is neither read-only nor blind,
   * the one state in which it changes the state (a cas of e: e), if there is one.
   */
  enabledBy?(op: Op): State | undefined;
  /**
   * overwrites is true for an op that, with its recorded output, always leaves the state
   * produces(op) (a completed put). It lets a check before the search refute a history
   * whose read needs a state that was provably overwritten (a stale read).
   */
  overwrites?(op: Op): boolean;
}

/** CheckResult: "unknown" when a limit (time, memory) stopped the search first. */
export type CheckResult = "ok" | "illegal" | "unknown";

/** Counterexample explains why a partition has no linearization. */
export interface Counterexample<Op> {
  /** linearized is the longest linearizable prefix the search found, in order. */
  linearized: Op[];
  /** state describes the model state after that prefix. */
  state: string;
  /** blocked is the operation that returned before any order could place it. */
  blocked: Op;
  /** pending are the operations that could have come next at that point (blocked among them). */
  pending: { op: Op; why: string }[];
  /**
   * involved is a small set to look at first, sorted by call: the pending operations, the
   * last operation of the prefix that changed the state, and the prefix operations that
   * overlap the pending ones in time.
   */
  involved: Op[];
  /** explanation is all of the above as text for a person. */
  explanation: string;
}

/** PartitionReport is the outcome for one partition (one key). */
export interface PartitionReport<Op> {
  result: CheckResult;
  /** ops is the number of operations checked (after dropping reads with unknown outcome). */
  ops: number;
  /** explored counts the distinct (linearized set, state) pairs the search visited. */
  explored: number;
  elapsedMs: number;
  counterexample?: Counterexample<Op>;
  /** reason says which limit made the result "unknown". */
  reason?: string;
}

/** CheckOptions bound a check. */
export interface CheckOptions {
  /** timeoutMs bounds the whole check; partitions not finished in time are "unknown". */
  timeoutMs?: number;
  /** memoEntriesMax bounds the memo of one partition, and with it the memory used. */
  memoEntriesMax?: number;
  /** now is the clock in milliseconds; performance.now() unless a test injects one. */
  now?: () => number;
  /**
   * refuteFirst (default true) looks, before searching, for an op whose needed state is
   * provably unreachable when it runs (see refute). Off, only the search decides; the tests
   * turn it off to exercise the search.
   */
  refuteFirst?: boolean;
}

/** checkTimeoutMsDefault is the time bound of a check that names none. */
export const checkTimeoutMsDefault = 10_000;
/**
 * memoEntriesMaxDefault keeps one partition's memo to a few hundred megabytes at most (an
 * entry holds its known set run-length encoded and its unknown ops, a few hundred bytes).
 */
export const memoEntriesMaxDefault = 1_000_000;
/** clockCheckIterations is how many search steps pass between reads of the clock. */
const clockCheckIterations = 1024;
/** counterexampleTailOps is how many prefix operations an explanation prints. */
const counterexampleTailOps = 8;

const nil = -1;
const head = 0;

/** tabulate fills array with value(index) for each index, and returns it. */
function tabulate<A extends { length: number; [index: number]: number }>(
  array: A,
  value: (index: number) => number,
): A {
  for (let index = 0; index < array.length; index++) array[index] = value(index);
  return array;
}

/** growInt32 returns array, or a copy at least `needed` long when it is shorter. */
function growInt32(array: Int32Array<ArrayBuffer>, needed: number): Int32Array<ArrayBuffer> {
  if (needed <= array.length) return array;
  const grown = new Int32Array(Math.max(array.length * 2, needed));
  grown.set(array);
  return grown;
}

/**
 * checkOperations searches for a linearization of one partition of a history, whose ops
 * must each have call <= return (checkHistory validates this). It never runs past
 * `deadline` (on the `now` clock) by more than a few thousand search steps.
 */
export function checkOperations<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  ops: readonly Op[],
  options: { deadline: number; now: () => number; memoEntriesMax?: number; refuteFirst?: boolean },
): PartitionReport<Op> {
  const started = options.now();
  const memoEntriesMax = options.memoEntriesMax ?? memoEntriesMaxDefault;
  const opCount = ops.length;

  // Operation ids are positions in call order, so the linearized set's bitset is mostly a
  // run of ones followed by zeros, which keeps its run-length encoding short.
  const order = ops.map((_, index) => index).sort((a, b) => ops[a]!.call - ops[b]!.call || a - b);
  const byId = order.map((index) => ops[index]!);
  const known = byId.map((op) => op.return !== null && op.return !== Infinity);
  const returnTime = tabulate(
    new Float64Array(opCount),
    (id) => known[id] ? byId[id]!.return! : Infinity,
  );

  // The list holds a call and a return entry per op with a known outcome; node 0 is the
  // head. Ops with unknown outcome stay out of it (see enter).
  interface Entry {
    time: number;
    id: number;
    isCall: boolean;
  }
  const entries: Entry[] = [];
  byId.forEach((op, id) => {
    if (!known[id]) return;
    entries.push({ time: op.call, id, isCall: true });
    entries.push({ time: op.return!, id, isCall: false });
  });
  entries.sort((a, b) =>
    a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1)
  );
  const nodeCount = entries.length + 1;
  const next = new Int32Array(nodeCount);
  const prev = new Int32Array(nodeCount);
  const nodeId = new Int32Array(nodeCount);
  const nodeIsCall = new Uint8Array(nodeCount);
  const returnNode = new Int32Array(opCount).fill(nil);
  const callNode = new Int32Array(opCount).fill(nil);
  for (let node = 0; node < nodeCount; node++) {
    next[node] = node + 1 < nodeCount ? node + 1 : nil;
    prev[node] = node - 1;
  }
  entries.forEach((entry, position) => {
    const node = position + 1;
    nodeId[node] = entry.id;
    nodeIsCall[node] = entry.isCall ? 1 : 0;
    if (entry.isCall) callNode[entry.id] = node;
    else returnNode[entry.id] = node;
  });

  // lift removes an op's call and return from the list; unlift puts them back in reverse
  // order. A removed node keeps its own prev and next, which is what makes unlift O(1).
  const remove = (node: number) => {
    next[prev[node]!] = next[node]!;
    if (next[node] !== nil) prev[next[node]!] = prev[node]!;
  };
  const restore = (node: number) => {
    next[prev[node]!] = node;
    if (next[node] !== nil) prev[next[node]!] = node;
  };
  const lift = (id: number) => {
    remove(callNode[id]!);
    remove(returnNode[id]!);
  };
  const unlift = (id: number) => {
    restore(returnNode[id]!);
    restore(callNode[id]!);
  };

  // The linearized set. Its ops with a known outcome are a bitset with a Zobrist hash (two
  // 32-bit halves) kept in step; its ops with an unknown outcome are a stack, since they
  // are placed and unplaced in LIFO order.
  const words = new Uint32Array(Math.ceil(opCount / 32) + 1);
  const prng = new Prng(0x6b65656c);
  const zobristLow = tabulate(new Uint32Array(opCount), () => (prng.next() * 2 ** 32) >>> 0);
  const zobristHigh = tabulate(new Uint32Array(opCount), () => (prng.next() * 2 ** 32) >>> 0);
  let hashLow = 0;
  let hashHigh = 0;
  // Ops with unknown outcome have their bit set throughout, so they leave no holes in it.
  for (let id = 0; id < opCount; id++) if (!known[id]) words[id >>> 5]! |= 1 << (id & 31);
  const unknownPlaced = new Uint8Array(opCount);
  const unknownStack = new Int32Array(opCount);
  let unknownDepth = 0;
  // Words below fullBelow are all ones, and above zeroAbove all zeros: the encoding skips them.
  let fullBelow = 0;
  let zeroAbove = words.length - 1;
  const flip = (id: number) => {
    if (known[id]) {
      const w = id >>> 5;
      words[w]! ^= 1 << (id & 31);
      if (w < fullBelow) fullBelow = w;
      if (w > zeroAbove) zeroAbove = w;
      hashLow ^= zobristLow[id]!;
      hashHigh ^= zobristHigh[id]!;
    } else if (unknownPlaced[id] === 0) {
      unknownPlaced[id] = 1;
      unknownStack[unknownDepth++] = id;
    } else {
      assert(unknownStack[unknownDepth - 1] === id, "ops are unplaced in reverse order");
      unknownPlaced[id] = 0;
      unknownDepth--;
    }
  };

  // The memo records the (set, state) pairs visited, in an open-addressing hash table keyed
  // by a 64-bit hash of the set's known ops and the state. Each slot heads a chain of the
  // entries with the same known ops and state, which differ in their unknown ops; a slot is
  // taken only after comparing the known ops (run-length encoded) and the state exactly, so
  // a collision costs time, not truth. The encodings live end to end in one pool.
  //
  // Ops with an unknown outcome are optional, which makes a visited pair dominate more than
  // itself: if (K + U, s) failed, so does (K + U', s) for every U' that includes U, since
  // every continuation of the second is one of the first. So a hit needs only the same
  // known ops and state and a recorded set of unknown ops within the current one.
  let memoCapacity = 1024;
  let memoLow = new Uint32Array(memoCapacity);
  let memoHigh = new Uint32Array(memoCapacity);
  let memoEntry = new Int32Array(memoCapacity).fill(nil);
  let memoKeys = 0;
  const entryState: State[] = [];
  let entryNext = new Int32Array(1024);
  // Entry e's runs are pool[entryStart[e], entryUnknown[e]); its unknown ops follow, to
  // entryStart[e + 1], newest placement first, as that is where two sets tend to differ.
  let entryStart = new Int32Array(1024);
  let entryUnknown = new Int32Array(1024);
  let pool = new Int32Array(4096);
  let poolLength = 0;
  let memoEntries = 0;
  let scratch = new Int32Array(64);
  let scratchLength = 0;
  const encodeRuns = () => {
    // Positions where the bitset changes value, starting from zero.
    scratchLength = 0;
    let bit = 0;
    while (fullBelow < words.length && words[fullBelow] === 0xffffffff) fullBelow++;
    while (zeroAbove >= 0 && words[zeroAbove] === 0) zeroAbove--;
    if (fullBelow > 0) {
      scratch[scratchLength++] = 0;
      bit = 1;
    }
    for (let w = fullBelow; w <= zeroAbove; w++) {
      const word = words[w]!;
      // Bits of this word that differ from the current run, lowest first.
      let differ = bit === 1 ? ~word : word;
      while (differ !== 0) {
        const position = 31 - Math.clz32(differ & -differ);
        if (scratchLength === scratch.length) scratch = growInt32(scratch, scratchLength + 1);
        scratch[scratchLength++] = w * 32 + position;
        bit ^= 1;
        const above = position === 31 ? 0 : ~0 << (position + 1);
        differ = (bit === 1 ? ~word : word) & above;
      }
    }
  };
  const sameKey = (entry: number, state: State) => {
    const start = entryStart[entry]!;
    if (entryUnknown[entry]! - start !== scratchLength) return false;
    for (let i = 0; i < scratchLength; i++) if (pool[start + i] !== scratch[i]) return false;
    return model.equal(entryState[entry]!, state);
  };
  const dominates = (entry: number) => {
    const unknownFrom = entryUnknown[entry]!;
    const end = entryStart[entry + 1]!;
    for (let i = unknownFrom; i < end; i++) if (unknownPlaced[pool[i]!] === 0) return false;
    return true;
  };
  const grow = () => {
    const oldLow = memoLow;
    const oldHigh = memoHigh;
    const oldEntry = memoEntry;
    memoCapacity *= 2;
    memoLow = new Uint32Array(memoCapacity);
    memoHigh = new Uint32Array(memoCapacity);
    memoEntry = new Int32Array(memoCapacity).fill(nil);
    const mask = memoCapacity - 1;
    for (let slot = 0; slot < oldEntry.length; slot++) {
      if (oldEntry[slot] === nil) continue;
      let at = oldLow[slot]! & mask;
      while (memoEntry[at] !== nil) at = (at + 1) & mask;
      memoLow[at] = oldLow[slot]!;
      memoHigh[at] = oldHigh[slot]!;
      memoEntry[at] = oldEntry[slot]!;
    }
  };
  // seen says whether a visited pair dominates (current set, state); if not, it leaves the
  // slot for record, which must follow before the set or the memo changes.
  let seenSlot = 0;
  let seenLow = 0;
  let seenHigh = 0;
  const seen = (state: State): boolean => {
    const stateHash = model.hash(state) >>> 0;
    const low = (hashLow ^ Math.imul(stateHash, 0x9e3779b1)) >>> 0;
    const high = (hashHigh ^ Math.imul(stateHash ^ (stateHash >>> 16), 0x85ebca6b)) >>> 0;
    const mask = memoCapacity - 1;
    let slot = low & mask;
    encodeRuns();
    while (
      memoEntry[slot] !== nil &&
      (memoLow[slot] !== low || memoHigh[slot] !== high || !sameKey(memoEntry[slot]!, state))
    ) {
      slot = (slot + 1) & mask;
    }
    for (let entry = memoEntry[slot]!; entry !== nil; entry = entryNext[entry]!) {
      if (dominates(entry)) return true;
    }
    seenSlot = slot;
    seenLow = low;
    seenHigh = high;
    return false;
  };
  // record adds (current set, state) to the memo, at the slot seen found.
  const record = (state: State) => {
    const slot = seenSlot;
    const chain = memoEntry[slot]!;
    const entry = memoEntries++;
    entryState.push(state);
    pool = growInt32(pool, poolLength + scratchLength + unknownDepth);
    entryStart = growInt32(entryStart, entry + 2);
    entryUnknown = growInt32(entryUnknown, entry + 1);
    entryNext = growInt32(entryNext, entry + 1);
    entryStart[entry] = poolLength;
    for (let i = 0; i < scratchLength; i++) pool[poolLength++] = scratch[i]!;
    entryUnknown[entry] = poolLength;
    for (let i = unknownDepth - 1; i >= 0; i--) pool[poolLength++] = unknownStack[i]!;
    entryStart[entry + 1] = poolLength;
    entryNext[entry] = chain;
    memoEntry[slot] = entry;
    if (chain === nil) {
      memoLow[slot] = seenLow;
      memoHigh[slot] = seenHigh;
      memoKeys++;
      if (memoKeys * 2 > memoCapacity) grow();
    }
  };

  // What the model says about each op (see Model). Needed states are interned: needId[id]
  // is the state a known op requires, enabledId[id] the state in which an op with unknown
  // outcome takes effect, produceId[id] the needed state an op produces (each nil if none).
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
  const neededStates: State[] = [];
  const neededByHash = new Map<number, number[]>();
  const intern = (wanted: State | undefined, add: boolean): number => {
    if (wanted === undefined) return nil;
    const hash = model.hash(wanted) >>> 0;
    const ids = neededByHash.get(hash) ?? [];
    for (const need of ids) if (model.equal(neededStates[need]!, wanted)) return need;
    if (!add) return nil;
    neededStates.push(wanted);
    ids.push(neededStates.length - 1);
    neededByHash.set(hash, ids);
    return neededStates.length - 1;
  };
  const needId = tabulate(
    new Int32Array(opCount),
    (id) => known[id] ? intern(model.requires?.(byId[id]!), true) : nil,
  );
  const enabledId = tabulate(
    new Int32Array(opCount),
    (id) =>
      known[id] || readOnly[id] === 1 || blind[id] === 1
        ? nil
        : intern(model.enabledBy?.(byId[id]!), true),
  );
  const wildcard = new Uint8Array(opCount);
  const produceId = tabulate(new Int32Array(opCount), (id) => {
    if (readOnly[id] === 1) return nil;
    const left = model.produces?.(byId[id]!);
    if (left === undefined) wildcard[id] = 1;
    return intern(left, false);
  });

  // Ops with unknown outcome are candidates only where they could matter. If there is a
  // linearization, there is one in which each op with unknown outcome that is placed at all
  // is followed at once by an op it makes possible or changes: from any linearization, drop
  // each such op that is a no-op where it stands, and each whose successor fits the state
  // before it too with the same result, until none is left to drop. The successor is a
  // candidate already at the level where the op is placed, so a level need offer the op
  // only if some candidate could be that successor:
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
  const groupOf = new Int32Array(opCount).fill(nil);
  const groupIds = new Map<string, number>();
  const stateIds = new Map<number, State[]>();
  const stateKey = (value: State): string => {
    const hash = model.hash(value) >>> 0;
    const seenStates = stateIds.get(hash) ?? [];
    let index = seenStates.findIndex((other) => model.equal(other, value));
    if (index === -1) {
      index = seenStates.push(value) - 1;
      stateIds.set(hash, seenStates);
    }
    return `${hash}.${index}`;
  };
  for (let id = 0; id < opCount; id++) {
    if (known[id] || readOnly[id] === 1) continue;
    const left = model.produces?.(byId[id]!);
    const enabler = blind[id] === 1 ? undefined : model.enabledBy?.(byId[id]!);
    if (left === undefined || (blind[id] === 0 && enabler === undefined)) continue;
    const key = blind[id] === 1
      ? `blind ${stateKey(left)}`
      : `${stateKey(enabler!)} to ${stateKey(left)}`;
    if (!groupIds.has(key)) groupIds.set(key, groupIds.size);
    groupOf[id] = groupIds.get(key)!;
  }
  const groupOffered = new Int32Array(groupIds.size);
  const unknownIds: number[] = [];
  const unknownProducers = neededStates.map((): number[] => []);
  const unknownWildcards: number[] = [];
  let impreciseUnknownCall = Infinity;
  for (let id = 0; id < opCount; id++) {
    if (known[id] || readOnly[id] === 1) continue;
    unknownIds.push(id);
    if (produceId[id] !== nil) unknownProducers[produceId[id]!]!.push(id);
    if (wildcard[id] === 1) unknownWildcards.push(id);
    if (blind[id] === 0 && enabledId[id] === nil) {
      impreciseUnknownCall = Math.min(impreciseUnknownCall, byId[id]!.call);
    }
  }

  // Facts for abandoning a level early: requirersLeft and producersLeft count the unplaced
  // ops that need and produce each needed state. A needed state with requirers but no
  // producers left is an orphan: the state must not leave it before its requirers are
  // placed, so two orphans, or one that is not the current state, doom the level. A
  // "wildcard" op may produce anything; while one is unplaced nothing is abandoned.
  const producersLeft = new Int32Array(neededStates.length);
  for (const need of produceId) if (need !== nil) producersLeft[need]!++;
  let wildcardsLeft = wildcard.reduce((sum, flag) => sum + flag, 0);
  const requirersLeft = new Int32Array(neededStates.length);
  for (const need of needId) if (need !== nil) requirersLeft[need]!++;
  const isOrphan = (need: number) => requirersLeft[need]! > 0 && producersLeft[need] === 0;
  let orphans = 0;
  let orphanSum = 0; // the orphan itself when there is one
  for (let need = 0; need < neededStates.length; need++) {
    if (isOrphan(need)) {
      orphans++;
      orphanSum += need;
    }
  }
  const adjust = (need: number, requirers: number, producers: number) => {
    if (isOrphan(need)) {
      orphans--;
      orphanSum -= need;
    }
    requirersLeft[need]! += requirers;
    producersLeft[need]! += producers;
    if (isOrphan(need)) {
      orphans++;
      orphanSum += need;
    }
  };
  const orphanBlocked = -2;
  const doomed = () =>
    wildcardsLeft === 0 &&
    (orphans > 1 || (orphans === 1 && !model.equal(state, neededStates[orphanSum]!)));

  // The search keeps one level per placed op. Level d holds the state after d placements
  // and its candidates; its blocker is the op of the first return entry in the list, which
  // must be placed before anything called after it returned.
  //
  // Refinements of plain Wing & Gong, each sound for any model that states the facts it
  // relies on:
  // - A read that fits is placed at once, with no alternative tried (Model.readOnly).
  // - A level is abandoned when an unplaced op needs a state other than the current one
  //   that no unplaced op can produce (Model.requires and Model.produces): it can never fit.
  // - Ops with unknown outcome are offered only where they could matter (above).
  // - Candidates are tried first if they produce a state some candidate needs, then by
  //   return time: an op that must finish soon usually took effect soon.
  const placedId = new Int32Array(opCount);
  const placedForced = new Uint8Array(opCount);
  const stateBefore: State[] = [];
  const levelEnd = new Int32Array(opCount + 1);
  const levelCursor = new Int32Array(opCount + 1);
  const levelBlocker = new Int32Array(opCount + 1);
  let candidates = new Int32Array(256);
  const wanted = new Int32Array(neededStates.length);
  const wantedList: number[] = [];
  const offered = new Int32Array(opCount);
  let stamp = 0;
  let depth = 0;

  // The longest linearization found: best[0..bestLength) agrees with the stack up to
  // `agree`, so extending it copies only what changed since.
  const best = new Int32Array(opCount);
  let bestLength = 0;
  let agree = 0;
  let blocked = nil;

  let state = model.init();
  let knownLeft = known.filter((isKnown) => isKnown).length;
  let iterations = 0;
  const report = (result: CheckResult, extra: Partial<PartitionReport<Op>> = {}) => ({
    result,
    ops: opCount,
    explored: memoEntries,
    elapsedMs: options.now() - started,
    ...extra,
  });

  // place linearizes op id (already flipped into the set and remembered).
  const place = (id: number, nextState: State, forced: boolean) => {
    placedId[depth] = id;
    placedForced[depth] = forced ? 1 : 0;
    stateBefore[depth] = state;
    depth++;
    if (depth > bestLength) {
      for (let i = agree; i < depth; i++) best[i] = placedId[i]!;
      bestLength = depth;
      agree = depth;
      blocked = nil;
    }
    state = nextState;
    if (known[id]) {
      lift(id);
      knownLeft--;
    }
    if (needId[id] !== nil) adjust(needId[id]!, -1, 0);
    if (produceId[id] !== nil) adjust(produceId[id]!, 0, -1);
    wildcardsLeft -= wildcard[id]!;
  };
  // unplace undoes the newest placement; it returns whether that placement was forced.
  const unplace = (): boolean => {
    depth--;
    const id = placedId[depth]!;
    state = stateBefore[depth]!;
    flip(id);
    if (known[id]) {
      unlift(id);
      knownLeft++;
    }
    if (needId[id] !== nil) adjust(needId[id]!, 1, 0);
    if (produceId[id] !== nil) adjust(produceId[id]!, 0, 1);
    wildcardsLeft += wildcard[id]!;
    if (agree > depth) agree = depth;
    return placedForced[depth] === 1;
  };
  const want = (need: number) => {
    if (wanted[need] === stamp) return;
    wanted[need] = stamp;
    wantedList.push(need);
  };
  const offer = (id: number, end: number): number => {
    if (offered[id] === stamp || unknownPlaced[id] === 1) return end;
    const group = groupOf[id]!;
    if (group !== nil) {
      if (groupOffered[group] === stamp) return end;
      groupOffered[group] = stamp;
    }
    offered[id] = stamp;
    if (end === candidates.length) candidates = growInt32(candidates, end + 1);
    candidates[end] = id;
    if (enabledId[id] !== nil && !model.equal(state, neededStates[enabledId[id]!]!)) {
      want(enabledId[id]!);
    }
    return end + 1;
  };
  // enter fills in the current level. It returns true when it placed a read that fits (a
  // new level to enter); otherwise the level's candidates are ready, and none when the
  // level is hopeless.
  const enter = (): boolean => {
    const start = depth === 0 ? 0 : levelEnd[depth - 1]!;
    let end = start;
    levelCursor[depth] = start;
    levelEnd[depth] = start;
    if (doomed()) {
      levelBlocker[depth] = orphanBlocked;
      return false;
    }
    stamp++;
    wantedList.length = 0;
    let imprecise = false;
    let scan = next[head]!;
    for (; scan !== nil && nodeIsCall[scan] === 1; scan = next[scan]!) {
      const id = nodeId[scan]!;
      const need = needId[id]!;
      if (need !== nil && !model.equal(state, neededStates[need]!)) {
        const left = producersLeft[need]! - (produceId[id] === need ? 1 : 0);
        if (left === 0 && wildcardsLeft === 0) {
          levelBlocker[depth] = id;
          return false;
        }
        want(need);
        if (readOnly[id] === 1) continue;
      }
      if (readOnly[id] === 1) {
        const nextState = model.step(state, byId[id]!);
        if (nextState === undefined) {
          if (need === nil) imprecise = true;
          continue;
        }
        flip(id);
        if (!seen(nextState)) {
          record(nextState);
          place(id, nextState, true);
          return true;
        }
        // Placing this read was explored before and failed, so this level fails too.
        flip(id);
        levelBlocker[depth] = id;
        return false;
      }
      // An op that fits now and always leaves the same state makes any op before it moot.
      if (blind[id] === 0 && need === nil) {
        imprecise ||= overwrites[id] === 0 || model.step(state, byId[id]!) === undefined;
      }
      if (end === candidates.length) candidates = growInt32(candidates, end + 1);
      candidates[end++] = id;
    }
    assert(scan !== nil, "an op with a known outcome has a return entry ahead of the cursor");
    const blocker = nodeId[scan]!;
    levelBlocker[depth] = blocker;
    // Ops with unknown outcome called by the time the blocker returned.
    const calledBy = byId[blocker]!.return!;
    if (imprecise || impreciseUnknownCall <= calledBy) {
      for (const id of unknownIds) {
        if (byId[id]!.call > calledBy) break;
        end = offer(id, end);
      }
    } else {
      for (let i = 0; i < wantedList.length; i++) {
        for (const id of unknownProducers[wantedList[i]!]!) {
          if (byId[id]!.call > calledBy) break;
          end = offer(id, end);
        }
      }
      for (const id of unknownWildcards) {
        if (byId[id]!.call > calledBy) break;
        end = offer(id, end);
      }
    }
    // Order: known ops that produce a wanted state, unknown ones that do, other known ops,
    // other unknown ones; known ops by return time (an insertion sort, as they are about as
    // many as the clients), unknown ones in call order.
    let sorted = end;
    for (let rank = 0; rank < 4; rank++) {
      const knownRank = rank % 2 === 0;
      const first = sorted;
      for (let i = start; i < end; i++) {
        const id = candidates[i]!;
        const helps = produceId[id] !== nil && wanted[produceId[id]!] === stamp;
        if (helps !== rank < 2 || known[id] !== knownRank) continue;
        if (sorted === candidates.length) candidates = growInt32(candidates, sorted + 1);
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
    candidates.copyWithin(start, end, sorted);
    levelEnd[depth] = end;
    return false;
  };

  if (options.refuteFirst !== false && wildcardsLeft === 0) {
    const refuted = refute(model, byId, known, readOnly, needId, produceId, neededStates);
    if (refuted !== undefined) return report("illegal", { counterexample: refuted });
  }

  let entering = true;
  search: while (knownLeft > 0) {
    if (++iterations % clockCheckIterations === 0 && options.now() > options.deadline) {
      return report("unknown", { reason: "time bound reached" });
    }
    if (memoEntries > memoEntriesMax) {
      return report("unknown", { reason: `memo exceeded ${memoEntriesMax} entries` });
    }
    if (entering) {
      entering = enter();
      continue;
    }
    const cursor = levelCursor[depth]!;
    if (cursor < levelEnd[depth]!) {
      levelCursor[depth] = cursor + 1;
      const id = candidates[cursor]!;
      const nextState = model.step(state, byId[id]!);
      if (nextState === undefined) continue;
      flip(id);
      if (seen(nextState)) {
        flip(id);
        continue;
      }
      // A placement that leaves some op unable ever to fit is undone at once, and not
      // remembered: finding that again is cheaper than a memo crowded with dead ends.
      place(id, nextState, false);
      if (doomed()) {
        if (depth === bestLength && agree === depth && blocked === nil) blocked = orphanBlocked;
        unplace();
        continue;
      }
      record(nextState);
      entering = true;
      continue;
    }
    // No candidate leads anywhere: the blocker can never be placed from here. Undo
    // placements back to the newest level with a candidate left.
    if (depth === bestLength && agree === depth && blocked === nil) blocked = levelBlocker[depth]!;
    do {
      if (depth === 0) break search;
    } while (unplace());
  }
  if (knownLeft === 0) return report("ok");
  assert(blocked !== nil, "the search records the op that blocked its longest prefix");
  const prefix = Array.from(best.subarray(0, bestLength));
  const facts = { known, needId, produceId, neededStates };
  if (blocked === orphanBlocked) blocked = orphanBlocker(model, byId, prefix, facts);
  return report("illegal", { counterexample: explain(model, byId, prefix, blocked, facts) });
}

/** SearchFacts are what the search learned about each op, which explanations reuse. */
interface SearchFacts<State> {
  known: readonly boolean[];
  needId: Int32Array;
  produceId: Int32Array;
  neededStates: readonly State[];
}

/**
 * refute finds an op that needs a state no order can give it, without searching: it needs
 * state v, and either nothing called before it returned produces v (and the initial state
 * is not v), or every such producer returned before some op Y was called that returned
 * before the needy op was called and always leaves a state other than v. Then, in every
 * linearization, the state when the op runs is not v: nothing can produce v after Y and
 * before the op. This catches stale reads and lost writes in histories far too concurrent
 * for the search to refute by exhaustion. Each op costs a binary search and a scan of the
 * overwriters called while it waited; refute passes over an op when in doubt (a producer
 * with unknown outcome, or the op produces what it needs).
 */
function refute<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  byId: readonly Op[],
  known: readonly boolean[],
  readOnly: Uint8Array,
  needId: Int32Array,
  produceId: Int32Array,
  neededStates: readonly State[],
): Counterexample<Op> | undefined {
  const produced = byId.map((op, id) => readOnly[id] === 1 ? undefined : model.produces?.(op));
  // Producers of each needed state in call order, with the latest return among the first
  // i of them (Infinity once one has an unknown outcome), for binary search.
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
  // countUpTo is how many of the ascending `values` are at most `limit`.
  const countUpTo = (values: readonly number[], limit: number) => {
    let low = 0;
    let high = values.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (values[middle]! <= limit) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  const initial = model.init();
  for (let id = 0; id < byId.length; id++) {
    const need = needId[id]!;
    // An op that produces what it needs (a cas from v to v) is left to the search.
    if (need === nil || produceId[id] === need) continue;
    const op = byId[id]!;
    const wanted = neededStates[need]!;
    // Producers that could come before op: called no later than op returned.
    const count = countUpTo(producerCallsOf[need]!, op.return!);
    const producedUntil = count === 0 ? -Infinity : producedUntilOf[need]![count - 1]!;
    if (producedUntil === Infinity) continue;
    let overwriter = nil;
    const first = countUpTo(overwriterCalls, producedUntil);
    for (let k = first; k < overwriters.length && overwriterCalls[k]! < op.call; k++) {
      const candidate = overwriters[k]!;
      if (byId[candidate]!.return! < op.call && !model.equal(produced[candidate]!, wanted)) {
        overwriter = candidate;
        break;
      }
    }
    const unproduced = count === 0 && !model.equal(initial, wanted);
    if (overwriter === nil && !unproduced) continue;
    // The latest few producers are the ones worth showing.
    const producers = producersOf[need]!.slice(Math.max(0, count - 3), count);
    const needs = `it needs a state where ${model.describeState(wanted)}`;
    const describe = (ids: number[]) =>
      ids.map((p) => model.describeOperation(byId[p]!)).join(", ");
    let why: string;
    let state: State;
    if (unproduced) {
      why = `${needs}, and nothing called before it returned produces that state`;
      state = initial;
    } else {
      state = produced[overwriter]!;
      const before = producers.length === 0
        ? "only the initial state has it, but"
        : `only ${count > 3 ? `${count - 3} earlier ops and ` : ""}${describe(producers)} ` +
          "could produce it in time, but";
      why = `${needs}; ${before} ${describe([overwriter])}, which always leaves another ` +
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
  return undefined;
}

/**
 * orphanBlocker names the op that doomed the level after `prefix` for want of a producer:
 * the earliest to return of the unplaced ops needing a state other than the current one
 * that no unplaced op produces.
 */
function orphanBlocker<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  byId: readonly Op[],
  prefix: readonly number[],
  facts: SearchFacts<State>,
): number {
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
function explain<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  byId: readonly Op[],
  prefix: number[],
  blocked: number,
  facts: SearchFacts<State>,
): Counterexample<Op> {
  let state = model.init();
  let writer = nil;
  for (const id of prefix) {
    const nextState = model.step(state, byId[id]!);
    assert(nextState !== undefined, "the longest prefix replays");
    if (!model.equal(state, nextState)) writer = id;
    state = nextState;
  }
  // Pending: known outcome, not linearized, and called before the blocked op returned.
  const inPrefix = new Set(prefix);
  const deadline = byId[blocked]!.return!;
  const isPending = (id: number) =>
    facts.known[id] && !inPrefix.has(id) && byId[id]!.call <= deadline;
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
  const pending: { op: Op; why: string }[] = [];
  byId.forEach((op, id) => {
    if (!isPending(id)) return;
    const nextState = model.step(state, op);
    const why = nextState === undefined
      ? `cannot take effect now: ${model.explainStep?.(state, op) ?? "the model refuses it"}` +
        orphaned(id)
      : "could take effect now, but no order of the remaining operations works after it";
    pending.push({ op, why });
  });
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
  const lines = [
    `No linearization places ${model.describeOperation(blockedOp)} before it returned.`,
    `The longest linearizable prefix has ${prefix.length} of ${byId.length} operations` +
    (prefix.length > 0 ? `; it ends with:` : "."),
    ...(prefix.length > counterexampleTailOps ? ["  ..."] : []),
    ...linearized.slice(-counterexampleTailOps).map((op) => `  ${model.describeOperation(op)}`),
    `After it ${model.describeState(state)}` +
    (writer === nil ? "" : ` (last changed by ${model.describeOperation(byId[writer]!)})`) +
    ". The operations that could come next:",
    ...pending.map(({ op, why }) => `  ${model.describeOperation(op)}: ${why}`),
  ];
  return {
    linearized,
    state: model.describeState(state),
    blocked: blockedOp,
    pending,
    involved,
    explanation: lines.join("\n"),
  };
}

/**
 * checkKey checks the history of one key with its unread values anonymized, and reports
 * the original operations.
 */
function checkKey(
  ops: readonly KvOperation[],
  deadline: number,
  now: () => number,
  options: CheckOptions,
): PartitionReport<KvOperation> {
  const anonymized = anonymizeUnread(ops);
  const original = (op: KvOperation) => anonymized.originals.get(op) ?? op;
  const model: Model<string | null, KvOperation> = {
    ...kvModel,
    describeOperation: (op) => describeKvOperation(original(op)),
  };
  const report = checkOperations(model, anonymized.ops, {
    deadline,
    now,
    ...(options.memoEntriesMax === undefined ? {} : { memoEntriesMax: options.memoEntriesMax }),
    ...(options.refuteFirst === undefined ? {} : { refuteFirst: options.refuteFirst }),
  });
  const found = report.counterexample;
  if (found !== undefined) {
    found.linearized = found.linearized.map(original);
    found.blocked = original(found.blocked);
    found.pending = found.pending.map(({ op, why }) => ({ op: original(op), why }));
    found.involved = found.involved.map(original);
  }
  return report;
}

/** KeyReport is the outcome for one key of a kv history. */
export interface KeyReport extends PartitionReport<KvOperation> {
  key: string;
}

/** HistoryReport is the outcome of checkHistory. */
export interface HistoryReport {
  /** result is "illegal" if any key is, else "unknown" if any key is, else "ok". */
  result: CheckResult;
  perKey: Map<string, KeyReport>;
  elapsedMs: number;
}

/**
 * checkHistory checks a kv history for linearizability, one key at a time (keys are
 * independent registers, so the history is linearizable exactly when each key's is), with
 * the values nobody read anonymized (see anonymizeUnread; counterexamples show the
 * original operations, and a state holding such a value as "one no operation read"). It
 * checks every key within the time bound, smallest first, so one hard key does not hide the
 * verdict on the others; a key not finished in time is "unknown". A malformed history is a
 * RangeError.
 */
export function checkHistory(
  history: readonly KvOperation[],
  options: CheckOptions = {},
): HistoryReport {
  const problems = validateHistory(history);
  if (problems.length > 0) {
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problems)` : "";
    throw new RangeError(`${problems[0]}${more}`);
  }
  const now = options.now ?? (() => performance.now());
  const started = now();
  const deadline = started + (options.timeoutMs ?? checkTimeoutMsDefault);
  const partitions = [...partitionByKey(history)].sort(([, a], [, b]) => a.length - b.length);
  const perKey = new Map<string, KeyReport>();
  let illegal = false;
  let unknown = false;
  for (const [key, ops] of partitions) {
    const partition: PartitionReport<KvOperation> = now() > deadline
      ? {
        result: "unknown",
        ops: ops.length,
        explored: 0,
        elapsedMs: 0,
        reason: "time bound reached before this key",
      }
      : checkKey(ops, deadline, now, options);
    if (partition.counterexample !== undefined) {
      partition.counterexample.explanation = `Key ${JSON.stringify(key)}: ` +
        partition.counterexample.explanation;
    }
    perKey.set(key, { key, ...partition });
    if (partition.result === "illegal") illegal = true;
    if (partition.result === "unknown") unknown = true;
  }
  return {
    result: illegal ? "illegal" : unknown ? "unknown" : "ok",
    perKey,
    elapsedMs: now() - started,
  };
}
