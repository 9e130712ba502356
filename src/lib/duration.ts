/**
 * Durations in config and on the command line are Go-style text ("100ms", "5s", "1m30s",
 * "1.5s", "250us"); inside keel they are whole milliseconds.
 */

const msPerSecond = 1000;
const msPerMinute = 60 * msPerSecond;
const msPerHour = 60 * msPerMinute;

const unitMs: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3, // U+00B5 MICRO SIGN
  "μs": 1e-3, // U+03BC GREEK SMALL LETTER MU
  ms: 1,
  s: msPerSecond,
  m: msPerMinute,
  h: msPerHour,
};

// One "<number><unit>" term; a duration is one or more of them with no separators.
const termPattern = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

const durationTextLengthMax = 64;

/**
 * parseDuration reads a duration such as "100ms", "5s", "1m30s" or "1.5s" and returns
 * whole milliseconds. A millisecond is the smallest step: a positive duration below 1ms
 * ("250us") becomes 1ms rather than 0, and others round to the nearest millisecond.
 * "0" alone is accepted. Throws RangeError on anything else.
 */
export function parseDuration(text: string): number {
  if (text === "0") return 0;
  if (text.length === 0 || text.length > durationTextLengthMax) throw invalidDuration(text);
  let totalMs = 0;
  termPattern.lastIndex = 0;
  while (termPattern.lastIndex < text.length) {
    const match = termPattern.exec(text);
    if (match === null) throw invalidDuration(text);
    const [, amount = "", unit = ""] = match;
    const scale = unitMs[unit];
    if (scale === undefined) throw invalidDuration(text);
    totalMs += Number(amount) * scale;
  }
  // Terms are non-negative, so the only bad outcomes are infinity and imprecision.
  if (!Number.isFinite(totalMs) || totalMs > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(
      `Duration "${text}" exceeds the maximum of ${Number.MAX_SAFE_INTEGER}ms`,
    );
  }
  if (totalMs > 0 && totalMs < 1) return 1;
  return Math.round(totalMs);
}

function invalidDuration(text: string): RangeError {
  const shown = text.length > durationTextLengthMax
    ? `${text.slice(0, durationTextLengthMax)}...`
    : text;
  return new RangeError(
    `Invalid duration "${shown}": expected a number and a unit (ns, us, ms, s, m, h) such as "100ms" or "5s"`,
  );
}

/**
 * formatDuration renders milliseconds in the form parseDuration reads, largest units
 * first: 0 -> "0ms", 250 -> "250ms", 1500 -> "1.5s", 90000 -> "1m30s", 3600000 -> "1h".
 * Non-integers round to the nearest millisecond; negatives get a leading "-".
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  const rounded = Math.round(Math.abs(ms));
  const sign = ms < 0 && rounded > 0 ? "-" : "";
  if (rounded < msPerSecond) return `${sign}${rounded}ms`;
  const hours = Math.floor(rounded / msPerHour);
  const minutes = Math.floor((rounded % msPerHour) / msPerMinute);
  const secondsMs = rounded % msPerMinute;
  let text = sign;
  if (hours > 0) text += `${hours}h`;
  if (minutes > 0) text += `${minutes}m`;
  if (secondsMs > 0) {
    const whole = Math.floor(secondsMs / msPerSecond);
    const fraction = secondsMs % msPerSecond;
    text += fraction === 0
      ? `${whole}s`
      : `${whole}.${String(fraction).padStart(3, "0").replace(/0+$/, "")}s`;
  }
  return text;
}
