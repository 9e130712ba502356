// The key-value model the linearizability checker uses for keel's client API, and the
// acknowledged-writes check a chaos run makes against the final state.
//
// A history is a list of KvOperation records, one per client call. Each key is an
// independent register whose state is its value (null: absent), so a history is checked one
// key at a time (partitionByKey).
//
// An operation whose outcome is unknown (timeout, connection lost) has `return` null or
// Infinity. It may take effect at any point after its call, or not at all, and its output is
// ignored. A get with an unknown outcome constrains nothing and is dropped before checking.
//
// kvModel also states the facts about each op that the search prunes on (see Model in
// model.ts); a property test checks every one of them against kvStep.

import type { Model, TimedOperation } from "./model.ts";

/** KvValue is the state of one key: its value, or null when the key is absent. */
export type KvValue = string | null;

interface KvCall {
  clientId: string | number;
  key: string;
  /** call is when the client sent the request (any monotonic clock, e.g. performance.now()). */
  call: number;
  /** return is when the response arrived; null or Infinity when the outcome is unknown. */
  return: number | null;
}

/** KvGet reads a key; output is the value read (null: absent). */
export interface KvGet extends KvCall {
  op: "get";
  input?: null | undefined;
  output?: KvValue | undefined;
}

/** KvPut sets a key to input; it always succeeds, so its output carries no information. */
export interface KvPut extends KvCall {
  op: "put";
  input: string;
  output?: "ok" | null | undefined;
}

/**
 * KvDelete removes a key. Its output is whether the key existed; "ok", null or a missing
 * output mean the client was not told, and leave it unconstrained.
 */
export interface KvDelete extends KvCall {
  op: "delete";
  input?: null | undefined;
  output?: boolean | "ok" | null | undefined;
}

/**
 * KvCas sets the key to input.value (null: delete it) if its value equals input.expected
 * (null: the key is absent). Its output is whether it did, either as a boolean or as
 * `{ ok, current }` where `current` (when given) is the value a failed cas saw.
 */
export interface KvCas extends KvCall {
  op: "cas";
  input: { expected: KvValue; value: KvValue };
  output?: boolean | KvCasOutput | null | undefined;
}

/** KvCasOutput is the detailed result of a cas; `current` is meaningful only when !ok. */
export interface KvCasOutput {
  ok: boolean;
  current?: KvValue | undefined;
}

/** KvOperation is one client call in a recorded history. */
export type KvOperation = KvGet | KvPut | KvDelete | KvCas;

/** outcomeKnown is false for an operation that timed out or lost its connection. */
export function outcomeKnown(op: TimedOperation): boolean {
  return op.return !== null && op.return !== Infinity;
}

/**
 * validateHistory returns a description of every malformed operation (empty when the
 * history is well formed). A checker given a malformed history would answer a question
 * nobody asked, so checkHistory refuses one.
 */
export function validateHistory(history: readonly KvOperation[]): string[] {
  const problems: string[] = [];
  history.forEach((op, index) => {
    const problem = (text: string) =>
      problems.push(`Operation ${index} (${op.op} of key ${JSON.stringify(op.key)}) ${text}`);
    if (typeof op.key !== "string") problem("has no string key");
    if (!Number.isFinite(op.call)) problem(`has a call time of ${op.call}`);
    if (Number.isFinite(op.call) && op.return !== null && !(op.return >= op.call)) {
      problem(`returns at ${op.return}, before its call at ${op.call}`);
    }
    switch (op.op) {
      case "get":
        if (outcomeKnown(op) && op.output === undefined) problem("returned but has no output");
        break;
      case "put":
        if (typeof op.input !== "string") problem("has no string value");
        break;
      case "delete":
        break;
      case "cas":
        if (
          typeof op.input !== "object" || op.input === null ||
          (op.input.expected !== null && typeof op.input.expected !== "string") ||
          (op.input.value !== null && typeof op.input.value !== "string")
        ) {
          problem("needs an input of { expected, value }");
        }
        break;
      default:
        problems.push(
          `Operation ${index} has an unknown op ${
            JSON.stringify((op as KvCall & { op: unknown }).op)
          }`,
        );
    }
  });
  return problems;
}

/**
 * partitionByKey splits a history into one history per key, dropping gets with an unknown
 * outcome (they neither change the state nor report one). Order within a key is kept.
 */
