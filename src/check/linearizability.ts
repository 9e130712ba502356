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
// The rooms: model.ts (the words: Model, reports), op_facts.ts (what the model says of each
// op), entry_list.ts (the call and return list), linearized_set.ts (the set and its hash),
// memo.ts, need_ledger.ts (abandoning hopeless levels), unknown_offers.ts (which ops with
// unknown outcome to try where), search.ts (the levels and the loop), refute.ts (the check
// before the search), explain.ts (counterexamples). This file runs them on each key.
//
// Pure: no I/O. The clock that enforces the time bound is injectable.

import { assert } from "../lib/assert.ts";
import {
  anonymizeUnread,
  describeKvOperation,
  kvModel,
  type KvOperation,
  partitionByKey,
  validateHistory,
} from "./kv_model.ts";
import { explain, orphanBlocker } from "./explain.ts";
import type { CheckResult, Model, PartitionReport, TimedOperation } from "./model.ts";
import { opFacts } from "./op_facts.ts";
import { refute } from "./refute.ts";
import { orphanBlocked, Search } from "./search.ts";
import { nil } from "./tables.ts";

export type {
  CheckResult,
  Counterexample,
  Model,
  PartitionReport,
  TimedOperation,
} from "./model.ts";

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
  const facts = opFacts(model, ops);
  const report = (
    result: CheckResult,
    explored: number,
    extra: Partial<PartitionReport<Op>> = {},
  ): PartitionReport<Op> => ({
    result,
    ops: ops.length,
    explored,
    elapsedMs: options.now() - started,
    ...extra,
  });
  if (options.refuteFirst !== false && facts.wildcard.every((flag) => flag === 0)) {
    const refuted = refute(model, facts);
    if (refuted !== undefined) return report("illegal", 0, { counterexample: refuted });
  }
  const search = new Search(model, facts);
  const { deadline, now } = options;
  const memoEntriesMax = options.memoEntriesMax ?? memoEntriesMaxDefault;
  const outcome = search.run({ deadline, now, memoEntriesMax });
  const explored = search.memo.entries;
  if (outcome.result === "unknown") return report("unknown", explored, { reason: outcome.reason });
  if (outcome.result === "ok") return report("ok", explored);
  assert(search.blocked !== nil, "the search records the op that blocked its longest prefix");
  const prefix = search.longestPrefix();
  const blocked = search.blocked === orphanBlocked
    ? orphanBlocker(model, facts, prefix)
    : search.blocked;
  return report("illegal", explored, { counterexample: explain(model, facts, prefix, blocked) });
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
