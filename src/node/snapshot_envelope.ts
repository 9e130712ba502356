// A node snapshot carries two replicated states: the incarnation table of fences (the
// replacement protocol's) and the service's own snapshot.
//
//   [u32 big-endian byte length of the table JSON][table JSON, UTF-8][service snapshot]

import type { FenceTable } from "../consensus/fences.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeSnapshot(fences: FenceTable, service: Uint8Array): Uint8Array {
  const table = encoder.encode(JSON.stringify(fences));
  const out = new Uint8Array(4 + table.byteLength + service.byteLength);
  new DataView(out.buffer).setUint32(0, table.byteLength);
  out.set(table, 4);
  out.set(service, 4 + table.byteLength);
  return out;
}

/** decodeSnapshot throws a clear Error on bytes that are not a node snapshot. */
export function decodeSnapshot(data: Uint8Array): { fences: FenceTable; service: Uint8Array } {
  if (data.byteLength < 4) {
    throw new Error(`Snapshot of ${data.byteLength} bytes is too short for its header`);
  }
  const length = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
  if (4 + length > data.byteLength) {
    throw new Error(
      `Snapshot fence table of ${length} bytes runs past the snapshot's ${data.byteLength} bytes`,
    );
  }
  let fences: unknown;
  try {
    fences = JSON.parse(decoder.decode(data.subarray(4, 4 + length)));
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
  return { fences: fences as FenceTable, service: data.subarray(4 + length) };
}
