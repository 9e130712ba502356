// The node snapshot envelope (src/node/snapshot_envelope.ts): version 2 carries the service
// host's state (the log's time, timers); version 1 snapshots, written before, still decode.

import { expect, test } from "bun:test";
import type { FenceTable } from "../../src/consensus/fences.ts";
import { decodeSnapshot, encodeSnapshot } from "../../src/node/snapshot_envelope.ts";
import { decodeHostState, encodeHostState } from "../../src/node/service_host.ts";

const fences: FenceTable = { "node-a": { incarnation: "abc", index: 3, superseded: ["old"] } };
const service = new TextEncoder().encode("service state");

test("a version 2 snapshot carries fences, host state and service bytes", () => {
  const host = encodeHostState({
    timeMs: 42,
    timers: [{ id: "t", deadlineMs: 50, generation: 7 }],
  });
  const decoded = decodeSnapshot(encodeSnapshot(fences, service, host));
  expect(decoded.fences).toEqual(fences);
  expect(decoded.service).toEqual(service);
  expect(decodeHostState(decoded.host!)).toEqual({
    timeMs: 42,
    timers: [{ id: "t", deadlineMs: 50, generation: 7 }],
  });
});

test("a version 1 snapshot (no host section) still decodes", () => {
  const table = new TextEncoder().encode(JSON.stringify(fences));
  const v1 = new Uint8Array(4 + table.length + service.length);
  new DataView(v1.buffer).setUint32(0, table.length);
  v1.set(table, 4);
  v1.set(service, 4 + table.length);
  const decoded = decodeSnapshot(v1);
  expect(decoded).toEqual({ fences, host: undefined, service });
});

test("a version 2 snapshot whose host section runs past the end is refused", () => {
  const data = encodeSnapshot(fences, new Uint8Array(0), new Uint8Array(8));
  expect(() => decodeSnapshot(data.subarray(0, data.length - 1))).toThrow(
    /^Snapshot host section of 8 bytes runs past/,
  );
});