export function partitionByKey(history: readonly KvOperation[]): Map<string, KvOperation[]> {
  const byKey = new Map<string, KvOperation[]>();
  for (const op of history) {
    let ops = byKey.get(op.key);
    if (ops === undefined) {
      ops = [];
      byKey.set(op.key, ops);
    }
    if (op.op === "get" && !outcomeKnown(op)) continue;
    ops.push(op);
  }
  return byKey;
}

/** casOutcome normalizes a cas output; undefined when the client was not told. */
function casOutcome(op: KvCas): KvCasOutput | undefined {
  if (!outcomeKnown(op)) return undefined;
  const output = op.output;
  if (typeof output === "boolean") return { ok: output };
  if (output === null || output === undefined) return undefined;
  return output;
}

/** deleteOutcome is whether a delete reported that the key existed; undefined: not told. */
function deleteOutcome(op: KvDelete): boolean | undefined {
  if (!outcomeKnown(op)) return undefined;
  return typeof op.output === "boolean" ? op.output : undefined;
}

/**
 * kvStep applies op to the value of its key. It returns the next value, or undefined when
 * the op's recorded output is impossible in this state. An op with unknown outcome always
 * applies (its output is unconstrained).
 */
export function kvStep(state: KvValue, op: KvOperation): KvValue | undefined {
  switch (op.op) {
    case "get":
      if (!outcomeKnown(op) || op.output === undefined) return state;
      return op.output === state ? state : undefined;
    case "put":
      return op.input;
    case "delete": {
      const deleted = deleteOutcome(op);
      if (deleted !== undefined && deleted !== (state !== null)) return undefined;
      return null;
    }
    case "cas": {
      const matches = state === op.input.expected;
      const outcome = casOutcome(op);
      if (outcome !== undefined) {
        if (outcome.ok !== matches) return undefined;
        if (!outcome.ok && outcome.current !== undefined && outcome.current !== state) {
          return undefined;
        }
      }
      return matches ? op.input.value : state;
    }
  }
}

/**
 * unreadValue stands in, during a check, for every written value of a key that no operation
 * observes (see anonymizeUnread).
 */
export const unreadValue = "\u0000unread";

/**
 * anonymizeUnread replaces each value written to a key that no operation of the key
 * observes (no get returned it, no cas expected it or reported it as current) by
 * unreadValue, and returns the new ops with a map back to the originals. No operation can
 * tell such values apart, nor tell them from unreadValue, so the history is linearizable
 * exactly when the anonymized one is; but the search sees far fewer distinct states, and the
 * writes of unread values become interchangeable, which matters most for the many writes
 * with unknown outcome that never took effect. A history that itself uses unreadValue is
 * returned unchanged.
 */
export function anonymizeUnread(
  ops: readonly KvOperation[],
): { ops: KvOperation[]; originals: Map<KvOperation, KvOperation> } {
  const observed = new Set<KvValue>();
  let clash = false;
  for (const op of ops) {
    if (op.op === "get" && outcomeKnown(op) && op.output !== undefined) observed.add(op.output);
    if (op.op === "put" && op.input === unreadValue) clash = true;
    if (op.op === "cas") {
      observed.add(op.input.expected);
      const current = casOutcome(op)?.current;
      if (current !== undefined) observed.add(current);
      if (op.input.value === unreadValue) clash = true;
    }
  }
  const originals = new Map<KvOperation, KvOperation>();
  if (clash || observed.has(unreadValue)) return { ops: [...ops], originals };
  const renamed = ops.map((op): KvOperation => {
    let copy: KvOperation | undefined;
    if (op.op === "put" && !observed.has(op.input)) copy = { ...op, input: unreadValue };
    if (op.op === "cas" && op.input.value !== null && !observed.has(op.input.value)) {
      copy = { ...op, input: { ...op.input, value: unreadValue } };
    }
    if (copy === undefined) return op;
    originals.set(copy, op);
    return copy;
  });
  return { ops: renamed, originals };
}

/** describeValue prints a value as the explanations show it. */
export function describeValue(value: KvValue): string {
  if (value === unreadValue) return "one no operation read";
  return value === null ? "absent" : JSON.stringify(value);
}

function describeOutput(op: KvOperation): string {
  if (!outcomeKnown(op)) return "?";
  switch (op.op) {
    case "get":
      return op.output === undefined ? "?" : describeValue(op.output);
    case "put":
      return "ok";
    case "delete": {
      const deleted = deleteOutcome(op);
      return deleted === undefined ? "ok" : deleted ? "deleted" : "not found";
    }
    case "cas": {
      const outcome = casOutcome(op);
      if (outcome === undefined) return "ok?";
      if (outcome.ok) return "ok";
      return outcome.current === undefined
        ? "failed"
        : `failed, saw ${describeValue(outcome.current)}`;
    }
  }
}

