// A node snapshot carries three replicated states: the incarnation table of fences (the
// replacement protocol's), the service host's (the log's time and the cluster timers,
// node/service_host.ts) and the service's own snapshot. Integers are big-endian.
//
//   version 2: "KNS2", u32 tableBytes, table JSON (UTF-8), u32 hostBytes, host state,
//              service snapshot (the rest)
//   version 1: u32 tableBytes, table JSON (UTF-8), service snapshot (the rest)
//
// Version 1 snapshots (written before timers existed) still decode, with no host state.
// They are told apart by the first four bytes: as a version 1 table length, "KNS2" would
// be 1.26 GB of fence table, which no cluster of at most 9 members ever writes.

import type { FenceTable } from "../consensus/fences.ts";
import { concatBytes } from "../lib/bytes.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const magic = encoder.encode("KNS2");
const magicValue = new DataView(magic.buffer).getUint32(0);

/** encodeSnapshot writes a version 2 node snapshot (an empty host section: no host state). */
export function encodeSnapshot(
  fences: FenceTable,
  service: Uint8Array,
  host: Uint8Array = new Uint8Array(0),
): Uint8Array {
  return concatBytes(encodeSnapshotParts(fences, service, host));
}

/**
 * encodeSnapshotParts is encodeSnapshot's bytes as parts to write one after another, so
 * a large service state is not copied into one more buffer.
 */
export function encodeSnapshotParts(
  fences: FenceTable,
  service: Uint8Array,
  host: Uint8Array = new Uint8Array(0),
): Uint8Array[] {
  const table = encoder.encode(JSON.stringify(fences));
  const head = new Uint8Array(12 + table.byteLength + host.byteLength);
  const view = new DataView(head.buffer);
  head.set(magic, 0);
  view.setUint32(4, table.byteLength);
  head.set(table, 8);
  view.setUint32(8 + table.byteLength, host.byteLength);
  head.set(host, 12 + table.byteLength);
  return [head, service];
}

/** DecodedSnapshot is a node snapshot's parts; `host` is undefined in a version 1 one. */
export interface DecodedSnapshot {
  fences: FenceTable;
  host: Uint8Array | undefined;
  service: Uint8Array;
}

/** decodeSnapshot throws a clear Error on bytes that are not a node snapshot. */
export function decodeSnapshot(data: Uint8Array): DecodedSnapshot {
  if (data.byteLength < 4) {
    throw new Error(`Snapshot of ${data.byteLength} bytes is too short for its header`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (view.getUint32(0) !== magicValue) {
    const { fences, end } = decodeTable(data, 0);
    return { fences, host: undefined, service: data.subarray(end) };
  }
  const { fences, end } = decodeTable(data, 4);
  if (end + 4 > data.byteLength) {
    throw new Error(`Snapshot of ${data.byteLength} bytes is too short for its host section`);
  }
  const hostBytes = view.getUint32(end);
  if (end + 4 + hostBytes > data.byteLength) {
    throw new Error(
      `Snapshot host section of ${hostBytes} bytes runs past the snapshot's ${data.byteLength} bytes`,
    );
  }
  return {
    fences,
    host: data.subarray(end + 4, end + 4 + hostBytes),
    service: data.subarray(end + 4 + hostBytes),
  };
}

/** decodeTable reads the length-prefixed fence table at offset. */
function decodeTable(data: Uint8Array, offset: number): { fences: FenceTable; end: number } {
  if (offset + 4 > data.byteLength) {
    throw new Error(`Snapshot of ${data.byteLength} bytes is too short for its header`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const length = view.getUint32(offset);
  const start = offset + 4;
  if (start + length > data.byteLength) {
    throw new Error(
      `Snapshot fence table of ${length} bytes runs past the snapshot's ${data.byteLength} bytes`,
    );
  }
  let fences: unknown;
  try {
    fences = JSON.parse(decoder.decode(data.subarray(start, start + length)));
  } catch (error: unknown) {
    throw new Error(
      `Snapshot fence table is not JSON: ${error instanceof Error ? error.message : error}`,
    );
  }
  if (typeof fences !== "object" || fences === null || Array.isArray(fences)) {
    throw new Error("Snapshot fence table must be an object");
  }
  for (const [name, entry] of Object.entries(fences)) {
    const e = entry as { incarnation?: unknown; index?: unknown; superseded?: unknown } | null;
    if (
      typeof e !== "object" || e === null ||
      typeof e.incarnation !== "string" || !Number.isSafeInteger(e.index) ||
      !Array.isArray(e.superseded) || !e.superseded.every((s) => typeof s === "string")
    ) {
      throw new Error(`Snapshot fence table entry for "${name}" is malformed`);
    }
  }
  return { fences: fences as FenceTable, end: start + length };
}
