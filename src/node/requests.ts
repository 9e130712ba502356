// Requests: client writes waiting for their entry to apply, and linearizable reads waiting
// for their read index (ReadIndex, Raft §6.4) and then for apply to reach it. Both are
// bounded (pendingRequestsMax) and time out by a sweep each tick (expire), not a timer
// each: a timer per request was measurable garbage and CPU at tens of thousands a second.

import type { Entry } from "../consensus/types.ts";
import type { LeaderInfo, ReadBarrierResult, SubmitResult } from "../http/api.ts";
import { unwrapResult } from "../service/sessions.ts";
import type { HostOutcome } from "./service_host.ts";

/** Client requests waiting for commit or a read index, per node. */
export const pendingRequestsMax = 100_000;

interface PendingWrite {
  term: number;
  proposedAt: number;
  resolve: (result: SubmitResult) => void;
  /** performance.now() past which the write is answered with a timeout. */
  deadline: number;
}

interface PendingRead {
  resolve: (result: ReadBarrierResult) => void;
  deadline: number;
  /** Set once the read index is known: resolve when applied reaches it. */
  index: number;
}

/** Requests holds what clients wait for on this node. */
export class Requests {
  #writes = new Map<number, PendingWrite>();
  #reads = new Map<number, PendingRead>();
  /** Reads with a known index waiting for apply, in request order. */
  #readsWaitingApply: number[] = [];
  #nextRequestId = 1;

  get writeCount(): number {
    return this.#writes.size;
  }

  get readCount(): number {
    return this.#reads.size;
  }

  get writesFull(): boolean {
    return this.#writes.size >= pendingRequestsMax;
  }

  get readsFull(): boolean {
    return this.#reads.size >= pendingRequestsMax;
  }

  /** addWrite waits for the entry proposed at (index, term) to apply here. */
  addWrite(index: number, term: number, timeoutMs: number): Promise<SubmitResult> {
    return new Promise((resolve) => {
      const now = performance.now();
      this.#writes.set(index, { term, proposedAt: now, resolve, deadline: now + timeoutMs });
    });
  }

  /** addRead registers a read; `ask` is called with its request id for the core. */
  addRead(timeoutMs: number, ask: (requestId: number) => void): Promise<ReadBarrierResult> {
    const requestId = this.#nextRequestId++;
    return new Promise((resolve) => {
      const deadline = performance.now() + timeoutMs;
      this.#reads.set(requestId, { resolve, deadline, index: 0 });
      ask(requestId);
    });
  }

  /**
   * onApplied answers the write waiting for `entry`, if any, with the outcome of applying
   * it. Returns the seconds from proposal to apply for an acknowledged write.
   */
  onApplied(entry: Entry, outcome: HostOutcome): number | undefined {
    const write = this.#writes.get(entry.index);
    if (write === undefined) return undefined;
    this.#writes.delete(entry.index);
    if (write.term === entry.term && outcome.type === "error") {
      write.resolve({ ok: false, code: "service-error", message: outcome.message });
      return undefined;
    }
    const result = outcome.type === "result" ? outcome.result : undefined;
    if (write.term !== entry.term || result === undefined) {
      write.resolve({
        ok: false,
        code: "unavailable",
        message: "Leadership changed before the write committed; it was not applied",
      });
      return undefined;
    }
    // The sessions envelope is taken off by the room that puts it on (service/sessions.ts).
    write.resolve(unwrapResult(result, entry.index));
    return (performance.now() - write.proposedAt) / 1000;
  }

  /** failWritesThrough answers the writes at or below index (a snapshot replaced them). */
  failWritesThrough(index: number, message: string): void {
    for (const [at, write] of this.#writes) {
      if (at <= index) this.#failWrite(at, write, message);
    }
  }

  /** failWrites answers every waiting write with a timeout and `message`. */
  failWrites(message: string): void {
    for (const [index, write] of this.#writes) this.#failWrite(index, write, message);
  }

  /** failAll answers every write and read (the node stops or halted). */
  failAll(message: string): void {
    for (const [, write] of this.#writes) {
      write.resolve({ ok: false, code: "unavailable", message });
    }
    this.#writes.clear();
    for (const [, read] of this.#reads) {
      read.resolve({ ok: false, code: "timeout", leader: null, message });
    }
    this.#reads.clear();
    this.#readsWaitingApply = [];
  }

  /**
   * expire answers writes and reads past their deadline with a timeout. Both maps hold
   * requests in the order they came, so deadlines only grow along them: stop at the first
   * one still in time.
   */
  expire(now: number, leader: () => LeaderInfo | null): void {
    for (const [index, write] of this.#writes) {
      if (write.deadline > now) break;
      this.#failWrite(index, write, undefined);
    }
    for (const [requestId, read] of this.#reads) {
      if (read.deadline > now) break;
      this.#reads.delete(requestId);
      read.resolve({
        ok: false,
        code: "timeout",
        leader: leader(),
        message: "Read not confirmed within the request timeout",
      });
    }
  }

  /** onReadState: the core answered a read; index 0 means it could not confirm it. */
  onReadState(requestId: number, index: number, leader: LeaderInfo | null): void {
    const read = this.#reads.get(requestId);
    if (read === undefined) return;
    if (index === 0) {
      this.#reads.delete(requestId);
      read.resolve({
        ok: false,
        code: leader === null ? "no-leader" : "not-leader",
        leader,
        message: leader === null ? "No leader is known" : "Leadership could not be confirmed",
      });
      return;
    }
    read.index = index;
    this.#readsWaitingApply.push(requestId);
  }

  /** resolveReads answers the reads whose index is applied; returns how many. */
  resolveReads(appliedIndex: number): number {
    if (this.#readsWaitingApply.length === 0) return 0;
    let served = 0;
    const waiting: number[] = [];
    for (const requestId of this.#readsWaitingApply) {
      const read = this.#reads.get(requestId);
      if (read === undefined) continue;
      if (read.index <= appliedIndex) {
        this.#reads.delete(requestId);
        served++;
        read.resolve({ ok: true });
      } else {
        waiting.push(requestId);
      }
    }
    this.#readsWaitingApply = waiting;
    return served;
  }

  #failWrite(index: number, write: PendingWrite, message: string | undefined): void {
    this.#writes.delete(index);
    write.resolve({
      ok: false,
      code: "timeout",
      message: message ?? "Write not committed within the request timeout; it may still apply",
    });
  }
}
