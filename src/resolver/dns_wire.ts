// The DNS message format (RFC 1035 §4), as much of it as a stub resolver needs: build a
// query, and decode any answer without trusting it. Pure: no I/O, no clock.
//
// Decoding checks every length against the bytes actually there and fails with a
// DnsWireError naming the offset; nothing else is ever thrown for bad input. Name
// compression pointers must point strictly before the label sequence that contains them,
// so following them always terminates (a pointer loop is an error, not a hang).

/** DnsWireError reports a malformed DNS message or a value that cannot be encoded. */
export class DnsWireError extends Error {
  override name = "DnsWireError";
}

/** dnsMessageBytesMax is the largest DNS message (its length must fit 16 bits over TCP). */
export const dnsMessageBytesMax = 65535;
/** dnsHeaderBytes is the fixed header: id, flags and four section counts. */
export const dnsHeaderBytes = 12;
/** dnsNameBytesMax bounds a name in wire form, length octets and root included (RFC 1035). */
export const dnsNameBytesMax = 255;
/** dnsLabelBytesMax bounds one label. */
export const dnsLabelBytesMax = 63;
/** dnsPointerJumpsMax bounds compression pointers followed while reading one name. */
export const dnsPointerJumpsMax = 64;
/** Compression pointers hold 14-bit offsets: names written later than this are not targets. */
const pointerOffsetMax = 0x3fff;

/** RecordType holds the numbers of the record types keel reads. */
export const RecordType = { A: 1, NS: 2, CNAME: 5, SOA: 6, AAAA: 28, OPT: 41 } as const;
/** RecordClass: only the Internet class is used. */
export const RecordClass = { IN: 1 } as const;
/** Rcode holds the response codes a resolver distinguishes. */
export const Rcode = {
  noError: 0,
  formatError: 1,
  serverFailure: 2,
  nameError: 3,
  notImplemented: 4,
  refused: 5,
} as const;

const rcodeNames: Readonly<Record<number, string>> = {
  0: "NOERROR",
  1: "FORMERR",
  2: "SERVFAIL",
  3: "NXDOMAIN",
  4: "NOTIMP",
  5: "REFUSED",
};

/** rcodeName is the mnemonic of a response code ("NXDOMAIN"), or "RCODE n". */
export function rcodeName(rcode: number): string {
  return rcodeNames[rcode] ?? `RCODE ${rcode}`;
}

export interface DnsHeader {
  id: number;
  /** true in a response. */
  response: boolean;
  opcode: number;
  authoritative: boolean;
  truncated: boolean;
  recursionDesired: boolean;
  recursionAvailable: boolean;
  rcode: number;
}

export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

/** RecordData is a record's decoded RDATA; types keel does not read stay raw bytes. */
export type RecordData =
  | { type: "A"; address: string }
  | { type: "AAAA"; address: string }
  | { type: "CNAME"; target: string }
  | { type: "other"; code: number; bytes: Uint8Array };

export interface DnsRecord {
  name: string;
  class: number;
  ttlSeconds: number;
  data: RecordData;
}

export interface DnsMessage {
  header: DnsHeader;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
}

/** recordTypeCode is the type number of a record's data. */
export function recordTypeCode(data: RecordData): number {
  switch (data.type) {
    case "A":
      return RecordType.A;
    case "AAAA":
      return RecordType.AAAA;
    case "CNAME":
      return RecordType.CNAME;
    case "other":
      return data.code;
  }
}

/**
 * encodeQuery builds a standard query for one name and type, recursion desired (so a
 * recursive server resolves it; an authoritative one ignores the bit).
 */
export function encodeQuery(id: number, name: string, type: number): Uint8Array {
  return encodeMessage({
    header: {
      id,
      response: false,
      opcode: 0,
      authoritative: false,
      truncated: false,
      recursionDesired: true,
      recursionAvailable: false,
      rcode: Rcode.noError,
    },
    questions: [{ name, type, class: RecordClass.IN }],
    answers: [],
    authorities: [],
    additionals: [],
  });
}

// --- Names ----------------------------------------------------------------------------
//
// A name's text form is its labels joined by "." with no trailing dot; the root is "".
// Decoded label bytes outside printable ASCII, and "." or "\" inside a label, are written
// as RFC 1035 escapes ("\046", "\\"), so a decoded name never collides with another.

