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
// hashes the same: the order of an object's keys does not count, undefined fields are
// left out.
// Keep this file, and the hooks in cluster.ts that call it, identical in a baseline tree
// and in the tree compared against it (/work/helpers/digests/README.md, docs/architecture.md).

/**
 * TraceDigest hashes events as they come, without building text: each value is fed to a
 * two-lane 32-bit multiply-rotate hash (murmur3's constants), one word at a time; an
 * object's fields are hashed one by one and summed (their order does not count). Text
 * lines are made only for a sink.
 */
export class TraceDigest {
  #a = 0x9e3779b9 | 0;
  #b = 0x85ebca6b | 0;
  readonly #sink: ((line: string) => void) | undefined;

  /** sink, when given, receives each event as a line of text (to diff two runs' traces). */
  constructor(sink?: (line: string) => void) {
    this.#sink = sink;
  }

  /**
   * event feeds one event: the tick, what happened, and its values (strings as they are,
   * numbers, booleans, plain objects, arrays and bytes; see canon).
   */
  event(tick: number, kind: string, ...values: unknown[]): void {
    this.#word(0x45564e54); // an event starts
    this.#value(tick);
    this.#string(kind);
    for (const value of values) this.#value(value);
    if (this.#sink !== undefined) {
      const text = values.map((value) => typeof value === "string" ? value : canon(value));
      this.#sink([String(tick), kind, ...text].join(" "));
    }
  }

  /** add feeds an event written as one line of text. */
  add(line: string): void {
    this.#word(0x4c494e45); // a line of text
    this.#string(line);
    this.#sink?.(line);
  }

  /** value is the digest of every event so far: 16 hex digits. */
  value(): string {
    const hex = (h: number) => (fmix(h) >>> 0).toString(16).padStart(8, "0");
    return hex(this.#a ^ Math.imul(this.#b, 0x27d4eb2d)) + hex(this.#b);
  }

  #word(word: number): void {
    let a = Math.imul(this.#a ^ word, 0xcc9e2d51);
    a = Math.imul((a << 15) | (a >>> 17), 0x1b873593);
    this.#a = a;
    let b = (Math.imul(this.#b ^ word, 0x85ebca6b) + a) | 0;
    b = (b << 13) | (b >>> 19);
    this.#b = (Math.imul(b, 5) + 0xe6546b64) | 0;
  }

  #string(text: string): void {
    this.#word(3);
    this.#word(text.length);
    let i = 0;
    for (; i + 1 < text.length; i += 2) {
      this.#word(text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16));
    }
    if (i < text.length) this.#word(text.charCodeAt(i));
  }

  #value(value: unknown): void {
    switch (typeof value) {
      case "string":
        return this.#string(value);
      case "number":
        if (Number.isInteger(value) && value >= -0x80000000 && value <= 0x7fffffff) {
          this.#word(1);
          this.#word(value | 0);
        } else {
          float[0] = value;
          this.#word(2);
          this.#word(floatWords[0]!);
          this.#word(floatWords[1]!);
        }
        return;
      case "boolean":
        return this.#word(value ? 5 : 4);
      case "undefined":
        return this.#word(6);
      case "bigint":
        this.#word(12);
        return this.#string(value.toString());
      case "object":
        return this.#object(value);
      default:
        throw new TypeError(`A trace digest cannot hash a ${typeof value}`);
    }
  }

  #object(value: object | null): void {
    if (value === null) return this.#word(7);
    if (value instanceof Uint8Array) {
      this.#word(8);
      this.#word(value.length);
      let i = 0;
      for (; i + 3 < value.length; i += 4) {
        this.#word(
          value[i]! | (value[i + 1]! << 8) | (value[i + 2]! << 16) | (value[i + 3]! << 24),
        );
      }
      for (; i < value.length; i++) this.#word(value[i]!);
      return;
    }
    if (Array.isArray(value)) {
      this.#word(9);
      this.#word(value.length);
      for (const item of value) this.#value(item);
      return;
    }
    if (value instanceof Map || value instanceof Set || ArrayBuffer.isView(value)) {
      throw new TypeError(`A trace digest cannot hash a ${value.constructor.name}`);
    }
    // The fields' hashes are summed, so their order does not count and needs no sort.
    const record = value as Record<string, unknown>;
    const outerA = this.#a;
    const outerB = this.#b;
    let sumA = 0;
    let sumB = 0;
    let fields = 0;
    for (const key in record) {
      const field = record[key];
      if (field === undefined) continue;
      this.#a = fieldSeedA;
      this.#b = fieldSeedB;
      this.#string(key);
      this.#value(field);
      sumA = (sumA + fmix(this.#a)) | 0;
      sumB = (sumB + fmix(this.#b ^ Math.imul(this.#a, 0x27d4eb2d))) | 0;
      fields++;
    }
    this.#a = outerA;
    this.#b = outerB;
    this.#word(10);
    this.#word(fields);
    this.#word(sumA);
    this.#word(sumB);
  }
}

/** Each field of an object is hashed on its own from these, then summed. */
const fieldSeedA = 0x3c6ef372 | 0;
const fieldSeedB = 0xa54ff53a | 0;
const float = new Float64Array(1);
const floatWords = new Uint32Array(float.buffer);

/** fmix is murmur3's finalizer: every input bit reaches every output bit. */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
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
