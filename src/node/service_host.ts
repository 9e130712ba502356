// ServiceHost runs the user's service inside the node: it gives apply its context (the
// log's time, a seeded random, cluster timers), keeps the replicated state keel owns for
// the service (the log's time and the timer table), and turns a throwing apply into an
// error result without letting it change state.
//
// Entry envelope: the data of every "command" entry the node proposes (integers
// big-endian). Timer firings ride in "command" entries too, under their own tag, rather
// than in a new EntryKind: a timer firing is the service's business, like a command, so
// the consensus core, the wire codec, storage and the simulator stay as they are. The
// layout is part of the peer protocol: members that read it differently must not share a
// log, and handshake.ts refuses a peer of another protocolVersion (2 brought this layout).
//   u8 0 | u8 1, ...                                    a sessions envelope from before
//                                                       stamping (sessions.ts); no time
//   u8 0x10, u64 timeMs, sessions envelope              a client command
//   u8 0x11, u64 timeMs, u64 deadlineMs, u64 generation, timer id (UTF-8, the rest)
//                                                       timer fired
// Host state (a section of the node snapshot, snapshot_envelope.ts):
//   u64 timeMs, u32 count, then count times: u16 idBytes, id, u64 deadlineMs, u64 generation
//
// Timers. schedule(id, deadline) during apply at index i records {deadline, generation: i}
// (buffered, kept only if apply returns). The leader proposes "timer fired {id, deadline,
// generation}" for each due timer (node.ts). Applying it fires the timer only if the table
// still holds exactly that timer: a duplicate proposal (a new leader proposing again, a
// retry) or one for a timer since cancelled or rescheduled is a no-op. So every member
// fires each scheduled timer once, at the log position of the first matching entry.
//
// Time. Each entry carries the leader's clock when it proposed it; the log's time is the
// maximum of that and every earlier entry's, so it never goes back, even when a new leader's
// clock is behind the old one's.
//
// A throwing apply or onTimer. The service may have changed part of its state before it
// threw; every member would have changed the same part, but a half-applied command is
// not a state anyone asked for. So the host rolls the service back to its state before
// the entry: it restores the latest snapshot (`RollbackSource.base`) and applies again
// the entries since, leaving out those known to have thrown. Timers scheduled by the
// failed call are dropped; a timer whose onTimer threw is still removed (it fired), so a
// failing timer does not fire forever. Costly, and meant for bugs: services return error
// results for commands they refuse.

import { AssertionError } from "../lib/assert.ts";
import { assert } from "../lib/assert.ts";
import type { Entry } from "../consensus/types.ts";
import { type ApplyContext, seededRandom, type Service } from "../service/service.ts";

/** timersMax bounds the timer table; schedule beyond it throws (a failed apply). */
export const timersMax = 100_000;
/** timerIdBytesMax bounds a timer id (UTF-8 bytes). */
export const timerIdBytesMax = 256;
/** serviceErrorBytesMax bounds the message of a failed apply kept and returned. */
export const serviceErrorBytesMax = 1024;

const tagCommand = 0x10;
const tagTimer = 0x11;
const twoTo32 = 2 ** 32;
const textEncoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Timer is one scheduled timer: when it is due, and the index of the apply that set it. */
export interface Timer {
  id: string;
  deadlineMs: number;
  /** Log index of the apply that scheduled it: tells a rescheduled timer from the old one. */
  generation: number;
}

/** HostOutcome is what applying one entry produced. */
export type HostOutcome =
  /** A command applied: the (sessions) result bytes. */
  | { type: "result"; result: Uint8Array }
  /** apply or onTimer threw: the state is as before the entry. */
  | { type: "error"; message: string; timer?: Timer }
  /** A timer-fired entry: `fired` is false for a duplicate or a stale one. */
  | { type: "timer"; timer: Timer; fired: boolean }
  /** Nothing for the service (noop, fence). */
  | { type: "none" };

/** HostState is the replicated state the host keeps beside the service's. */
export interface HostState {
  timeMs: number;
  timers: Timer[];
}

/** RollbackSource is where a rollback finds the state to start from and the log since. */
export interface RollbackSource {
  /** base is the latest snapshot: its index, the service's bytes and the host state. */
  base(): { index: number; service: Uint8Array; state: HostState };
  /** entry returns the log entry at index (every entry after base's index is needed). */
  entry(index: number): Entry | undefined;
}