/** normalizeName drops one trailing dot: "a.example." and "a.example" are one name. */
export function normalizeName(name: string): string {
  return name.endsWith(".") && name !== "." ? name.slice(0, -1) : name === "." ? "" : name;
}

/** namesEqual compares names as DNS does: ASCII case-insensitively, trailing dot ignored. */
export function namesEqual(a: string, b: string): boolean {
  return asciiLower(normalizeName(a)) === asciiLower(normalizeName(b));
}

function asciiLower(text: string): string {
  return text.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

/**
 * nameLabels splits a name for encoding and checks it: labels of 1-63 printable ASCII
 * characters (no escapes), at most 255 bytes in wire form.
 */
export function nameLabels(name: string): string[] {
  const text = normalizeName(name);
  if (text === "") return [];
  const labels = text.split(".");
  let wireBytes = 1;
  for (const label of labels) {
    if (label.length === 0) {
      throw new DnsWireError(`Name "${name}" has an empty label`);
    }
    if (label.length > dnsLabelBytesMax) {
      throw new DnsWireError(
        `Name "${name}" has a label of ${label.length} bytes; the maximum is ${dnsLabelBytesMax}`,
      );
    }
    if (!/^[\x21-\x7e]+$/.test(label) || label.includes("\\")) {
      throw new DnsWireError(
        `Name "${name}" has a label with a character outside printable ASCII or a backslash`,
      );
    }
    wireBytes += 1 + label.length;
  }
  if (wireBytes > dnsNameBytesMax) {
    throw new DnsWireError(
      `Name "${name}" is ${wireBytes} bytes in wire form; the maximum is ${dnsNameBytesMax}`,
    );
  }
  return labels;
}

function labelText(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) {
    if (byte === 0x2e || byte === 0x5c) text += "\\" + String.fromCharCode(byte);
    else if (byte >= 0x21 && byte <= 0x7e) text += String.fromCharCode(byte);
    else text += "\\" + String(byte).padStart(3, "0");
  }
  return text;
}

// --- Addresses ------------------------------------------------------------------------

/** parseIPv4 returns the 4 bytes of a dotted-quad address, or undefined. */
export function parseIPv4(text: string): Uint8Array | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (match === null) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const value = Number(match[i + 1]);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

/** formatIPv4 writes 4 bytes as a dotted quad. */
export function formatIPv4(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 4)).join(".");
}

/** parseIPv6 returns the 16 bytes of an IPv6 address (with "::" and a trailing IPv4), or undefined. */
export function parseIPv6(text: string): Uint8Array | undefined {
  if (text.length === 0 || text.length > 45) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const parseGroups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const groups: number[] = [];
    const pieces = part.split(":");
    for (const [index, piece] of pieces.entries()) {
      if (index === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (v4 === undefined) return undefined;
        groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
        groups.push(parseInt(piece, 16));
      } else {
        return undefined;
      }
    }
    return groups;
  };
  const head = parseGroups(halves[0]!);
  const tail = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (const [index, group] of groups.entries()) {
    bytes[index * 2] = group >> 8;
    bytes[index * 2 + 1] = group & 0xff;
  }
  return bytes;
}

/** formatIPv6 writes 16 bytes in the canonical text form of RFC 5952 (lower case, "::"). */
export function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[i * 2]! << 8) | bytes[i * 2 + 1]!);
  // The longest run of two or more zero groups, the first one on a tie, becomes "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && groups[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  const hex = (list: number[]) => list.map((group) => group.toString(16)).join(":");
  if (bestStart === -1) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

// --- Encoding -------------------------------------------------------------------------

class ByteWriter {
  #bytes = new Uint8Array(512);
  length = 0;

