// A linearizability checker in the manner of Porcupine: Wing & Gong's search for a
// linearization, with Lowe's just-in-time refinement and memoization of
// (set of linearized operations, model state), run on each key of a history separately.
//
// The history of one partition becomes a list of call and return entries sorted by time
// (at equal times calls first: operations that touch are treated as concurrent). The search
// walks the list from its head. At a call entry it tries to linearize that operation now:
// if the model accepts its output, the call and its return are lifted out of the list, the
// (set, state) pair is remembered, and the walk restarts at the head. At a return entry the
// operation should already be linearized, so the search backtracks: it restores the last
// lifted operation and tries the next call after it. A (set, state) pair seen before cannot
// lead anywhere new and is skipped. The history is linearizable when every operation with a
// known outcome has been lifted; it is not when the search backtracks past the start.
//
// An operation with an unknown outcome has no return entry: it can be linearized at any
// point after its call, and leaving it until after everything else is the same as it never
// taking effect, so the search never has to place it.
//
// Pure: no I/O. The clock that enforces the time bound is injectable.

import { assert } from "../lib/assert.ts";
import { Prng } from "../lib/prng.ts";
import { kvModel, type KvOperation, partitionByKey, validateHistory } from "./kv_model.ts";

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
}

/** checkTimeoutMsDefault is the time bound of a check that names none. */
export const checkTimeoutMsDefault = 10_000;
/** memoEntriesMaxDefault keeps one partition's memo to a few hundred megabytes at most. */
export const memoEntriesMaxDefault = 2_000_000;
/** clockCheckIterations is how many search steps pass between reads of the clock. */
const clockCheckIterations = 1024;
/** counterexampleTailOps is how many prefix operations an explanation prints. */
const counterexampleTailOps = 8;

const nil = -1;
const head = 0;

/**
 * checkOperations searches for a linearization of one partition of a history. It never runs
 * past `deadline` (on the `now` clock) by more than a few thousand search steps.
 */
