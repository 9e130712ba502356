import type { NodeId } from "../consensus/types.ts";
import type { SessionErrorCode } from "../service/sessions.ts";
import type { NodeStatusView } from "./status_view.ts";

export { zeroCounters } from "./status_view.ts";
export type {
  IntegrityView,
  MemberStatusView,
  NodeCounters,
  NodeStatusView,
  RecoveryView,
  ServiceStatusView,
} from "./status_view.ts";

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
  /**
   * The command was committed but refused by the sessions table: `reason` says why
   * (service/sessions.ts's unwrapResult gives it; a stale seq, a seq reused for another write).
   */
  | { ok: false; code: "rejected"; message: string; reason?: SessionErrorCode }
  /**
   * The service threw applying the command: every member rolled it back and returns this
   * same message (service/service.ts).
   */
  | { ok: false; code: "service-error"; message: string };

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
  status(): NodeStatusView;
}

/** Check is one named health or readiness condition, as shown on /healthz and /readyz. */
export interface Check {
  name: string;
  ok: boolean;
  /** Why, for people: "leader node-b heard 40 ms ago", "storage write failed: disk I/O error". */
  detail: string;
}

export type AdminResult<T> =
  | ({ ok: true } & T)
  | {
    ok: false;
    code: "not_leader" | "no_leader" | "unknown_member" | "timeout" | "unavailable" | "bad_request";
    message: string;
    leader: LeaderInfo | null;
  };

/**
 * OpsApi is what the health, metrics and admin endpoints see of a node (DESIGN §8).
 * Implemented by node/node.ts; faked in tests.
 */
export interface OpsApi {
  /** health: the process runs and storage accepts a write (GET /healthz). */
  health(): Check[];
  /**
   * readiness: leader known and heard within the election timeout, applied up to the
   * leader's commit (within a small bound), not recovering, not fenced, storage healthy.
   * Every check is listed, passing or not (GET /readyz).
   */
  readiness(): Check[];
  isLeader(): boolean;
  /** Metrics of the node in Prometheus text format; the HTTP layer appends its own. */
  metricsText(): string;
  /** snapshotNow takes a snapshot of applied state now and compacts the log. */
  snapshotNow(): Promise<AdminResult<{ index: number; bytes: number }>>;
  /**
   * stepDown transfers leadership (to `to`, or the most caught-up follower) and resolves
   * once another member leads, or fails with timeout after about an election timeout.
   */
  stepDown(to: string | undefined): Promise<AdminResult<{ leader: string }>>;
  /** suspend makes client writes fail with 503 "suspended" until resume. */
  suspend(): void;
  resume(): void;
  suspended(): boolean;
  /** shutdown stops the process gracefully; a leader hands over leadership first. */
  shutdown(): Promise<void>;
  /** Token required as "Authorization: Bearer TOKEN" on admin routes; undefined disables them. */
  adminToken: string | undefined;
  /** Recent notable events (elections, leader changes, address changes), newest last. */
  events(): OpsEvent[];
}

export interface OpsEvent {
  /** Milliseconds since the epoch. */
  at: number;
  kind:
    | "leader-changed"
    | "election-started"
    | "snapshot-taken"
    | "snapshot-installed"
    | "peer-connected"
    | "peer-disconnected"
    | "address-changed"
    | "fence"
    | "recovery"
    | "storage";
  message: string;
}
