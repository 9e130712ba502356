/**
 * Byte sizes in config are text such as "1MiB", "512KiB", "64MB" or a plain "1000".
 * Binary units (KiB, MiB, GiB, TiB) are powers of 1024; decimal units (kB, KB, MB, GB, TB)
 * are powers of 1000, as their SI names say.
 */

const kib = 1024;

const unitBytes: Readonly<Record<string, number>> = {
  "": 1,
  B: 1,
  kB: 1e3,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KiB: kib,
  MiB: kib ** 2,
  GiB: kib ** 3,
  TiB: kib ** 4,
};

const bytesPattern = /^(\d+(?:\.\d*)?|\.\d+) ?([A-Za-z]*)$/;

const bytesTextLengthMax = 64;

/**
 * parseBytes reads a size such as "1MiB", "512KiB", "64MB", "1.5KiB" or "1000" and
 * returns a whole number of bytes. Throws RangeError on an unknown unit, a fraction of a
 * byte, or a size beyond Number.MAX_SAFE_INTEGER.
 */
export function parseBytes(text: string): number {
  const match = text.length <= bytesTextLengthMax ? bytesPattern.exec(text) : null;
  const unit = match?.[2] ?? "";
  const scale = unitBytes[unit];
  if (match === null || scale === undefined) {
    const shown = text.length > bytesTextLengthMax
      ? `${text.slice(0, bytesTextLengthMax)}...`
      : text;
    return invalid(
      `Invalid size "${shown}": expected a number and an optional unit (B, KiB, MiB, GiB, kB, MB, GB) such as "1MiB"`,
    );
  }
  // Exact decimal arithmetic, so "1.1MB" is 1100000 and not 1100000.0000000002.
  const [whole = "", fraction = ""] = (match[1] ?? "").split(".");
  const numerator = BigInt(`${whole}${fraction}` || "0") * BigInt(scale);
  const denominator = 10n ** BigInt(fraction.length);
  if (numerator % denominator !== 0n) {
    return invalid(`Size "${text}" is not a whole number of bytes`);
  }
  const bytes = numerator / denominator;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    return invalid(`Size "${text}" exceeds the maximum of ${Number.MAX_SAFE_INTEGER} bytes`);
  }
  return Number(bytes);
}

function invalid(message: string): never {
  throw new RangeError(message);
}

/** formatBytes renders a size in the largest binary unit that divides it: 1048576 -> "1MiB". */
export function formatBytes(bytes: number): string {
  for (const unit of ["TiB", "GiB", "MiB", "KiB"] as const) {
    const scale = unitBytes[unit] ?? 1;
    if (bytes !== 0 && bytes % scale === 0) return `${bytes / scale}${unit}`;
  }
  return `${bytes}B`;
}

/** concatBytes joins byte strings into one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.byteLength;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}
