// The scrubber: re-reads and verifies everything a member stores (the log, hard state, meta,
// the snapshot) in the background, so rot is found before a read, a vote or a snapshot
// send needs the damaged bytes (issue 13). Storage does the verifying in bounded steps
// (scrubStep); this room paces them: one pass every storage.scrub_interval, at most
// storage.scrub_rate bytes per second, a slice each tick, so a pass never pauses the loop.

import type { IntegrityView } from "../http/api.ts";
import type { NodeStorage, StorageCorruptionError } from "../storage/storage.ts";

/** A step verifies at least this much, so a tiny rate still makes progress. */
export const scrubStepBytesMin = 4096;

/** Scrubber paces the storage's scrubStep from the node's ticks. */
export class Scrubber {
  readonly #storage: Pick<NodeStorage, "scrubStep" | "scrubCounters">;
  readonly #intervalMs: number;
  readonly #stepBytes: number;
  #running = false;
  #nextPassAt: number;
  #lastFullPassAt: number | null = null;

  constructor(
    storage: Pick<NodeStorage, "scrubStep" | "scrubCounters">,
    options: { intervalMs: number; bytesPerSecond: number; tickMs: number; now: number },
  ) {
    this.#storage = storage;
    this.#intervalMs = options.intervalMs;
    this.#stepBytes = Math.max(
      scrubStepBytesMin,
      Math.floor(options.bytesPerSecond * options.tickMs / 1000),
    );
    // The first pass starts an interval after the open, which verified everything once.
    this.#nextPassAt = options.now + options.intervalMs;
  }

  /** tick runs one step when a pass is due or under way; returns the damage it found. */
  tick(now: number): StorageCorruptionError[] {
    if (this.#intervalMs <= 0 || this.#storage.scrubStep === undefined) return [];
    if (!this.#running) {
      if (now < this.#nextPassAt) return [];
      this.#running = true;
    }
    const step = this.#storage.scrubStep(this.#stepBytes);
    if (step.done) {
      this.#running = false;
      this.#lastFullPassAt = now;
      this.#nextPassAt = now + this.#intervalMs;
    }
    return step.problems;
  }

  view(): IntegrityView {
    const counters = this.#storage.scrubCounters?.();
    return {
      lastFullPassAt: this.#lastFullPassAt,
      passesCompleted: counters?.passesCompleted ?? 0,
      bytesVerified: counters?.bytesVerified ?? 0,
      problemsFound: counters?.problemsFound ?? 0,
      corruptionsFound: counters?.corruptionsFound ?? {},
      scrubbing: this.#running,
    };
  }
}
