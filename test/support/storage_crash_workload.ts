// The workload of the storage crash test. The child process (storage_crash_child.ts) runs
// it against a real SqliteStorage; the test runs the same seeded steps against a model, so
// it knows the exact durable state after every acknowledged step.
//
// Every entry's data and every snapshot's bytes are a pure function of (index, term), so
// a torn or misplaced write is recognised byte for byte.

import type {
  Entry,
  EntryKind,
  HardState,
  RestoredState,
  SnapshotMeta,
} from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";

export interface ModelEntry {
  index: number;
  term: number;
  kind: EntryKind;
}

/** Model is the durable state the storage should hold, without the bytes. */
export interface Model {
  hardState: HardState;
  snapshot: SnapshotMeta | undefined;
  entries: ModelEntry[];
}

export type Step =
  | { type: "persist"; hardState: HardState; entries: Entry[] }
  | { type: "snapshot"; meta: SnapshotMeta; data: Uint8Array }
  | { type: "compact"; index: number }
  /** A follower's: stage the snapshot in chunks, then install it. */
  | { type: "install"; meta: SnapshotMeta; data: Uint8Array; chunkBytes: number }
  /** An incoming snapshot staged up to `received`, then abandoned: it changes nothing. */
  | { type: "stage"; meta: SnapshotMeta; data: Uint8Array; received: number };

const voters = ["node-a", "node-b", "node-c"] as const;
const entriesPerBatchMax = 40;

export function modelOf(state: RestoredState): Model {
  return {
    hardState: { ...state.hardState },
    snapshot: state.snapshot === undefined ? undefined : { ...state.snapshot },
    entries: state.entries.map(({ index, term, kind }) => ({ index, term, kind })),
  };
}

export function cloneModel(model: Model): Model {
  return {
    hardState: { ...model.hardState },
    snapshot: model.snapshot === undefined ? undefined : { ...model.snapshot },
    entries: model.entries.map((entry) => ({ ...entry })),
  };
}

export function lastIndexOf(model: Model): number {
  return model.entries.at(-1)?.index ?? model.snapshot?.index ?? 0;
}

function termAt(model: Model, index: number): number {
  if (index === 0) return 0;
  const first = model.entries[0];
  const entry = first === undefined ? undefined : model.entries[index - first.index];
  if (entry !== undefined && entry.index === index) return entry.term;
  if (index === model.snapshot?.index) return model.snapshot.term;
  throw new RangeError(`Model has no entry at index ${index}`);
}

/**
 * Workload generates steps like a Raft node's: appends in the current term, new terms that
 * overwrite an uncommitted suffix, commit advances, snapshots of the committed prefix,
 * compactions of the log up to the snapshot, and, as a follower that fell behind, snapshots
 * received from a leader (installed, or abandoned part way).
 * Each call to next() also applies the step to `model`.
 */
export class Workload {
  readonly model: Model;
  readonly #random: Prng;

  constructor(seed: number, model: Model) {
    this.#random = new Prng(seed);
    this.model = model;
  }

  next(): Step {
    const random = this.#random;
    const model = this.model;
    const { term, votedFor, commitIndex } = model.hardState;
    const snapshotIndex = model.snapshot?.index ?? 0;
    const lastIndex = lastIndexOf(model);

    if (commitIndex > snapshotIndex && random.chance(0.1)) {
      const bytes = random.chance(0.25)
        ? random.int(1_100_000, 2_300_000) // more than one 1 MiB piece
        : random.int(0, 64 * 1024);
      const meta = { index: commitIndex, term: termAt(model, commitIndex), bytes };
      const step: Step = { type: "snapshot", meta, data: snapshotData(meta) };
      applyStep(model, step);
      return step;
    }

    const firstIndex = model.entries[0]?.index ?? lastIndex + 1;
    if (firstIndex < snapshotIndex && random.chance(0.1)) {
      const step: Step = { type: "compact", index: random.int(firstIndex + 1, snapshotIndex + 1) };
      applyStep(model, step);
      return step;
    }

    if (term >= 1 && random.chance(0.08)) {
      const step = this.#incoming(lastIndex);
      applyStep(model, step);
      return step;
    }

    let nextTerm = term;
    let first = lastIndex + 1;
    let nextVote = votedFor;
    if (term === 0 || random.chance(0.15)) {
      nextTerm = term + 1;
      nextVote = random.pick(voters);
      // A new leader may overwrite any entry that is not committed (§5.3).
      if (random.chance(0.6)) {
        first = random.int(Math.max(commitIndex, snapshotIndex) + 1, first + 1);
      }
    }
    const count = random.int(nextTerm === term ? 1 : 0, entriesPerBatchMax);
    const entries: Entry[] = [];
    for (let i = 0; i < count; i++) {
      const index = first + i;
      const kind: EntryKind = i === 0 && nextTerm !== term
        ? "noop"
        : random.chance(0.02)
        ? "fence"
        : "command";
      entries.push({ index, term: nextTerm, kind, data: entryData(index, nextTerm) });
    }
    const newLastIndex = entries.at(-1)?.index ?? lastIndex;
    const nextCommit = random.int(commitIndex, newLastIndex + 1);
    const step: Step = {
      type: "persist",
      hardState: { term: nextTerm, votedFor: nextVote, commitIndex: nextCommit },
      entries,
    };
    applyStep(model, step);
    return step;
  }