  #reserve(count: number): void {
    const needed = this.length + count;
    if (needed > dnsMessageBytesMax) {
      throw new DnsWireError(
        `Message of more than ${dnsMessageBytesMax} bytes cannot be encoded`,
      );
    }
    if (needed <= this.#bytes.length) return;
    const grown = new Uint8Array(
      Math.min(dnsMessageBytesMax, Math.max(needed, this.#bytes.length * 2)),
    );
    grown.set(this.#bytes.subarray(0, this.length));
    this.#bytes = grown;
  }

  u8(value: number): void {
    this.#reserve(1);
    this.#bytes[this.length++] = value & 0xff;
  }

  u16(value: number): void {
    this.#reserve(2);
    this.#bytes[this.length++] = (value >>> 8) & 0xff;
    this.#bytes[this.length++] = value & 0xff;
  }

  u32(value: number): void {
    this.u16((value >>> 16) & 0xffff);
    this.u16(value & 0xffff);
  }

  bytes(data: Uint8Array): void {
    this.#reserve(data.length);
    this.#bytes.set(data, this.length);
    this.length += data.length;
  }

  setU16(offset: number, value: number): void {
    this.#bytes[offset] = (value >>> 8) & 0xff;
    this.#bytes[offset + 1] = value & 0xff;
  }

  finish(): Uint8Array {
    return this.#bytes.slice(0, this.length);
  }
}

function checkU16(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new DnsWireError(`${what} must be an integer from 0 to 65535, got ${value}`);
  }
}

/**
 * encodeMessage writes a message, compressing repeated name suffixes with pointers (as
 * servers do). Section counts come from the arrays. Throws DnsWireError on a value that
 * does not fit (a bad name, an address that does not parse, more than 65535 bytes).
 */
export function encodeMessage(message: DnsMessage): Uint8Array {
  const { header } = message;
  checkU16(header.id, "Message id");
  if (!Number.isInteger(header.opcode) || header.opcode < 0 || header.opcode > 15) {
    throw new DnsWireError(`Opcode must be an integer from 0 to 15, got ${header.opcode}`);
  }
  if (!Number.isInteger(header.rcode) || header.rcode < 0 || header.rcode > 15) {
    throw new DnsWireError(`Rcode must be an integer from 0 to 15, got ${header.rcode}`);
  }
  const writer = new ByteWriter();
  // Lower-cased name suffix -> offset of its first occurrence.
  const suffixes = new Map<string, number>();
  const writeName = (name: string): void => {
    const labels = nameLabels(name);
    for (let i = 0; i < labels.length; i++) {
      const suffix = asciiLower(labels.slice(i).join("."));
      const offset = suffixes.get(suffix);
      if (offset !== undefined) {
        writer.u16(0xc000 | offset);
        return;
      }
      if (writer.length <= pointerOffsetMax) suffixes.set(suffix, writer.length);
      const label = labels[i]!;
      writer.u8(label.length);
      for (let j = 0; j < label.length; j++) writer.u8(label.charCodeAt(j));
    }
    writer.u8(0);
  };

  writer.u16(header.id);
  writer.u16(
    (header.response ? 0x8000 : 0) |
      (header.opcode << 11) |
      (header.authoritative ? 0x0400 : 0) |
      (header.truncated ? 0x0200 : 0) |
      (header.recursionDesired ? 0x0100 : 0) |
      (header.recursionAvailable ? 0x0080 : 0) |
      header.rcode,
  );
  const sections = [message.answers, message.authorities, message.additionals];
  for (const count of [message.questions.length, ...sections.map((s) => s.length)]) {
    checkU16(count, "Section count");
    writer.u16(count);
  }
  for (const question of message.questions) {
    checkU16(question.type, "Question type");
    checkU16(question.class, "Question class");
    writeName(question.name);
    writer.u16(question.type);
    writer.u16(question.class);
  }
  for (const section of sections) {
    for (const record of section) {
      checkU16(record.class, "Record class");
      if (
        !Number.isInteger(record.ttlSeconds) || record.ttlSeconds < 0 ||
        record.ttlSeconds > 0x7fffffff
      ) {
        throw new DnsWireError(
          `TTL must be an integer from 0 to 2147483647, got ${record.ttlSeconds}`,
        );
      }
      const type = recordTypeCode(record.data);
      checkU16(type, "Record type");
      writeName(record.name);
      writer.u16(type);
      writer.u16(record.class);
      writer.u32(record.ttlSeconds);
      const lengthOffset = writer.length;
      writer.u16(0);
      const dataStart = writer.length;
      const data = record.data;
      switch (data.type) {
        case "A": {
          const bytes = parseIPv4(data.address);
          if (bytes === undefined) {
            throw new DnsWireError(`"${data.address}" is not an IPv4 address`);
          }
          writer.bytes(bytes);
          break;
        }
        case "AAAA": {
          const bytes = parseIPv6(data.address);
          if (bytes === undefined) {
            throw new DnsWireError(`"${data.address}" is not an IPv6 address`);
          }
          writer.bytes(bytes);
          break;
        }
        case "CNAME":
          writeName(data.target);
          break;
        case "other":
          writer.bytes(data.bytes);
          break;
      }
      const dataLength = writer.length - dataStart;
      checkU16(dataLength, "Record data length");
      writer.setU16(lengthOffset, dataLength);
    }
  }
  return writer.finish();
}

// --- Decoding -------------------------------------------------------------------------

class ByteReader {
  offset = 0;
  constructor(readonly bytes: Uint8Array) {}

  need(count: number, what: string): void {
    if (this.offset + count > this.bytes.length) {
      throw new DnsWireError(
        `Message of ${this.bytes.length} bytes ends inside ${what} at offset ${this.offset}`,
      );
    }
  }

  u8(what: string): number {
    this.need(1, what);
    return this.bytes[this.offset++]!;
  }

  u16(what: string): number {
    this.need(2, what);
    const value = (this.bytes[this.offset]! << 8) | this.bytes[this.offset + 1]!;
    this.offset += 2;
    return value;
  }

  u32(what: string): number {
    const high = this.u16(what);
    return high * 0x10000 + this.u16(what);
  }
}

/**
 * readName decodes the name at `start`. Returns the name and the offset just after it
 * where it appears (after the first pointer, if any).
 */
function readName(bytes: Uint8Array, start: number): { name: string; end: number } {
  const labels: string[] = [];
  let position = start;
  // Where the label sequence being read began: a pointer must point before it.
  let sequenceStart = start;
  let end = -1;
  let jumps = 0;
  let wireBytes = 1;
  for (;;) {
    if (position >= bytes.length) {
      throw new DnsWireError(
        `Message of ${bytes.length} bytes ends inside the name at offset ${start}`,
      );
    }
    const length = bytes[position]!;
    const kind = length & 0xc0;
    if (kind === 0xc0) {
      if (position + 1 >= bytes.length) {
        throw new DnsWireError(
          `Message of ${bytes.length} bytes ends inside a compression pointer at offset ${position}`,
        );
      }
      const target = ((length & 0x3f) << 8) | bytes[position + 1]!;
      if (target >= sequenceStart) {
        throw new DnsWireError(
          `Compression pointer at offset ${position} points forward or into its own name (to offset ${target})`,
        );
      }
      jumps++;
      if (jumps > dnsPointerJumpsMax) {
        throw new DnsWireError(
          `Name at offset ${start} follows more than ${dnsPointerJumpsMax} compression pointers`,
        );
      }
      if (end === -1) end = position + 2;
      position = target;
      sequenceStart = target;
      continue;
    }
    if (kind !== 0) {
      throw new DnsWireError(
        `Label at offset ${position} has the unsupported type bits 0x${kind.toString(16)}`,
      );
    }
    if (length === 0) {
      if (end === -1) end = position + 1;
      return { name: labels.join("."), end };
    }
    wireBytes += 1 + length;
    if (wireBytes > dnsNameBytesMax) {
      throw new DnsWireError(
        `Name at offset ${start} is longer than ${dnsNameBytesMax} bytes`,
      );
    }
    if (position + 1 + length > bytes.length) {
      throw new DnsWireError(
        `Message of ${bytes.length} bytes ends inside the label at offset ${position}`,
      );
    }
    labels.push(labelText(bytes.subarray(position + 1, position + 1 + length)));
    position += 1 + length;
  }
}

function readNameAt(reader: ByteReader): string {
  const { name, end } = readName(reader.bytes, reader.offset);
  reader.offset = end;
  return name;
}

function readRecord(reader: ByteReader, section: string, index: number): DnsRecord {
  const what = `${section} record ${index}`;
  const name = readNameAt(reader);
  const type = reader.u16(what);
  const recordClass = reader.u16(what);
  const ttlRaw = reader.u32(what);
  const dataLength = reader.u16(what);
  const dataStart = reader.offset;
  reader.need(dataLength, `the data of ${what}`);
  const dataEnd = dataStart + dataLength;
  // RFC 2181 §8: a TTL with the top bit set is treated as zero.
  const ttlSeconds = ttlRaw > 0x7fffffff ? 0 : ttlRaw;
  let data: RecordData;
  if (type === RecordType.A && recordClass === RecordClass.IN) {
    if (dataLength !== 4) {
      throw new DnsWireError(`A record at offset ${dataStart} has ${dataLength} data bytes, not 4`);
    }
    data = { type: "A", address: formatIPv4(reader.bytes.subarray(dataStart, dataEnd)) };
  } else if (type === RecordType.AAAA && recordClass === RecordClass.IN) {
    if (dataLength !== 16) {
      throw new DnsWireError(
        `AAAA record at offset ${dataStart} has ${dataLength} data bytes, not 16`,
      );
    }
    data = { type: "AAAA", address: formatIPv6(reader.bytes.subarray(dataStart, dataEnd)) };
  } else if (type === RecordType.CNAME) {
    // The target may use pointers into the whole message, but must end inside the data.
    const target = readName(reader.bytes, dataStart);
    if (target.end !== dataEnd) {
      throw new DnsWireError(
        `CNAME record at offset ${dataStart} has ${dataLength} data bytes but its name takes ${
          target.end - dataStart
        }`,
      );
    }
    data = { type: "CNAME", target: target.name };
  } else {
    data = { type: "other", code: type, bytes: reader.bytes.slice(dataStart, dataEnd) };
  }
  reader.offset = dataEnd;
  return { name, class: recordClass, ttlSeconds, data };
}

/**
 * decodeMessage parses a DNS message. Throws DnsWireError, and nothing else, when the
 * bytes are not a well-formed message: too short or too long, a count larger than the
 * records present, a bad name or pointer, RDATA of the wrong size, or trailing bytes.
 */
export function decodeMessage(bytes: Uint8Array): DnsMessage {
  if (bytes.length < dnsHeaderBytes) {
    throw new DnsWireError(
      `Message of ${bytes.length} bytes is shorter than the ${dnsHeaderBytes}-byte header`,
    );
  }
  if (bytes.length > dnsMessageBytesMax) {
    throw new DnsWireError(
      `Message of ${bytes.length} bytes exceeds the maximum of ${dnsMessageBytesMax} bytes`,
    );
  }
  const reader = new ByteReader(bytes);
  const id = reader.u16("the header");
  const flags = reader.u16("the header");
  const questionCount = reader.u16("the header");
  const answerCount = reader.u16("the header");
  const authorityCount = reader.u16("the header");
  const additionalCount = reader.u16("the header");
  const header: DnsHeader = {
    id,
    response: (flags & 0x8000) !== 0,
    opcode: (flags >>> 11) & 0x0f,
    authoritative: (flags & 0x0400) !== 0,
    truncated: (flags & 0x0200) !== 0,
    recursionDesired: (flags & 0x0100) !== 0,
    recursionAvailable: (flags & 0x0080) !== 0,
    rcode: flags & 0x0f,
  };
  // Each count is at most 65535 and each entry takes at least 5 bytes, so these loops end
  // within the message's length: the reader throws as soon as the bytes run out.
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < questionCount; i++) {
    const name = readNameAt(reader);
    const type = reader.u16(`question ${i}`);
    const questionClass = reader.u16(`question ${i}`);
    questions.push({ name, type, class: questionClass });
  }
  const readSection = (count: number, section: string): DnsRecord[] => {
    const records: DnsRecord[] = [];
    for (let i = 0; i < count; i++) records.push(readRecord(reader, section, i));
    return records;
  };
  const answers = readSection(answerCount, "answer");
  const authorities = readSection(authorityCount, "authority");
  const additionals = readSection(additionalCount, "additional");
  if (reader.offset !== bytes.length) {
    throw new DnsWireError(
      `Message has ${bytes.length - reader.offset} trailing bytes after its last record`,
    );
  }
  return { header, questions, answers, authorities, additionals };
}
