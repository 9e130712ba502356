// The words a linearizability check is stated in: the operations it orders, the sequential
// model it checks them against, and what it reports. Models (kv_model.ts) and the checker
// (linearizability.ts) both depend on this file, and on nothing of each other's.

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
