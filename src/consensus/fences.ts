// Fences: the incarnation table of the replacement protocol (DESIGN §3, rules R4-R7).
//
// Two kinds of "fence" entries shape the table:
// - a roster {roster: {name: incarnation, ...}}, appended once by the first leader of a
//   new cluster, records every founding member's incarnation;
// - a fence {name, incarnation} says: from this index on, member `name` is the host with
//   `incarnation`; every earlier incarnation of that name is superseded.
//
// Because the founding incarnations are recorded, an incarnation a node does not know is
// newer than its table (fenced in by a fence it has not seen yet), never an old one:
// only known-superseded incarnations are refused. Incarnations are ordered (they start
// with their creation time in hex), so a replacement abandoned before it was fenced in
// cannot take the name back from a newer one.
//
// Fences at or below the compaction point live in `base` (restored from the snapshot);
// fence entries in the in-memory log window live in `inLog`, uncommitted ones included,
// because a node must already refuse a superseded incarnation while the fence that
// supersedes it is on its way to commit.

import { assert } from "../lib/assert.ts";
import type { Entry, FenceTable, FenceTableEntry, NodeId } from "./types.ts";

/** Fence is one fence entry's content and position. */
export interface Fence {
  index: number;
  name: NodeId;
  incarnation: string;
  /** The incarnation the leader last heard under this name, when the table lacked it. */
  replaces?: string;
}

/** Roster is the founding members' incarnations, recorded once per cluster. */
export interface Roster {
  index: number;
  members: Record<NodeId, string>;
}

// The table's serializable shape lives in types.ts (snapshots and RestoredState carry it).
export type { FenceTable, FenceTableEntry } from "./types.ts";

/** Current is a member's current incarnation; `fence` is false for a founding one. */
export interface Current {
  incarnation: string;
  index: number;
  fence: boolean;
}

/** Superseded incarnations kept per member; older ones are forgotten (bounded). */
export const supersededPerMemberMax = 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** encodeFence is the data of a fence entry. */
export function encodeFence(name: NodeId, incarnation: string, replaces?: string): Uint8Array {
  return encoder.encode(
    JSON.stringify(
      replaces === undefined ? { name, incarnation } : { name, incarnation, replaces },
    ),
  );
}

/** encodeRoster is the data of a roster entry (kind "fence"). */
export function encodeRoster(members: Record<NodeId, string>): Uint8Array {
  return encoder.encode(JSON.stringify({ roster: members }));
}

/** newerIncarnation: incarnations start with their creation time, so they sort by age. */
export function newerIncarnation(a: string, than: string): boolean {
  return a > than;
}

/** decodeFence reads a fence or roster entry; a malformed one is a bug (we wrote it). */
export function decodeFence(entry: Entry): Fence | Roster {
  assert(entry.kind === "fence", "decodeFence needs a fence entry");
  const value = JSON.parse(decoder.decode(entry.data)) as {
    name?: unknown;
    incarnation?: unknown;
    roster?: unknown;
    replaces?: unknown;
  };
  if (value.roster !== undefined) {
    assert(typeof value.roster === "object" && value.roster !== null, "roster must be an object");
    const members: Record<NodeId, string> = {};
    for (const [name, incarnation] of Object.entries(value.roster)) {
      assert(typeof incarnation === "string", "roster incarnations must be strings");
      members[name] = incarnation;
    }
    return { index: entry.index, members };
  }
  assert(
    typeof value.name === "string" && typeof value.incarnation === "string",
    "fence entry must name a member and an incarnation",
  );
  const fence: Fence = { index: entry.index, name: value.name, incarnation: value.incarnation };
  if (typeof value.replaces === "string") fence.replaces = value.replaces;
  return fence;
}

function isRoster(record: Fence | Roster): record is Roster {
  return "members" in record;
}

export class Fences {
  #base = new Map<NodeId, FenceTableEntry>();
  /** Fence and roster entries in the in-memory log, in index order. */
  #inLog: Array<Fence | Roster> = [];

  static fromTable(table: FenceTable | undefined): Fences {
    const fences = new Fences();
    fences.resetBase(table);
    return fences;
  }

  resetBase(table: FenceTable | undefined): void {
    this.#base = new Map();
    this.#inLog = [];
    for (const [name, entry] of Object.entries(table ?? {})) {
      this.#base.set(name, { ...entry, superseded: entry.superseded.slice() });
    }
  }

