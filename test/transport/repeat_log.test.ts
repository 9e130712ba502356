import { describe, expect, test } from "bun:test";
import type { LogLevel } from "../../src/transport/tcp.ts";
import { RepeatLog } from "../../src/transport/repeat_log.ts";

interface Line {
  level: LogLevel;
  message: string;
  fields: Record<string, unknown>;
}

/** A RepeatLog over a fake clock and a log that keeps its lines. */
function fixture(intervalMs = 30_000, keysMax = 256) {
  const logged: Line[] = [];
  let nowMs = 1_000_000;
  const log = new RepeatLog(
    (level, message, fields) => logged.push({ level, message, fields }),
    () => nowMs,
    intervalMs,
    keysMax,
  );
  return {
    log,
    logged,
    advance: (ms: number) => (nowMs += ms),
    atLevel: (level: LogLevel) => logged.filter((line) => line.level === level),
  };
}

describe("RepeatLog", () => {
  test("a refusal repeated on every redial is one warning, then one with a count per interval", () => {
    const { log, advance, atLevel } = fixture();
    // A peer redialling every second with a differing config, for 95 s.
    for (let second = 0; second < 95; second++) {
      log.note("mismatch b", "warn", 'Refused the handshake of "b"', { peer: "b" });
      advance(1000);
    }
    const warnings = atLevel("warn");
    // t=0: said; t=30, 60, 90: again, with the count since the last line.
    expect(warnings.map((line) => line.message)).toEqual([
      'Refused the handshake of "b"',
      'Refused the handshake of "b" (again 30 times in the last 30 s)',
      'Refused the handshake of "b" (again 30 times in the last 30 s)',
      'Refused the handshake of "b" (again 30 times in the last 30 s)',
    ]);
    expect(warnings[1]?.fields).toEqual({ peer: "b", repeated: 30 });
    // Nothing is lost at debug level: every other event is there.
    expect(atLevel("debug").length).toBe(95 - 4);
  });

  test("keys count apart; an event after a quiet interval is said plainly again", () => {
    const { log, advance, atLevel } = fixture(10_000);
    log.note("mismatch b", "warn", "refused b", {});
    log.note("mismatch c", "warn", "refused c", {});
    log.note("mismatch b", "warn", "refused b", {});
    expect(atLevel("warn").map((line) => line.message)).toEqual(["refused b", "refused c"]);
    advance(10_000);
    log.note("mismatch c", "warn", "refused c", {}); // nothing suppressed since: plain
    log.note("mismatch b", "warn", "refused b", {});
    expect(atLevel("warn").map((line) => line.message)).toEqual([
      "refused b",
      "refused c",
      "refused c",
      "refused b (again 2 times in the last 10 s)",
    ]);
  });

  test("the table of keys is bounded", () => {
    const { log, atLevel } = fixture(10_000, 4);
    for (let i = 0; i < 10; i++) log.note(`key ${i}`, "info", `line ${i}`, {});
    log.note("key 9", "info", "line 9", {});
    // Starting over at 4 keys forgets the oldest; the newest is still remembered.
    expect(atLevel("info").length).toBe(10);
    expect(atLevel("debug").length).toBe(1);
  });
});
