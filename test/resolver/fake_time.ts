// FakeTime: a clock and a timer scheduler that move only when a test advances them, so
// re-resolver tests cover minutes of refreshes without sleeping.

import type { Clock, Scheduler } from "../../src/resolver/dns.ts";

interface FakeTimer {
  at: number;
  sequence: number;
  callback: () => void;
}

export class FakeTime implements Clock, Scheduler {
  #now: number;
  #sequence = 0;
  readonly #timers = new Map<number, FakeTimer>();

  constructor(startMs = 1_700_000_000_000) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, delayMs: number): unknown {
    const handle = ++this.#sequence;
    this.#timers.set(handle, { at: this.#now + Math.max(0, delayMs), sequence: handle, callback });
    return handle;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** pendingTimers is how many timers are armed. */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /**
   * advance moves time forward by `ms`, firing due timers in order (each at its own
   * time), and lets promise callbacks run after each one.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      let next: [number, FakeTimer] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at > target) continue;
        if (
          next === undefined || entry[1].at < next[1].at ||
          (entry[1].at === next[1].at && entry[1].sequence < next[1].sequence)
        ) next = entry;
      }
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].at;
      next[1].callback();
      await settle();
    }
    this.#now = target;
  }
}

/** settle lets every queued promise callback run (no timers, no real waiting). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