/** ServiceFatalError means the node cannot go on serving: stop it. */
export class ServiceFatalError extends Error {
  override name = "ServiceFatalError";
}

// ---- Entry envelope ----------------------------------------------------------------------

/** encodeCommandEntry wraps a sessions envelope with the leader's time. */
export function encodeCommandEntry(timeMs: number, envelope: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + envelope.length);
  out[0] = tagCommand;
  writeU64(out, 1, timeMs);
  out.set(envelope, 9);
  return out;
}

/** encodeTimerEntry is the data of a "timer fired" entry. */
export function encodeTimerEntry(timeMs: number, timer: Timer): Uint8Array {
  const id = textEncoder.encode(timer.id);
  const out = new Uint8Array(25 + id.length);
  out[0] = tagTimer;
  writeU64(out, 1, timeMs);
  writeU64(out, 9, timer.deadlineMs);
  writeU64(out, 17, timer.generation);
  out.set(id, 25);
  return out;
}

/** stampedTime reads the leader's time from a command entry's data (undefined: none). */
export function stampedTime(data: Uint8Array): number | undefined {
  if (data.length < 9 || (data[0] !== tagCommand && data[0] !== tagTimer)) return undefined;
  return readU64(data, 1);
}

type DecodedEntry =
  | { type: "command"; timeMs: number | undefined; envelope: Uint8Array }
  | { type: "timer"; timeMs: number; timer: Timer };

function decodeEntry(data: Uint8Array): DecodedEntry {
  const tag = data[0];
  if (tag === tagCommand) {
    if (data.length < 9) throw new Error(`Command entry of ${data.length} bytes is truncated`);
    return { type: "command", timeMs: entryU64(data, 1), envelope: data.subarray(9) };
  }
  if (tag === tagTimer) {
    if (data.length < 26) throw new Error(`Timer entry of ${data.length} bytes is truncated`);
    let id: string;
    try {
      id = strictUtf8.decode(data.subarray(25));
    } catch {
      throw new Error("Timer entry id is not valid UTF-8");
    }
    return {
      type: "timer",
      timeMs: entryU64(data, 1),
      timer: { id, deadlineMs: entryU64(data, 9), generation: entryU64(data, 17) },
    };
  }
  // Tags 0 and 1 are the sessions envelope itself (entries written before stamping); the
  // sessions service answers anything else with a "malformed-envelope" result.
  return { type: "command", timeMs: undefined, envelope: data };
}

// ---- Host state --------------------------------------------------------------------------

/** encodeHostState is the host's section of a node snapshot. */
export function encodeHostState(state: HostState): Uint8Array {
  const ids = state.timers.map((timer) => textEncoder.encode(timer.id));
  let length = 12;
  for (const id of ids) length += 2 + id.length + 16;
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  writeU64(out, 0, state.timeMs);
  view.setUint32(8, state.timers.length);
  let offset = 12;
  state.timers.forEach((timer, i) => {
    const id = ids[i]!;
    view.setUint16(offset, id.length);
    out.set(id, offset + 2);
    offset += 2 + id.length;
    writeU64(out, offset, timer.deadlineMs);
    writeU64(out, offset + 8, timer.generation);
    offset += 16;
  });
  return out;
}

/** decodeHostState reads encodeHostState's bytes; it throws a plain Error on bad ones. */
export function decodeHostState(data: Uint8Array): HostState {
  const fail = (why: string): never => {
    throw new Error(`Snapshot timer table of ${data.length} bytes is malformed: ${why}`);
  };
  if (data.length < 12) fail("too short for its header");
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const timeMs = readU64(data, 0) ?? fail("time out of range");
  const count = view.getUint32(8);
  if (count > timersMax) fail(`${count} timers exceed the maximum of ${timersMax}`);
  const timers: Timer[] = [];
  const seen = new Set<string>();
  let offset = 12;
  for (let i = 0; i < count; i++) {
    if (offset + 2 > data.length) fail("truncated");
    const idBytes = view.getUint16(offset);
    if (idBytes === 0 || idBytes > timerIdBytesMax) fail(`timer id of ${idBytes} bytes`);
    if (offset + 2 + idBytes + 16 > data.length) fail("truncated");
    let id = "";
    try {
      id = strictUtf8.decode(data.subarray(offset + 2, offset + 2 + idBytes));
    } catch {
      fail("a timer id is not valid UTF-8");
    }
    if (seen.has(id)) fail(`timer ${JSON.stringify(id)} appears twice`);
    seen.add(id);
    offset += 2 + idBytes;
    const deadlineMs = readU64(data, offset) ?? fail("deadline out of range");
    const generation = readU64(data, offset + 8) ?? fail("generation out of range");
    offset += 16;
    timers.push({ id, deadlineMs, generation });
  }
  if (offset !== data.length) fail(`${data.length - offset} trailing bytes`);
  return { timeMs, timers };
}