  /** onAppend records a fence or roster entry appended to the log. */
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
      this.#base = apply(this.#base, this.#inLog.shift()!);
    }
  }

  /** hasUncommittedRoster: a roster above commitIndex is on its way (append one at a time). */
  hasUncommittedRoster(commitIndex: number): boolean {
    return this.#inLog.some((record) => isRoster(record) && record.index > commitIndex);
  }

  /** current returns the member's current incarnation (uncommitted entries included). */
  current(name: NodeId): Current | undefined {
    for (let i = this.#inLog.length - 1; i >= 0; i--) {
      const record = this.#inLog[i]!;
      if (isRoster(record)) {
        const incarnation = record.members[name];
        // A roster names founders only where no fence came before it.
        if (incarnation !== undefined && !this.#fencedBefore(name, i)) {
          return { incarnation, index: record.index, fence: false };
        }
      } else if (record.name === name) {
        return { incarnation: record.incarnation, index: record.index, fence: true };
      }
    }
    const base = this.#base.get(name);
    if (base === undefined) return undefined;
    return { incarnation: base.incarnation, index: base.index, fence: base.founding !== true };
  }

  #fencedBefore(name: NodeId, position: number): boolean {
    for (let i = position - 1; i >= 0; i--) {
      const record = this.#inLog[i]!;
      if (!isRoster(record) && record.name === name) return true;
    }
    const base = this.#base.get(name);
    return base !== undefined && base.founding !== true;
  }

  /** isSuperseded is true for an incarnation that a later fence replaced. */
  isSuperseded(name: NodeId, incarnation: string): boolean {
    const current = this.current(name);
    if (current === undefined || current.incarnation === incarnation) return false;
    const base = this.#base.get(name);
    if (base?.superseded.includes(incarnation) || base?.incarnation === incarnation) return true;
    return this.#inLog.some((record) =>
      isRoster(record) ? record.members[name] === incarnation : record.name === name &&
        (record.incarnation === incarnation || record.replaces === incarnation)
    );
  }

  /** uncommitted returns the fences (not rosters) above commitIndex. */
  uncommitted(commitIndex: number): Fence[] {
    return this.#inLog.filter((record): record is Fence =>
      !isRoster(record) && record.index > commitIndex
    );
  }

  /** tableAt returns the table including every fence and roster at or below index. */
  tableAt(index: number): FenceTable {
    let table = new Map(this.#base);
    for (const record of this.#inLog) {
      if (record.index > index) break;
      table = apply(table, record);
    }
    const out: FenceTable = {};
    for (const [name, entry] of table) {
      out[name] = { ...entry, superseded: entry.superseded.slice() };
    }
    return out;
  }

  /**
   * entryAt is tableAt(index)[name] without building the whole table: the handshake asks
   * it for every message a node receives. The entry may be the table's own: read it only.
   */
  entryAt(name: NodeId, index: number): Readonly<FenceTableEntry> | undefined {
    let entry = this.#base.get(name);
    for (const record of this.#inLog) {
      if (record.index > index) break;
      if (isRoster(record)) {
        if (entry === undefined && Object.hasOwn(record.members, name)) {
          entry = rosterEntry(record, record.members[name]!);
        }
      } else if (record.name === name) {
        entry = fenceEntry(entry, record);
      }
    }
    return entry;
  }
}

function apply(
  table: Map<NodeId, FenceTableEntry>,
  record: Fence | Roster,
): Map<NodeId, FenceTableEntry> {
  const next = new Map(table);
  if (isRoster(record)) {
    for (const [name, incarnation] of Object.entries(record.members)) {
      if (!next.has(name)) next.set(name, rosterEntry(record, incarnation));
    }
    return next;
  }
  next.set(record.name, fenceEntry(table.get(record.name), record));
  return next;
}

/** rosterEntry is a founding member's entry, as a roster records it. */
function rosterEntry(record: Roster, incarnation: string): FenceTableEntry {
  return { incarnation, index: record.index, superseded: [], founding: true };
}

/** fenceEntry is a member's entry after a fence, from its entry before (if any). */
function fenceEntry(
  previous: Readonly<FenceTableEntry> | undefined,
  record: Fence,
): FenceTableEntry {
  const superseded = previous === undefined ? [] : [...previous.superseded, previous.incarnation];
  if (record.replaces !== undefined && !superseded.includes(record.replaces)) {
    superseded.push(record.replaces);
  }
  return {
    incarnation: record.incarnation,
    index: record.index,
    superseded: superseded.slice(-supersededPerMemberMax),
  };
}
