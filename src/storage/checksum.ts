// Checksums of what a data dir stores: log entries, the hard state, the meta row, the
// snapshot row and the snapshot files' blocks.
//
// The hash is xxHash3 (64 bits, Bun.hash.xxHash3): on this project's hardware it hashes a
// 10 KiB value about 3.5 times faster than Bun's CRC32 (scripts/storage_bench_hash.ts), and
// 64 bits leave a random corruption undetected with probability 2^-64 rather than 2^-32.
// A checksum is stored as SQLite's signed 64-bit INTEGER: the hash's bits read as a signed
// bigint (BigInt.asIntN), which is also how the connection (safeIntegers) reads it back.
//
// What each checksum covers is encoded here, once, so the write path and the verify path
// cannot disagree. A checksum is computed from the values as stored (bigint integers,
// kind and status as text), never from their parsed forms: a verify runs before anything
// interprets a damaged row (an unknown kind or a term past 2^53 is corruption, not a bug).
// Each record type hashes with its own seed, so one type's bytes never pass for another's.

/** Checksum is a stored checksum: a 64-bit hash as a signed bigint. */
export type Checksum = bigint;

/** snapshotBlockBytes is the size of the blocks a snapshot file's checksums cover. */
export const snapshotBlockBytes = 64 * 1024;

/** Seeds per record type (arbitrary, distinct). */
const seeds = {
  entryHeader: 0x6b65656c01n,
  hardState: 0x6b65656c02n,
  meta: 0x6b65656c03n,
  snapshotRow: 0x6b65656c04n,
  snapshotBlocks: 0x6b65656c05n,
} as const;

/** Field is a value as stored in a row: integers as bigint or number, text, or NULL. */
export type Field = bigint | number | string | null;

const textEncoder = new TextEncoder();

/**
 * entryHeaders: an entry's header (index, term, kind as text) for each known kind, with
 * the kind already in place; the hot path fills in index and term and hashes it whole.
 */
const entryHeaders = new Map<string, { bytes: Uint8Array; view: DataView }>();
for (const kind of ["noop", "command", "fence"]) {
  const text = textEncoder.encode(kind);
  const bytes = new Uint8Array(16 + 4 + text.length);
  const headerView = new DataView(bytes.buffer);
  headerView.setUint32(16, text.length);
  bytes.set(text, 20);
  entryHeaders.set(kind, { bytes, view: headerView });
}

/** scratch holds a record's encoding; it grows for long text, and is reused. */
let scratch = new Uint8Array(256);
let view = new DataView(scratch.buffer);

function ensureScratch(bytes: number): void {
  if (bytes <= scratch.length) return;
  let length = scratch.length;
  while (length < bytes) length *= 2;
  const grown = new Uint8Array(length);
  grown.set(scratch);
  scratch = grown;
  view = new DataView(grown.buffer);
}

/** putInteger writes an integer as 8 big-endian bytes (two's complement). */
function putInteger(offset: number, value: bigint | number, into: DataView = view): number {
  if (typeof value === "bigint") {
    into.setBigInt64(offset, BigInt.asIntN(64, value));
  } else if (Number.isSafeInteger(value) && value >= 0) {
    // The hot path: no bigint. Equal to setBigInt64(BigInt(value)) for these values.
    into.setUint32(offset, Math.floor(value / 0x1_0000_0000));
    into.setUint32(offset + 4, value >>> 0);
  } else {
    into.setBigInt64(offset, BigInt.asIntN(64, BigInt(value)));
  }
  return offset + 8;
}

/** putText writes a 4-byte length then the UTF-8 bytes. */
function putText(offset: number, value: string | Uint8Array): number {
  const bytes = typeof value === "string" ? textEncoder.encode(value) : value;
  ensureScratch(offset + 4 + bytes.length);
  view.setUint32(offset, bytes.length);
  scratch.set(bytes, offset + 4);
  return offset + 4 + bytes.length;
}

/** encodeFields encodes fields, each a tag byte then its value, into the scratch buffer. */
function encodeFields(fields: readonly Field[]): number {
  let offset = 0;
  for (const field of fields) {
    ensureScratch(offset + 9);
    if (field === null) {
      scratch[offset++] = 0;
    } else if (typeof field === "string") {
      scratch[offset++] = 2;
      offset = putText(offset, field);
    } else {
      scratch[offset++] = 1;
      offset = putInteger(offset, field);
    }
  }
  return offset;
}

function toChecksum(hash: bigint): Checksum {
  return BigInt.asIntN(64, hash);
}

/**
 * entryChecksum covers an entry's index, term, kind and data. The header (index, term,
 * kind) is hashed into the seed of the data's hash: the data is never copied.
 */
export function entryChecksum(
  index: bigint | number,
  term: bigint | number,
  kind: string,
  data: Uint8Array,
): Checksum {
  let header: Uint8Array;
  const known = entryHeaders.get(kind);
  if (known !== undefined) {
    putInteger(0, index, known.view);
    putInteger(8, term, known.view);
    header = known.bytes;
  } else {
    // A kind keel does not write (found on disk): the same layout, built in the scratch.
    let offset = putInteger(0, index);
    offset = putInteger(offset, term);
    offset = putText(offset, kind);
    header = scratch.subarray(0, offset);
  }
  const seed = Bun.hash.xxHash3(header, seeds.entryHeader);
  return toChecksum(Bun.hash.xxHash3(data, seed));
}

