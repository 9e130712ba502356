import { describe, expect, test } from "bun:test";
import { formatBytes, parseBytes } from "../../src/lib/bytes.ts";
import { formatDuration, parseDuration } from "../../src/lib/duration.ts";

describe("parseDuration", () => {
  test("reads a number and a unit as whole milliseconds", () => {
    expect(parseDuration("100ms")).toBe(100);
    expect(parseDuration("5s")).toBe(5000);
    expect(parseDuration("1m")).toBe(60_000);
    expect(parseDuration("2h")).toBe(7_200_000);
    expect(parseDuration("1.5s")).toBe(1500);
    expect(parseDuration(".5s")).toBe(500);
    expect(parseDuration("1.1s")).toBe(1100);
  });

  test("reads several terms, largest first, as Go does", () => {
    expect(parseDuration("1m30s")).toBe(90_000);
    expect(parseDuration("1h2m3.5s")).toBe(3_723_500);
  });

  test("a positive duration below a millisecond becomes 1ms, never 0", () => {
    expect(parseDuration("250us")).toBe(1);
    expect(parseDuration("250µs")).toBe(1);
    expect(parseDuration("1ns")).toBe(1);
  });

  test("sub-millisecond parts round to the nearest millisecond", () => {
    expect(parseDuration("1499us")).toBe(1);
    expect(parseDuration("1500us")).toBe(2);
    expect(parseDuration("2500000ns")).toBe(3);
  });

  test("zero is accepted with or without a unit", () => {
    expect(parseDuration("0")).toBe(0);
    expect(parseDuration("0s")).toBe(0);
  });

  test("rejects text that is not a duration with a std-style RangeError", () => {
    for (const text of ["", "5", "5x", "-5s", "+5s", "5 s", " 5s", "s", "1.2.3s", "5S", "1e3ms"]) {
      expect(() => parseDuration(text)).toThrow(RangeError);
    }
    expect(() => parseDuration("5x")).toThrow(
      'Invalid duration "5x": expected a number and a unit (ns, us, ms, s, m, h) such as "100ms" or "5s"',
    );
  });

  test("rejects a duration too long to hold exactly", () => {
    expect(() => parseDuration("9999999999999h")).toThrow(
      'Duration "9999999999999h" exceeds the maximum of 9007199254740991ms',
    );
  });

  test("keeps an overlong input out of its message", () => {
    let message = "";
    try {
      parseDuration("1".repeat(10_000));
    } catch (error: unknown) {
      if (error instanceof RangeError) message = error.message;
    }
    expect(message.length).toBeLessThan(200);
    expect(message).not.toEndWith(".");
  });
});

describe("formatDuration", () => {
  test("renders the largest units first", () => {
    expect(formatDuration(0)).toBe("0ms");
    expect(formatDuration(250)).toBe("250ms");
    expect(formatDuration(1000)).toBe("1s");
    expect(formatDuration(1500)).toBe("1.5s");
    expect(formatDuration(1001)).toBe("1.001s");
    expect(formatDuration(90_000)).toBe("1m30s");
    expect(formatDuration(3_600_000)).toBe("1h");
    expect(formatDuration(3_723_500)).toBe("1h2m3.5s");
    expect(formatDuration(-1500)).toBe("-1.5s");
  });

  test("parseDuration reads back what formatDuration writes", () => {
    for (const ms of [0, 1, 10, 999, 1000, 1001, 1500, 59_999, 60_000, 61_001, 3_723_500]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });
});

// parseBytes lives in src/lib/bytes.ts; its tests sit here beside the other unit parser.
describe("parseBytes", () => {
  test("reads binary and decimal units and plain byte counts", () => {
    expect(parseBytes("1MiB")).toBe(1_048_576);
    expect(parseBytes("512KiB")).toBe(524_288);
    expect(parseBytes("1000")).toBe(1000);
    expect(parseBytes("64MB")).toBe(64_000_000);
    expect(parseBytes("2GiB")).toBe(2 * 1024 ** 3);
    expect(parseBytes("10B")).toBe(10);
    expect(parseBytes("1 MiB")).toBe(1_048_576);
  });

  test("reads fractions exactly when they come to whole bytes", () => {
    expect(parseBytes("1.5KiB")).toBe(1536);
    expect(parseBytes("1.1MB")).toBe(1_100_000);
    expect(() => parseBytes("1.5B")).toThrow('Size "1.5B" is not a whole number of bytes');
  });

  test("rejects unknown units and malformed sizes", () => {
    for (const text of ["", "MiB", "1mib", "1 M", "-1KiB", "1KiB ", "lots", "1e6"]) {
      expect(() => parseBytes(text)).toThrow(RangeError);
    }
  });

  test("rejects a size too large to hold exactly", () => {
    expect(() => parseBytes("9999999TiB")).toThrow(RangeError);
  });

  test("formatBytes uses the largest binary unit that divides the size", () => {
    expect(formatBytes(1_048_576)).toBe("1MiB");
    expect(formatBytes(64 * 1024 * 1024)).toBe("64MiB");
    expect(formatBytes(1536)).toBe("1536B");
    expect(formatBytes(0)).toBe("0B");
  });
});