// ---- The host ----------------------------------------------------------------------------

/** ServiceHost applies entries to a service with its context; see the top of this file. */
export class ServiceHost {
  readonly service: Service;
  #rollback: RollbackSource;
  #timeMs = 0;
  #timers = new Map<string, Timer>();
  #due = new TimerHeap();
  /** Indexes after the rollback base whose apply threw: left out when re-applying. */
  #failed = new Set<number>();

  constructor(service: Service, rollback: RollbackSource) {
    this.service = service;
    this.#rollback = rollback;
  }

  /** timeMs is the log's time as of the last applied entry. */
  get timeMs(): number {
    return this.#timeMs;
  }

  get timerCount(): number {
    return this.#timers.size;
  }

  /** timer returns the scheduled timer named id, if any. */
  timer(id: string): Timer | undefined {
    return this.#timers.get(id);
  }

  /** state is the host's replicated state, for a snapshot. */
  state(): HostState {
    // Deadline order, then id: the same bytes on every member for the same state.
    const timers = [...this.#timers.values()].sort((a, b) =>
      a.deadlineMs - b.deadlineMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    );
    return { timeMs: this.#timeMs, timers };
  }

  /**
   * restore replaces the service's state and the host's. A restore that throws leaves a
   * service in an unknown state: it is a ServiceFatalError.
   */
  restore(service: Uint8Array, state: HostState, index: number): void {
    try {
      this.service.restore(service);
    } catch (error: unknown) {
      if (error instanceof AssertionError) throw error;
      throw new ServiceFatalError(
        `The service could not restore its snapshot at index ${index} (${service.length} bytes): ${
          messageOf(error)
        }`,
        { cause: error },
      );
    }
    this.#setState(state);
    this.forgetFailuresThrough(index);
  }

  /** forgetFailuresThrough drops failure marks the rollback base now covers. */
  forgetFailuresThrough(index: number): void {
    for (const failed of this.#failed) if (failed <= index) this.#failed.delete(failed);
  }

  /**
   * dueTimers lists up to `limit` timers due at `nowMs` for which `wanted` is true, in no
   * particular order, visiting at most `visitsMax` due timers.
   */
  dueTimers(
    nowMs: number,
    limit: number,
    wanted: (timer: Timer) => boolean,
    visitsMax = 4096,
  ): Timer[] {
    const live = (timer: Timer): boolean => {
      const current = this.#timers.get(timer.id);
      return current !== undefined && current.generation === timer.generation &&
        current.deadlineMs === timer.deadlineMs;
    };
    return this.#due.due(nowMs, limit, visitsMax, live, wanted);
  }

  /** apply applies one committed entry. */
  apply(entry: Entry): HostOutcome {
    if (entry.kind !== "command") return { type: "none" };
    return this.#apply(entry, false);
  }

  #apply(entry: Entry, replaying: boolean): HostOutcome {
    const decoded = decodeEntry(entry.data);
    const timeMs = Math.max(this.#timeMs, decoded.timeMs ?? 0);
    const failedBefore = replaying && this.#failed.has(entry.index);
    if (decoded.type === "timer") {
      const timer = decoded.timer;
      const current = this.#timers.get(timer.id);
      const fires = current !== undefined && current.deadlineMs === timer.deadlineMs &&
        current.generation === timer.generation;
      if (!fires) {
        this.#timeMs = timeMs;
        return { type: "timer", timer, fired: false };
      }
      // Removed before onTimer runs, so that onTimer may schedule the same id again.
      this.#timers.delete(timer.id);
      if (failedBefore || this.service.onTimer === undefined) {
        this.#timeMs = timeMs;
        return { type: "timer", timer, fired: true };
      }
      const onTimer = this.service.onTimer.bind(this.service);
      const outcome = this.#call(entry, timeMs, replaying, (context) => {
        onTimer(timer.id, context);
        return new Uint8Array(0);
      });
      if (outcome.type === "error") {
        this.#timers.delete(timer.id);
        return { ...outcome, timer };
      }
      return { type: "timer", timer, fired: true };
    }
    if (failedBefore) {
      this.#timeMs = timeMs;
      return { type: "none" };
    }
    return this.#call(
      entry,
      timeMs,
      replaying,
      (context) => this.service.apply(decoded.envelope, context),
    );
  }

  /** call runs apply or onTimer with a fresh context, committing its timers on success. */
  #call(
    entry: Entry,
    timeMs: number,
    replaying: boolean,
    run: (context: ApplyContext) => Uint8Array,
  ): HostOutcome {
    const context = new EntryContext(entry, timeMs, this.#timers);
    let result: Uint8Array;
    try {
      result = run(context);
    } catch (error: unknown) {
      context.close();
      // A broken invariant is a bug: it is never caught.
      if (error instanceof AssertionError || error instanceof ServiceFatalError) throw error;
      if (replaying) {
        throw new ServiceFatalError(
          `The service is not deterministic: entry ${entry.index} threw when applied again (${
            messageOf(error)
          }) but not when first applied`,
          { cause: error },
        );
      }
      this.#rollbackBefore(entry.index);
      this.#timeMs = timeMs;
      return {
        type: "error",
        message: truncate(`Service failed at index ${entry.index}: ${messageOf(error)}`),
      };
    }
    context.close();
    for (const [id, timer] of context.changes) {
      if (timer === null) {
        this.#timers.delete(id);
      } else {
        this.#timers.set(id, timer);
        this.#due.push(timer);
      }
    }
    this.#due.compact(this.#timers);
    this.#timeMs = timeMs;
    return { type: "result", result };
  }

  /** rollbackBefore brings the service and the host to their state after index - 1. */
  #rollbackBefore(index: number): void {
    const base = this.#rollback.base();
    assert(base.index < index, "the rollback base must precede the failed entry");
    this.restore(base.service, base.state, base.index);
    this.#failed.add(index);
    for (let i = base.index + 1; i < index; i++) {
      const entry = this.#rollback.entry(i);
      assert(entry !== undefined, `entry ${i} must be in the log to roll back to ${index - 1}`);
      if (entry.kind === "command") this.#apply(entry, true);
    }
  }

  #setState(state: HostState): void {
    this.#timeMs = state.timeMs;
    this.#timers = new Map(state.timers.map((timer) => [timer.id, { ...timer }]));
    this.#due = new TimerHeap();
    for (const timer of this.#timers.values()) this.#due.push(timer);
  }
}