/** describeKvOperation prints an op with its client and interval, for explanations. */
export function describeKvOperation(op: KvOperation): string {
  let call: string;
  switch (op.op) {
    case "get":
      call = "get()";
      break;
    case "put":
      call = `put(${JSON.stringify(op.input)})`;
      break;
    case "delete":
      call = "delete()";
      break;
    case "cas":
      call = `cas(${describeValue(op.input.expected)} -> ${describeValue(op.input.value)})`;
      break;
  }
  const end = outcomeKnown(op) ? String(op.return) : "?";
  return `${call} -> ${describeOutput(op)} [client ${op.clientId}, ${op.call}..${end}]`;
}

/** explainKvStep says why op cannot take effect when the key's value is state. */
function explainKvStep(state: KvValue, op: KvOperation): string {
  const now = describeValue(state);
  switch (op.op) {
    case "get":
      return `it read ${describeValue(op.output ?? null)} but the value was ${now}`;
    case "delete":
      return `it reported ${describeOutput(op)} but the value was ${now}`;
    case "cas": {
      const outcome = casOutcome(op);
      if (outcome?.ok === true) {
        return `it succeeded but the value was ${now}, not ${describeValue(op.input.expected)}`;
      }
      if (state === op.input.expected) return `it failed but the value was the expected ${now}`;
      return `it reported ${describeOutput(op)} but the value was ${now}`;
    }
    case "put":
      return "a put always applies";
  }
}

/** hashString is 32-bit FNV-1a over UTF-16 code units. */
function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  }
  return hash >>> 0;
}

/** kvModel is the per-key register model of keel's kv service. */
export const kvModel: Model<KvValue, KvOperation> = {
  init: () => null,
  step: kvStep,
  hash: (state) => state === null ? 0x9e3779b9 : hashString(state),
  equal: (a, b) => a === b,
  describeOperation: describeKvOperation,
  describeState: (state) => `the value is ${describeValue(state)}`,
  explainStep: explainKvStep,
  readOnly: kvReadOnly,
  requires: kvRequires,
  produces: kvProduces,
  overwrites: kvOverwrites,
  blind: kvBlind,
  enabledBy: (op) => op.op === "cas" ? op.input.expected : undefined,
};

/** kvBlind: a put, or a delete whose outcome was not reported, ignores the value before. */
function kvBlind(op: KvOperation): boolean {
  return op.op === "put" || (op.op === "delete" && deleteOutcome(op) === undefined);
}

/** kvOverwrites: a completed put or delete, or a cas that reported success. */
function kvOverwrites(op: KvOperation): boolean {
  if (!outcomeKnown(op)) return false;
  switch (op.op) {
    case "get":
      return false;
    case "put":
    case "delete":
      return true;
    case "cas":
      return casOutcome(op)?.ok === true;
  }
}

/** kvRequires is the one value op's output needs, if there is one. */
function kvRequires(op: KvOperation): KvValue | undefined {
  if (!outcomeKnown(op)) return undefined;
  switch (op.op) {
    case "get":
      return op.output;
    case "put":
      return undefined;
    case "delete":
      return deleteOutcome(op) === false ? null : undefined;
    case "cas": {
      const outcome = casOutcome(op);
      if (outcome === undefined) return undefined;
      return outcome.ok ? op.input.expected : outcome.current;
    }
  }
}

/** kvProduces is the value op leaves whenever it changes the value. */
function kvProduces(op: KvOperation): KvValue | undefined {
  switch (op.op) {
    case "get":
      return undefined;
    case "put":
      return op.input;
    case "delete":
      return null;
    case "cas":
      return op.input.value;
  }
}

/**
 * kvReadOnly: a get, a cas that reported failure, a delete that reported the key absent, and
 * a cas that succeeded in writing the value it expected never change the value.
 */
function kvReadOnly(op: KvOperation): boolean {
  switch (op.op) {
    case "get":
      return true;
    case "put":
      return false;
    case "delete":
      return deleteOutcome(op) === false;
    case "cas": {
      const outcome = casOutcome(op);
      if (outcome === undefined) return false;
      return !outcome.ok || op.input.expected === op.input.value;
    }
  }
}

