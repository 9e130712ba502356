import type { NodeId } from "../consensus/types.ts";

/** SessionKey identifies a client write for exactly-once apply (Raft dissertation §6.3). */
export interface SessionKey {
  clientId: string;
  /** Per-client sequence number; a retry reuses it. */
  seq: number;
}

export interface LeaderInfo {
  name: NodeId;
  /** Base URL of the leader's HTTP API, e.g. "http://127.0.0.11:7080". */
  httpUrl: string;
}

export type SubmitResult =
  | { ok: true; result: Uint8Array; index: number }
  | { ok: false; code: "not-leader"; leader: LeaderInfo | null; message: string }
  | { ok: false; code: "timeout" | "unavailable"; message: string }
  /** The command was committed but refused (e.g. a stale idempotency sequence). */
  | { ok: false; code: "rejected"; message: string };

export type ReadBarrierResult =
  | { ok: true }
  | {
    ok: false;
    code: "not-leader" | "no-leader" | "timeout";
    leader: LeaderInfo | null;
    message: string;
  };

/**
 * NodeApi is all the HTTP layer sees of a node. It is implemented by node/node.ts and by
 * fakes in tests, so handlers are tested through app.request() without a cluster.
 */
export interface NodeApi {
  name: NodeId;
  /** submit replicates a service command and resolves with its result once applied here. */
  submit(command: Uint8Array, session: SessionKey | undefined): Promise<SubmitResult>;
  /** readBarrier resolves once this node's state reflects every write acknowledged before the call (ReadIndex). */
  readBarrier(): Promise<ReadBarrierResult>;
  leader(): LeaderInfo | null;
  /** status is the JSON shown on GET /status. */
  status(): unknown;
}