/** EntryContext is the ApplyContext of one entry; timer changes are buffered in it. */
class EntryContext implements ApplyContext {
  readonly index: number;
  readonly term: number;
  readonly timeMs: number;
  /** Timer changes of this call: a timer set, or null for one removed. */
  readonly changes = new Map<string, Timer | null>();
  #timers: ReadonlyMap<string, Timer>;
  #random: (() => number) | undefined;
  /** Timers scheduled, counting this call's changes. */
  #count: number;
  #open = true;

  constructor(entry: Entry, timeMs: number, timers: ReadonlyMap<string, Timer>) {
    this.index = entry.index;
    this.term = entry.term;
    this.timeMs = timeMs;
    this.#timers = timers;
    this.#count = timers.size;
  }

  close(): void {
    this.#open = false;
  }

  random(): number {
    this.#checkOpen("random");
    this.#random ??= seededRandom(this.index, this.term);
    return this.#random();
  }

  schedule(id: string, deadlineMs: number): void {
    this.#checkOpen("schedule");
    const bytes = textEncoder.encode(id).length;
    if (bytes === 0 || bytes > timerIdBytesMax) {
      throw new RangeError(
        `Timer id of ${bytes} bytes must be 1 to ${timerIdBytesMax} bytes of UTF-8`,
      );
    }
    if (strictUtf8.decode(textEncoder.encode(id)) !== id) {
      throw new RangeError("Timer id must be valid Unicode (no lone surrogates)");
    }
    if (!Number.isSafeInteger(deadlineMs) || deadlineMs < 0) {
      throw new RangeError(`Timer deadline ${deadlineMs} must be a non-negative safe integer`);
    }
    if (this.deadline(id) === undefined) {
      if (this.#count >= timersMax) {
        throw new RangeError(
          `Cannot schedule timer ${
            JSON.stringify(id)
          }: ${timersMax} timers are scheduled, the maximum`,
        );
      }
      this.#count++;
    }
    this.changes.set(id, { id, deadlineMs, generation: this.index });
  }

