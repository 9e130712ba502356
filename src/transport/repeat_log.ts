// RepeatLog: a line that would repeat (a peer redialling with the wrong config, a flood of
// junk connections) is said once, then with a count at most every intervalMs, instead of
// once per event. Every suppressed event is still logged at debug level.

import type { LogLevel } from "./options.ts";
import { logRepeatIntervalMs, logRepeatKeysMax } from "./limits.ts";

type Log = (level: LogLevel, message: string, fields: Record<string, unknown>) => void;

interface Repeats {
  /** When the last line at the event's own level was written. */
  loggedAtMs: number;
  /** Events since then, each logged at debug level only. */
  suppressed: number;
}

/**
 * RepeatLog logs events by key: the first at its level; the next ones within intervalMs
 * at debug; the first one after intervalMs at its level again, saying how many came
 * since ("again N times in the last M s", this one included). Keys must come from a
 * bounded set (a kind of event, a configured member's name), never from a peer's input
 * alone; at keysMax the table starts over.
 */
export class RepeatLog {
  readonly #log: Log;
  readonly #now: () => number;
  readonly #intervalMs: number;
  readonly #keysMax: number;
  readonly #repeats = new Map<string, Repeats>();

  constructor(
    log: Log,
    now: () => number = Date.now,
    intervalMs = logRepeatIntervalMs,
    keysMax = logRepeatKeysMax,
  ) {
    this.#log = log;
    this.#now = now;
    this.#intervalMs = intervalMs;
    this.#keysMax = keysMax;
  }

  note(key: string, level: LogLevel, message: string, fields: Record<string, unknown>): void {
    const now = this.#now();
    const repeats = this.#repeats.get(key);
    if (repeats !== undefined && now - repeats.loggedAtMs < this.#intervalMs) {
      repeats.suppressed++;
      this.#log("debug", message, fields);
      return;
    }
    if (repeats === undefined || repeats.suppressed === 0) {
      this.#remember(key, now);
      this.#log(level, message, fields);
      return;
    }
    const times = repeats.suppressed + 1;
    const seconds = Math.round((now - repeats.loggedAtMs) / 1000);
    repeats.loggedAtMs = now;
    repeats.suppressed = 0;
    this.#log(level, `${message} (again ${times} times in the last ${seconds} s)`, {
      ...fields,
      repeated: times,
    });
  }

  #remember(key: string, now: number): void {
    if (!this.#repeats.has(key) && this.#repeats.size >= this.#keysMax) this.#repeats.clear();
    this.#repeats.set(key, { loggedAtMs: now, suppressed: 0 });
  }
}