/** MutationEffect is what an op may have done to its key. */
type MutationEffect =
  | { kind: "none" }
  | { kind: "definite"; value: KvValue }
  | { kind: "possible"; value: KvValue };

function mutationEffect(op: KvOperation): MutationEffect {
  const known = outcomeKnown(op);
  switch (op.op) {
    case "get":
      return { kind: "none" };
    case "put":
      return { kind: known ? "definite" : "possible", value: op.input };
    case "delete":
      return { kind: known ? "definite" : "possible", value: null };
    case "cas": {
      const outcome = casOutcome(op);
      if (outcome === undefined) return { kind: "possible", value: op.input.value };
      return outcome.ok ? { kind: "definite", value: op.input.value } : { kind: "none" };
    }
  }
}

/** LostWrite describes a key whose final value no possible last write explains. */
export interface LostWrite {
  key: string;
  /** final is the value read after the run. */
  final: KvValue;
  /** possible lists the final values some linearization of the history would leave. */
  possible: KvValue[];
  /**
   * writes are the acknowledged writes that could each have been the last to take effect;
   * one of them (whichever was last) is missing from the final state.
   */
  writes: KvOperation[];
}

/** AcknowledgedWritesReport is the result of checkAcknowledgedWritesPresent. */
export interface AcknowledgedWritesReport {
  ok: boolean;
  lost: LostWrite[];
  /** checkedKeys counts the keys compared with the final state. */
  checkedKeys: number;
  /** unchecked lists keys the history touches that finalState does not mention. */
  unchecked: string[];
}

/**
 * checkAcknowledgedWritesPresent compares the final state read after a run (all clients
 * stopped) with the writes of the history, and reports keys whose final value no possible
 * last write explains: an acknowledged write was lost.
 *
 * Soundness under concurrency: a write W could be the last to take effect on its key unless
 * some definitely applied write (an acknowledged put or delete, or a cas that reported
 * success) was called after W returned; writes with an unknown outcome may or may not have
 * applied, so they can be last but never rule another write out. The final value must be
 * the value left by one of those candidates, or absent when no write was acknowledged.
 * Concurrent acknowledged writes therefore never raise a false alarm: either of their values
 * is accepted. The check is weaker than appending the final reads to the history as gets
 * called after every other operation and running checkHistory (which also catches, say, a
 * final value an earlier completed write had overwritten but a concurrent one restored); it
 * exists to count lost acknowledged writes in a form a person reads at a glance.
 *
 * A key the history touches but finalState omits is listed in `unchecked`, not assumed
 * absent. A key in finalState that the history never wrote must be absent.
 */
export function checkAcknowledgedWritesPresent(
  history: readonly KvOperation[],
  finalState: ReadonlyMap<string, KvValue>,
): AcknowledgedWritesReport {
  const byKey = partitionByKey(history);
  for (const key of finalState.keys()) {
    if (!byKey.has(key)) byKey.set(key, []);
  }
  const lost: LostWrite[] = [];
  const unchecked: string[] = [];
  let checkedKeys = 0;
  for (const [key, ops] of byKey) {
    if (!finalState.has(key)) {
      unchecked.push(key);
      continue;
    }
    checkedKeys++;
    const final = finalState.get(key) ?? null;
    const writes = ops.map((op) => ({ op, effect: mutationEffect(op) }))
      .filter((write) => write.effect.kind !== "none");
    // The latest call among definite writes decides which writes could still be last: W can
    // be last unless a definite write was called after W returned.
    let definiteCallLatest = -Infinity;
    for (const write of writes) {
      if (write.effect.kind === "definite") {
        definiteCallLatest = Math.max(definiteCallLatest, write.op.call);
      }
    }
    const candidates = writes.filter((write) => {
      const returned = outcomeKnown(write.op) ? write.op.return! : Infinity;
      return !(returned < definiteCallLatest);
    });
    const possible: KvValue[] = [];
    if (definiteCallLatest === -Infinity) possible.push(null);
    for (const write of candidates) {
      const value = (write.effect as { value: KvValue }).value;
      if (!possible.includes(value)) possible.push(value);
    }
    if (!possible.includes(final)) {
      lost.push({
        key,
        final,
        possible,
        writes: candidates.filter((write) => write.effect.kind === "definite").map((w) => w.op),
      });
    }
  }
  return { ok: lost.length === 0, lost, checkedKeys, unchecked };
}
