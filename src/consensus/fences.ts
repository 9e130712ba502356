// Fences: the incarnation table of the replacement protocol (DESIGN §3, rules R4-R7).
//
// A fence entry {name, incarnation} in the log says: from this index on, member `name` is
// the host with `incarnation`; every earlier incarnation of that name is superseded. A
// member with no fence is still its original incarnation, whatever it is.
//
// The table is replicated state. Fences at or below the compaction point live in `base`
// (restored from the snapshot); fences in the in-memory log window live in `inLog`,
// uncommitted ones included, because a node must already refuse a superseded
// incarnation while the fence that supersedes it is on its way to commit.

import { assert } from "../lib/assert.ts";
import type { Entry, NodeId } from "./types.ts";

/** Fence is one fence entry's content and position. */
export interface Fence {
  index: number;
  name: NodeId;
  incarnation: string;
}

/** FenceTableEntry is a member's current incarnation and the ones it superseded. */
export interface FenceTableEntry {
  incarnation: string;
  index: number;
  superseded: string[];
}

/** FenceTable is the serializable table at some log index (kept in snapshots). */
export type FenceTable = Record<NodeId, FenceTableEntry>;

/** Superseded incarnations kept per member; older ones are forgotten (bounded). */
export const supersededPerMemberMax = 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** encodeFence is the data of a fence entry. */
export function encodeFence(name: NodeId, incarnation: string): Uint8Array {
  return encoder.encode(JSON.stringify({ name, incarnation }));
}

/** decodeFence reads a fence entry; a malformed one is a bug (we wrote it). */
export function decodeFence(entry: Entry): Fence {
  assert(entry.kind === "fence", "decodeFence needs a fence entry");
  const value = JSON.parse(decoder.decode(entry.data)) as { name?: unknown; incarnation?: unknown };
  assert(
    typeof value.name === "string" && typeof value.incarnation === "string",
    "fence entry must name a member and an incarnation",
  );
  return { index: entry.index, name: value.name, incarnation: value.incarnation };
}

export class Fences {
  #base = new Map<NodeId, FenceTableEntry>();
  /** Fence entries in the in-memory log, in index order. */
  #inLog: Fence[] = [];

  static fromTable(table: FenceTable | undefined): Fences {
    const fences = new Fences();
    fences.resetBase(table);
    return fences;
  }

  resetBase(table: FenceTable | undefined): void {
    this.#base = new Map();
    this.#inLog = [];
    for (const [name, entry] of Object.entries(table ?? {})) {
      this.#base.set(name, {
        incarnation: entry.incarnation,
        index: entry.index,
        superseded: entry.superseded.slice(),
      });
    }
  }

  /** onAppend records a fence entry appended to the log. */
  onAppend(entry: Entry): void {
    if (entry.kind !== "fence") return;
    const last = this.#inLog[this.#inLog.length - 1];
    assert(last === undefined || last.index < entry.index, "fences are appended in index order");
    this.#inLog.push(decodeFence(entry));
  }

  /** onTruncate forgets fences at index >= index (they were never committed). */
  onTruncate(index: number): void {
    while (this.#inLog.length > 0 && this.#inLog[this.#inLog.length - 1]!.index >= index) {
      this.#inLog.pop();
    }
  }

  /** onCompact folds fences at or below index into the base table. */
  onCompact(index: number): void {
    while (this.#inLog.length > 0 && this.#inLog[0]!.index <= index) {
      const fence = this.#inLog.shift()!;
      this.#base = applyFence(this.#base, fence);
    }
  }

  /** current returns the member's latest fence (uncommitted ones included). */
  current(name: NodeId): { incarnation: string; index: number } | undefined {
    for (let i = this.#inLog.length - 1; i >= 0; i--) {
      const fence = this.#inLog[i]!;
      if (fence.name === name) return fence;
    }
    return this.#base.get(name);
  }

  /** isSuperseded is true for an incarnation that an earlier fence replaced. */
  isSuperseded(name: NodeId, incarnation: string): boolean {
    const current = this.current(name);
    if (current === undefined || current.incarnation === incarnation) return false;
    if (this.#base.get(name)?.superseded.includes(incarnation)) return true;
    if (this.#base.get(name)?.incarnation === incarnation) return true;
    return this.#inLog.some((fence) => fence.name === name && fence.incarnation === incarnation);
  }

  /** uncommitted returns the fences above commitIndex. */
  uncommitted(commitIndex: number): Fence[] {
    return this.#inLog.filter((fence) => fence.index > commitIndex);
  }

  /** tableAt returns the table including every fence at or below index. */
  tableAt(index: number): FenceTable {
    let table = new Map(this.#base);
    for (const fence of this.#inLog) {
      if (fence.index > index) break;
      table = applyFence(table, fence);
    }
    const out: FenceTable = {};
    for (const [name, entry] of table) {
      out[name] = { ...entry, superseded: entry.superseded.slice() };
    }
    return out;
  }
}

function applyFence(
  table: Map<NodeId, FenceTableEntry>,
  fence: Fence,
): Map<NodeId, FenceTableEntry> {
  const previous = table.get(fence.name);
  const superseded = previous === undefined ? [] : [...previous.superseded, previous.incarnation];
  const next = new Map(table);
  next.set(fence.name, {
    incarnation: fence.incarnation,
    index: fence.index,
    superseded: superseded.slice(-supersededPerMemberMax),
  });
  return next;
}
