/**
 * ByteReader reads big-endian integers and byte runs from a buffer, with bounds checks.
 * Every failure is thrown through `fail`, so each format reports its own error class.
 */
export class ByteReader {
  readonly #data: Uint8Array;
  readonly #fail: (message: string) => Error;
  #offset = 0;

  // Byte arithmetic rather than a DataView: readers are made per entry on the apply path,
  // where creating a view costs more than the reads.
  constructor(data: Uint8Array, fail: (message: string) => Error) {
    this.#data = data;
    this.#fail = fail;
  }

  u8(): number {
    this.#need(1);
    return this.#data[this.#offset++]!;
  }

  u16(): number {
    this.#need(2);
    const d = this.#data;
    const o = this.#offset;
    this.#offset += 2;
    return (d[o]! << 8) | d[o + 1]!;
  }

  u32(): number {
    this.#need(4);
    const d = this.#data;
    const o = this.#offset;
    this.#offset += 4;
    return ((d[o]! << 24) | (d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!) >>> 0;
  }

  u64(): number {
    const value = this.u32() * 2 ** 32 + this.u32();
    if (!Number.isSafeInteger(value)) throw this.#fail("u64 exceeds the safe integer range");
    return value;
  }

  /** bytes returns a view into the input; copy it before keeping it. */
  bytes(length: number): Uint8Array {
    this.#need(length);
    const value = this.#data.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return value;
  }

  rest(): Uint8Array {
    return this.bytes(this.#data.length - this.#offset);
  }

  /** end checks that the whole input was read. */
  end(): void {
    const left = this.#data.length - this.#offset;
    if (left !== 0) throw this.#fail(`${left} trailing bytes`);
  }

  #need(bytes: number): void {
    const left = this.#data.length - this.#offset;
    if (bytes > left) {
      throw this.#fail(`truncated: needed ${bytes} bytes at offset ${this.#offset}, had ${left}`);
    }
  }
}