  cancel(id: string): boolean {
    this.#checkOpen("cancel");
    const scheduled = this.deadline(id) !== undefined;
    if (scheduled) {
      this.changes.set(id, null);
      this.#count--;
    }
    return scheduled;
  }

  deadline(id: string): number | undefined {
    this.#checkOpen("deadline");
    const changed = this.changes.get(id);
    if (changed !== undefined) return changed?.deadlineMs;
    return this.#timers.get(id)?.deadlineMs;
  }

  #checkOpen(method: string): void {
    if (!this.#open) {
      // Called from outside apply (a stored context): members would disagree.
      throw new Error(`ApplyContext.${method}() called after its apply returned`);
    }
  }
}

/**
 * TimerHeap orders timers by deadline (a binary min-heap). Entries of timers since fired,
 * cancelled or rescheduled stay until popped or compacted (lazy deletion).
 */
class TimerHeap {
  #heap: Timer[] = [];

  push(timer: Timer): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.deadlineMs <= heap[i]!.deadlineMs) break;
      [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
      i = parent;
    }
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && heap[left]!.deadlineMs < heap[smallest]!.deadlineMs) {
        smallest = left;
      }
      if (right < heap.length && heap[right]!.deadlineMs < heap[smallest]!.deadlineMs) {
        smallest = right;
      }
      if (smallest === i) return;
      [heap[smallest], heap[i]] = [heap[i]!, heap[smallest]!];
      i = smallest;
    }
  }

  /** compact rebuilds the heap from the live timers once stale entries outnumber them. */
  compact(live: ReadonlyMap<string, Timer>): void {
    if (this.#heap.length <= 2 * live.size + 1024) return;
    this.#heap = [];
    for (const timer of live.values()) this.push(timer);
  }

  /**
   * due walks the live timers with deadline <= nowMs, collecting those `wanted` accepts.
   * Stale entries at the top are dropped on the way (fired timers are the earliest).
   */
  due(
    nowMs: number,
    limit: number,
    visitsMax: number,
    live: (timer: Timer) => boolean,
    wanted: (timer: Timer) => boolean,
  ): Timer[] {
    while (this.#heap.length > 0 && !live(this.#heap[0]!)) this.#pop();
    const found: Timer[] = [];
    const stack = [0];
    let visits = 0;
    while (stack.length > 0 && found.length < limit && visits < visitsMax) {
      const i = stack.pop()!;
      const timer = this.#heap[i];
      if (timer === undefined || timer.deadlineMs > nowMs) continue;
      visits++;
      if (live(timer) && wanted(timer)) found.push(timer);
      stack.push(2 * i + 2, 2 * i + 1);
    }
    return found;
  }
}

// ---- Bytes -------------------------------------------------------------------------------

function writeU64(out: Uint8Array, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, "u64 must be a non-negative safe integer");
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(offset, Math.floor(value / twoTo32));
  view.setUint32(offset + 4, value >>> 0);
}

/** entryU64 reads a u64 of an entry; keel wrote it, so a bad one is a plain Error. */
function entryU64(data: Uint8Array, offset: number): number {
  const value = readU64(data, offset);
  if (value === undefined) throw new Error(`Entry field at offset ${offset} is out of range`);
  return value;
}

/** readU64 reads a big-endian u64; undefined when it is beyond the safe integers. */
function readU64(data: Uint8Array, offset: number): number | undefined {
  if (!(offset >= 0 && offset + 8 <= data.length)) {
    throw new RangeError(`u64 at offset ${offset} is outside ${data.length} bytes`);
  }
  const d = data;
  const o = offset;
  const high = ((d[o]! << 24) | (d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!) >>> 0;
  const low = ((d[o + 4]! << 24) | (d[o + 5]! << 16) | (d[o + 6]! << 8) | d[o + 7]!) >>> 0;
  const value = high * twoTo32 + low;
  return Number.isSafeInteger(value) ? value : undefined;
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

function truncate(message: string): string {
  const bytes = textEncoder.encode(message);
  if (bytes.length <= serviceErrorBytesMax) return message;
  return new TextDecoder().decode(bytes.subarray(0, serviceErrorBytesMax - 3)) + "...";
}
