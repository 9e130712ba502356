// TraceDigest is a running hash of everything a simulation run does that can be observed:
// each message handed to the network, each Ready written to a disk, each entry applied
// and read answered, each role change, each proposal's answer, each fault, and the end
// of the run with its stats (test/sim/cluster.ts feeds it when SimOptions.digest is set).
//
// It proves a refactor keeps behaviour: the simulator is deterministic, so a change that
// leaves every decision alone leaves every seed's digest alone (scripts/sim_long.ts
// --digest-out and --digest-compare; make sim-digest).
//
// A pure observation: nothing here draws from a Prng, mutates what it is given or feeds
// back into the run, so a run with the digest on decides exactly what it decides with it
// off. The encoding is canonical so that code which builds the same values another way
// (fields in another order, an optional field left out rather than set to undefined)
// hashes the same: object keys are sorted, undefined fields dropped, bytes hashed.
// Keep this file, and the hooks in cluster.ts that call it, identical in a baseline tree
// and in the tree compared against it (/work/helpers/digests/README.md, docs/architecture.md).

/** Lines are hashed in chunks of about this many characters (cheaper than one by one). */
const chunkCharsMax = 1 << 16;

export class TraceDigest {
  #lines: string[] = [];
  #chars = 0;
  #hash = 0n;
  readonly #sink: ((line: string) => void) | undefined;

  /** sink, when given, receives every line as it is hashed (to diff two runs' traces). */
  constructor(sink?: (line: string) => void) {
    this.#sink = sink;
  }

  /** add feeds one event line, which must not contain a newline (canon never makes one). */
  add(line: string): void {
    this.#lines.push(line);
    this.#chars += line.length + 1;
    this.#sink?.(line);
    if (this.#chars >= chunkCharsMax) this.#flush();
  }

  /** value is the digest of every line so far: 16 hex digits of a chained xxHash64. */
  value(): string {
    this.#flush();
    return this.#hash.toString(16).padStart(16, "0");
  }

  #flush(): void {
    if (this.#lines.length === 0) return;
    // The chunking depends on the lines alone, so equal traces chain equal chunks.
    this.#hash = Bun.hash.xxHash64(this.#lines.join("\n") + "\n", this.#hash);
    this.#lines = [];
    this.#chars = 0;
  }
}

/**
 * canon encodes a value canonically on one line: object keys sorted, undefined fields
 * left out, bytes as their length and xxHash64, strings JSON-quoted.
 */
export function canon(value: unknown): string {
  switch (typeof value) {
    case "string":
      return needsEscape.test(value) ? JSON.stringify(value) : `"${value}"`;
    case "number":
      return Object.is(value, -0) ? "0" : String(value);
    case "boolean":
      return value ? "true" : "false";
    case "bigint":
      return `${value}n`;
    case "undefined":
      return "undefined";
    case "object":
      return canonObject(value);
    default:
      return `<${typeof value}>`;
  }
}

function canonObject(value: object | null): string {
  if (value === null) return "null";
  if (value instanceof Uint8Array) {
    return `b${value.length}:${Bun.hash.xxHash64(value).toString(16)}`;
  }
  if (Array.isArray(value)) return `[${value.map(canon).join(",")}]`;
  if (value instanceof Map) {
    const pairs = [...value].map(([k, v]) => `${canon(k)}=>${canon(v)}`).sort();
    return `Map{${pairs.join(",")}}`;
  }
  if (value instanceof Set) return `Set{${[...value].map(canon).sort().join(",")}}`;
  const record = value as Record<string, unknown>;
  let out = "{";
  for (const key of sortedKeys(record)) {
    const field = record[key];
    if (field === undefined) continue;
    if (out.length > 1) out += ",";
    out += `${key}:${canon(field)}`;
  }
  return out + "}";
}

/**
 * Sorted key lists, by message type and key count (or by the keys themselves): a message
 * type has few shapes, and a cached list is used only when it holds every key present.
 */
const sortedKeysCache = new Map<string, string[]>();

function sortedKeys(record: Record<string, unknown>): string[] {
  const keys = Object.keys(record);
  const type = record.type;
  const shape = typeof type === "string" ? `${type}/${keys.length}` : keys.join(",");
  const cached = sortedKeysCache.get(shape);
  if (cached !== undefined && cached.every((key) => key in record)) return cached;
  const sorted = keys.sort();
  sortedKeysCache.set(shape, sorted);
  return sorted;
}

/** Characters a string must be escaped for (JSON.stringify is slow on the rest). */
// deno-lint-ignore no-control-regex -- control characters are what JSON escapes
const needsEscape = /["\\\u0000-\u001f\u2028\u2029]/;