  /**
   * incoming is a leader's snapshot past this follower's log (in the current term or an
   * earlier one): installed, or staged in part and abandoned.
   */
  #incoming(lastIndex: number): Step {
    const random = this.#random;
    const { term } = this.model.hardState;
    const meta = {
      index: lastIndex + random.int(1, 30),
      term: random.int(Math.max(1, termAt(this.model, lastIndex)), term + 1),
      bytes: random.chance(0.4) ? random.int(1_100_000, 2_300_000) : random.int(0, 64 * 1024),
    };
    const data = snapshotData(meta);
    if (random.chance(0.7)) {
      const chunkBytes = random.pick([64 * 1024, 256 * 1024, 1024 * 1024]);
      return { type: "install", meta, data, chunkBytes };
    }
    return { type: "stage", meta, data, received: random.int(0, meta.bytes + 1) };
  }
}

export function applyStep(model: Model, step: Step): void {
  if (step.type === "stage") return;
  if (step.type === "snapshot") {
    model.snapshot = { ...step.meta };
    return;
  }
  if (step.type === "install") {
    // The whole log goes; the commit index reaches the snapshot.
    model.snapshot = { ...step.meta };
    model.entries = [];
    model.hardState.commitIndex = Math.max(model.hardState.commitIndex, step.meta.index);
    return;
  }
  if (step.type === "compact") {
    model.entries = model.entries.filter((entry) => entry.index >= step.index);
    return;
  }
  model.hardState = { ...step.hardState };
  const first = step.entries[0];
  if (first !== undefined) {
    model.entries = model.entries.filter((entry) => entry.index < first.index);
    for (const { index, term, kind } of step.entries) model.entries.push({ index, term, kind });
  }
}

/**
 * ackLine is what the child prints once a step is durable (or, for `stage`, done):
 * `ack <lastIndex> <term of that entry> <commitIndex> <hard state term>`,
 * `snap <index> <term> <bytes>`, `compact <index>`, `install <index> <term> <bytes>` or
 * `stage <index> <term> <received>`.
 */
export function ackLine(step: Step, model: Model): string {
  if (step.type === "compact") return `compact ${step.index}`;
  if (step.type === "snapshot" || step.type === "install") {
    const word = step.type === "snapshot" ? "snap" : "install";
    return `${word} ${step.meta.index} ${step.meta.term} ${step.meta.bytes}`;
  }
  if (step.type === "stage") return `stage ${step.meta.index} ${step.meta.term} ${step.received}`;
  const lastIndex = lastIndexOf(model);
  const { term, commitIndex } = model.hardState;
  return `ack ${lastIndex} ${termAt(model, lastIndex)} ${commitIndex} ${term}`;
}

/** entryData is an entry's bytes: a readable prefix, then 8 to ~70000 seeded bytes. */
export function entryData(index: number, term: number): Uint8Array {
  const hash = mix(index, term);
  const length = hash % 97 === 0 ? 64 * 1024 + (hash % 4096) : 8 + (hash % 300);
  const prefix = new TextEncoder().encode(`${index}/${term}:`);
  const data = seededBytes(hash, prefix.length + length);
  data.set(prefix, 0);
  return data;
}

export function snapshotData(meta: SnapshotMeta): Uint8Array {
  return seededBytes(mix(meta.index, meta.term ^ 0x5eed), meta.bytes);
}

function mix(index: number, term: number): number {
  let h = Math.imul(index >>> 0, 0x9e3779b1) ^ Math.imul(Math.floor(index / 2 ** 32), 0x85ebca6b);
  h = Math.imul(h ^ term, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function seededBytes(seed: number, length: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(length / 4));
  let state = seed | 1;
  for (let i = 0; i < words.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[i] = state >>> 0;
  }
  return new Uint8Array(words.buffer, 0, length);
}