/** hardStateChecksum covers term, votedFor and commitIndex. */
export function hardStateChecksum(
  term: bigint | number,
  votedFor: string | null,
  commitIndex: bigint | number,
): Checksum {
  return recordChecksum(seeds.hardState, [term, votedFor, commitIndex]);
}

/** metaChecksum covers the identity: name, incarnation and status. */
export function metaChecksum(name: string, incarnation: string, status: string): Checksum {
  return recordChecksum(seeds.meta, [name, incarnation, status]);
}

/**
 * snapshotRowChecksum covers the snapshot row: the meta, the generation naming its file,
 * the block size and the file checksum (which covers the blocks' checksums).
 */
export function snapshotRowChecksum(
  fields: {
    index: bigint | number;
    term: bigint | number;
    bytes: bigint | number;
    generation: bigint | number;
    blockBytes: bigint | number;
    fileChecksum: Checksum;
  },
): Checksum {
  return recordChecksum(seeds.snapshotRow, [
    fields.index,
    fields.term,
    fields.bytes,
    fields.generation,
    fields.blockBytes,
    fields.fileChecksum,
  ]);
}

function recordChecksum(seed: bigint, fields: readonly Field[]): Checksum {
  const length = encodeFields(fields);
  return toChecksum(Bun.hash.xxHash3(scratch.subarray(0, length), seed));
}

/** blockChecksum covers one block of a snapshot file; its position is in the seed. */
export function blockChecksum(block: Uint8Array, blockIndex: number): Checksum {
  return toChecksum(Bun.hash.xxHash3(block, BigInt(blockIndex)));
}

/**
 * fileChecksum is the whole file's checksum: a hash of its blocks' checksums (their
 * encoding as stored) and of its length. With every block verified against its checksum
 * and the list against this one, the whole file is.
 */
export function fileChecksum(blockChecksums: Uint8Array, bytes: number): Checksum {
  return toChecksum(Bun.hash.xxHash3(blockChecksums, seeds.snapshotBlocks + BigInt(bytes)));
}

/** blockCount is how many blocks a file of `bytes` bytes has (the last may be short). */
export function blockCount(bytes: number): number {
  return Math.ceil(bytes / snapshotBlockBytes);
}

/** checksumAt reads block `blockIndex`'s checksum from a list of them (8 bytes each, LE). */
export function checksumAt(blockChecksums: Uint8Array, blockIndex: number): Checksum {
  return new DataView(blockChecksums.buffer, blockChecksums.byteOffset, blockChecksums.length)
    .getBigInt64(blockIndex * 8, true);
}

/** hex shows a checksum in messages as 16 hex digits. */
export function hex(checksum: Checksum): string {
  return BigInt.asUintN(64, checksum).toString(16).padStart(16, "0");
}

/**
 * BlockHasher computes a snapshot file's block checksums from its bytes as they come,
 * in order, in pieces of any size. Pieces that are whole aligned blocks are hashed where
 * they lie; only a block split across pieces is copied.
 */
export class BlockHasher {
  readonly #blocks: Uint8Array;
  readonly #view: DataView;
  readonly #bytes: number;
  #pending = new Uint8Array(0);
  #pendingBytes = 0;
  #blockIndex = 0;
  #received = 0;

  /** A hasher for a file of `bytes` bytes. */
  constructor(bytes: number) {
    this.#bytes = bytes;
    this.#blocks = new Uint8Array(blockCount(bytes) * 8);
    this.#view = new DataView(this.#blocks.buffer);
  }

  get received(): number {
    return this.#received;
  }

  update(data: Uint8Array): void {
    if (this.#received + data.length > this.#bytes) {
      throw new RangeError(
        `Snapshot bytes end at ${this.#received + data.length}, past its ${this.#bytes} bytes`,
      );
    }
    this.#received += data.length;
    let offset = 0;
    if (this.#pendingBytes > 0) {
      const take = Math.min(snapshotBlockBytes - this.#pendingBytes, data.length);
      this.#pending.set(data.subarray(0, take), this.#pendingBytes);
      this.#pendingBytes += take;
      offset = take;
      if (this.#pendingBytes === snapshotBlockBytes) {
        this.#put(this.#pending);
        this.#pendingBytes = 0;
      }
    }
    while (data.length - offset >= snapshotBlockBytes) {
      this.#put(data.subarray(offset, offset + snapshotBlockBytes));
      offset += snapshotBlockBytes;
    }
    if (offset < data.length) {
      if (this.#pending.length === 0) this.#pending = new Uint8Array(snapshotBlockBytes);
      this.#pending.set(data.subarray(offset), 0);
      this.#pendingBytes = data.length - offset;
    }
  }

  /** finish returns the blocks' checksums, once every byte has come. */
  finish(): { blockChecksums: Uint8Array; fileChecksum: Checksum } {
    if (this.#received !== this.#bytes) {
      throw new RangeError(`Snapshot has ${this.#received} of its ${this.#bytes} bytes`);
    }
    if (this.#pendingBytes > 0) {
      this.#put(this.#pending.subarray(0, this.#pendingBytes));
      this.#pendingBytes = 0;
    }
    return {
      blockChecksums: this.#blocks,
      fileChecksum: fileChecksum(this.#blocks, this.#bytes),
    };
  }

  #put(block: Uint8Array): void {
    this.#view.setBigInt64(this.#blockIndex * 8, blockChecksum(block, this.#blockIndex), true);
    this.#blockIndex++;
  }
}