export function checkOperations<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  ops: readonly Op[],
  options: { deadline: number; now: () => number; memoEntriesMax?: number },
): PartitionReport<Op> {
  const started = options.now();
  const memoEntriesMax = options.memoEntriesMax ?? memoEntriesMaxDefault;
  const opCount = ops.length;

  // Operation ids are positions in call order, so the linearized set's bitset is mostly a
  // run of ones followed by zeros, which keeps its run-length encoding short.
  const order = ops.map((_, index) => index).sort((a, b) => ops[a]!.call - ops[b]!.call || a - b);
  const byId = order.map((index) => ops[index]!);
  const known = byId.map((op) => op.return !== null && op.return !== Infinity);

  // Entries: node 0 is the head; then a call node per op and a return node per known op.
  interface Entry {
    time: number;
    id: number;
    isCall: boolean;
  }
  const entries: Entry[] = [];
  byId.forEach((op, id) => {
    entries.push({ time: op.call, id, isCall: true });
    if (known[id]) entries.push({ time: op.return!, id, isCall: false });
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
  const callNode = new Int32Array(opCount);
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

  // lift removes a call and its return from the list; unlift puts them back in reverse order.
  // A removed node keeps its own prev and next, which is what makes unlift O(1).
  const remove = (node: number) => {
    next[prev[node]!] = next[node]!;
    if (next[node] !== nil) prev[next[node]!] = prev[node]!;
  };
  const restore = (node: number) => {
    next[prev[node]!] = node;
    if (next[node] !== nil) prev[next[node]!] = node;
  };
  const lift = (node: number) => {
    remove(node);
    const match = returnNode[nodeId[node]!]!;
    if (match !== nil) remove(match);
  };
  const unlift = (node: number) => {
    const match = returnNode[nodeId[node]!]!;
    if (match !== nil) restore(match);
    restore(node);
  };

  // The linearized set: a bitset and its Zobrist hash (two 32-bit halves), kept in step.
  const words = new Uint32Array(Math.ceil(opCount / 32) + 1);
  const prng = new Prng(0x6b65656c);
  const zobristLow = Uint32Array.from({ length: opCount }, () => (prng.next() * 2 ** 32) >>> 0);
  const zobristHigh = Uint32Array.from({ length: opCount }, () => (prng.next() * 2 ** 32) >>> 0);
  let hashLow = 0;
  let hashHigh = 0;
  const flip = (id: number) => {
    words[id >>> 5]! ^= 1 << (id & 31);
    hashLow ^= zobristLow[id]!;
    hashHigh ^= zobristHigh[id]!;
  };

  // The memo maps a 53-bit hash of (set, state) to the pairs with that hash; a hit compares
  // the run-length encoded set and the state exactly, so a collision costs time, not truth.
  interface MemoEntry {
    runs: Int32Array;
    state: State;
  }
  const memo = new Map<number, MemoEntry | MemoEntry[]>();
  let memoEntries = 0;
  let scratch = new Int32Array(64);
  let scratchLength = 0;
  const encodeRuns = () => {
    // Positions where the bitset changes value, starting from zero.
    scratchLength = 0;
    let bit = 0;
    for (let w = 0; w < words.length; w++) {
      const word = words[w]!;
      if (word === (bit === 1 ? 0xffffffff : 0)) continue;
      for (let b = 0; b < 32; b++) {
        const value = (word >>> b) & 1;
        if (value === bit) continue;
        if (scratchLength === scratch.length) {
          const grown = new Int32Array(scratch.length * 2);
          grown.set(scratch);
          scratch = grown;
        }
        scratch[scratchLength++] = w * 32 + b;
        bit = value;
      }
    }
  };
  const sameRuns = (runs: Int32Array) => {
    if (runs.length !== scratchLength) return false;
    for (let i = 0; i < scratchLength; i++) if (runs[i] !== scratch[i]) return false;
    return true;
  };
  // remember adds (current set, state) to the memo; false when it was already there.
  const remember = (state: State): boolean => {
    const stateHash = model.hash(state) >>> 0;
    const low = (hashLow ^ Math.imul(stateHash, 0x9e3779b1)) >>> 0;
    const high = (hashHigh ^ Math.imul(stateHash ^ (stateHash >>> 16), 0x85ebca6b)) & 0x1fffff;
    const key = high * 2 ** 32 + low;
    const found = memo.get(key);
    encodeRuns();
    if (found !== undefined) {
      const list = Array.isArray(found) ? found : [found];
      for (const entry of list) {
        if (sameRuns(entry.runs) && model.equal(entry.state, state)) return false;
      }
    }
    const entry = { runs: scratch.slice(0, scratchLength), state };
    if (found === undefined) memo.set(key, entry);
    else if (Array.isArray(found)) found.push(entry);
    else memo.set(key, [found, entry]);
    memoEntries++;
    return true;
  };

  // The search keeps one level per placed op. Level d holds the state after d placements
  // and its candidates: the calls ahead of the first return entry in the list, which is the
  // op that must be placed before anything called after it (the level's deadline). Reads
  // that fit are placed at once without alternatives (see Model.readOnly: a "forced"
  // placement); other candidates are tried in order of return time, because an op that must
  // finish soon usually takes effect soon and one with a long interval can wait.
  const placedNode = new Int32Array(opCount);
  const placedForced = new Uint8Array(opCount);
  const stateBefore: State[] = [];
  const levelStart = new Int32Array(opCount + 1);
  const levelEnd = new Int32Array(opCount + 1);
  const levelCursor = new Int32Array(opCount + 1);
  const levelDeadline = new Int32Array(opCount + 1);
  let candidates = new Int32Array(256);
  let depth = 0;
  const readOnly = Uint8Array.from(byId, (op) => model.readOnly?.(op) === true ? 1 : 0);
  const returnTime = Float64Array.from(byId, (op, id) => known[id] ? op.return! : Infinity);

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

  // place linearizes the op of call node `at` (already flipped into the set and remembered).
  const place = (at: number, nextState: State, forced: boolean) => {
    placedNode[depth] = at;
    placedForced[depth] = forced ? 1 : 0;
    stateBefore[depth] = state;
    depth++;
    if (depth > bestLength) {
      for (let i = agree; i < depth; i++) best[i] = nodeId[placedNode[i]!]!;
      bestLength = depth;
      agree = depth;
      blocked = nil;
    }
    state = nextState;
    lift(at);
    if (known[nodeId[at]!]) knownLeft--;
  };
  // unplace undoes the newest placement; it returns whether that placement was forced.
  const unplace = (): boolean => {
    depth--;
    const at = placedNode[depth]!;
    const id = nodeId[at]!;
    state = stateBefore[depth]!;
    flip(id);
    unlift(at);
    if (known[id]) knownLeft++;
    if (agree > depth) agree = depth;
    return placedForced[depth] === 1;
  };
  // enter fills in the current level: it places a fitting read (true: a new level to
  // enter), or collects the candidates (false). A read whose placement was explored before
  // leaves the level with no candidates, since its failure is this level's failure.
  const enter = (): boolean => {
    const start = depth === 0 ? 0 : levelEnd[depth - 1]!;
    let end = start;
    let scan = next[head]!;
    for (; scan !== nil && nodeIsCall[scan] === 1; scan = next[scan]!) {
      const id = nodeId[scan]!;
      if (readOnly[id] === 1) {
        const nextState = model.step(state, byId[id]!);
        if (nextState === undefined) continue;
        flip(id);
        if (remember(nextState)) {
          levelEnd[depth] = start;
          place(scan, nextState, true);
          return true;
        }
        flip(id);
        end = start;
        break;
      }
      if (end === candidates.length) {
        const grown = new Int32Array(candidates.length * 2);
        grown.set(candidates);
        candidates = grown;
      }
      // Insertion by return time keeps the level sorted; levels are small.
      let at = end++;
      const deadlineOf = returnTime[id]!;
      while (at > start && returnTime[nodeId[candidates[at - 1]!]!]! > deadlineOf) {
        candidates[at] = candidates[at - 1]!;
        at--;
      }
      candidates[at] = scan;
    }
    assert(scan !== nil, "an op with a known outcome has a return entry ahead of the cursor");
    levelStart[depth] = start;
    levelEnd[depth] = end;
    levelCursor[depth] = start;
    levelDeadline[depth] = nodeIsCall[scan] === 1 ? nil : nodeId[scan]!;
    return false;
  };

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
      const at = candidates[cursor]!;
      const id = nodeId[at]!;
      const nextState = model.step(state, byId[id]!);
      if (nextState === undefined) continue;
      flip(id);
      if (remember(nextState)) {
        place(at, nextState, false);
        entering = true;
      } else {
        flip(id);
      }
      continue;
    }
    // Every candidate failed: the deadline op cannot be placed from here. Undo placements
    // back to the newest level with a candidate left.
    if (depth === bestLength && agree === depth && blocked === nil) blocked = levelDeadline[depth]!;
    do {
      if (depth === 0) break search;
    } while (unplace());
  }
  if (knownLeft === 0) return report("ok");
  assert(blocked !== nil, "the search records the op that blocked its longest prefix");
  return report("illegal", {
    counterexample: explain(model, byId, Array.from(best.subarray(0, bestLength)), blocked, {
      callNode,
      returnNode,
    }),
  });
}

