// Output of the client commands: where text goes (Io, so tests run main() in-process and
// capture it), tables for people and JSON for scripts.

import { formatDuration } from "../lib/duration.ts";

/** Io is the outside world of a command: its streams and environment. */
export interface Io {
  out(text: string | Uint8Array): void;
  err(text: string): void;
  /** readStdin reads standard input to its end (for `kv put KEY -`). */
  readStdin(): Promise<Uint8Array>;
  /** Whether stdout is a terminal (a raw value then gets a trailing newline). */
  isTTY: boolean;
  env: Readonly<Record<string, string | undefined>>;
}

/** processIo is the real process's streams and environment. */
export function processIo(): Io {
  return {
    out: (text) => void process.stdout.write(text),
    err: (text) => void process.stderr.write(text),
    readStdin: async () => new Uint8Array(await Bun.stdin.arrayBuffer()),
    isTTY: process.stdout.isTTY === true,
    env: process.env,
  };
}

/** writeJson prints a value as indented JSON, the `--json` output of every command. */
export function writeJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, null, 2) + "\n");
}

/**
 * table lays rows out in columns separated by two spaces; the first row is the header.
 * Trailing spaces are trimmed so output diffs cleanly.
 */
export function table(rows: readonly (readonly string[])[]): string {
  const header = rows[0];
  if (header === undefined) return "";
  const widths = header.map((_, column) =>
    Math.max(...rows.map((row) => displayWidth(row[column] ?? "")))
  );
  return rows.map((row) =>
    row.map((cell, column) => cell + " ".repeat(widths[column]! - displayWidth(cell)))
      .join("  ")
      .trimEnd()
  ).join("\n") + "\n";
}

/** fields lays out "label  value" lines with the values aligned. */
export function fields(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([label]) => label.length));
  return pairs.map(([label, value]) => `${label.padEnd(width)}  ${value}`.trimEnd()).join("\n") +
    "\n";
}

// Cells are ASCII but for "—" and "…"; each of those is one column wide too, so plain
// string length is the display width.
function displayWidth(text: string): number {
  return [...text].length;
}

/** dash shows a missing value as "-". */
export function dash(value: string | number | null | undefined): string {
  return value === null || value === undefined ? "-" : String(value);
}

/** yesNo shows a boolean as "yes" or "no". */
export function yesNo(value: boolean): string {
  return value ? "yes" : "no";
}

/** ms shows a duration for people: "412ms", "2.4s", "1m30s". */
export function ms(value: number): string {
  return formatDuration(value);
}

/** bytes shows a size for people, to one decimal: "512 B", "33.8 KiB", "1.2 GiB". */
export function bytes(value: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let scaled = value;
  let unit = 0;
  while (Math.abs(scaled) >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${scaled.toFixed(1)} ${units[unit]}`;
}

/** plural gives "1 write" or "3 writes". */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