/** explain builds the counterexample from the longest prefix and the op that blocked it. */
function explain<State, Op extends TimedOperation>(
  model: Model<State, Op>,
  byId: readonly Op[],
  prefix: number[],
  blocked: number,
  nodes: { callNode: Int32Array; returnNode: Int32Array },
): Counterexample<Op> {
  let state = model.init();
  let writer = nil;
  for (const id of prefix) {
    const nextState = model.step(state, byId[id]!);
    assert(nextState !== undefined, "the longest prefix replays");
    if (!model.equal(state, nextState)) writer = id;
    state = nextState;
  }
  // Pending: not linearized, and called before the blocked op returned (list order).
  const inPrefix = new Set(prefix);
  const deadline = nodes.returnNode[blocked]!;
  const pending: { op: Op; why: string }[] = [];
  byId.forEach((op, id) => {
    if (inPrefix.has(id) || nodes.callNode[id]! > deadline) return;
    const nextState = model.step(state, op);
    const why = nextState === undefined
      ? `cannot take effect now: ${model.explainStep?.(state, op) ?? "the model refuses it"}`
      : "could take effect now, but no order of the remaining operations works after it";
    pending.push({ op, why });
  });
  const windowStart = Math.min(...pending.map(({ op }) => op.call));
  const involvedIds = new Set<number>(
    byId.map((_, id) => id).filter((id) => !inPrefix.has(id) && nodes.callNode[id]! <= deadline),
  );
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
    `After it ${model.describeState(state)}. The operations that could come next:`,
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
 * independent registers, so the history is linearizable exactly when each key's is). It
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
      ? { result: "unknown", ops: ops.length, explored: 0, elapsedMs: 0, reason: "not started" }
      : checkOperations(kvModel, ops, {
        deadline,
        now,
        ...(options.memoEntriesMax === undefined ? {} : { memoEntriesMax: options.memoEntriesMax }),
      });
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
