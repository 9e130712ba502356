// The JSON of GET /status, typed once: the node builds it (KeelNode.status()), the HTTP
// layer serves it, and the CLI, the tests and the benchmark read it. It lives beside
// http/api.ts because http sees the node only through that interface (test/tidy).

import type { SecurityStatus } from "../config/secret.ts";
import type { NodeId, Role } from "../consensus/types.ts";
import type { MemberResolution } from "../resolver/dns.ts";
import type { MemberGossip } from "../resolver/gossip.ts";

/** IntegrityView is the scrubber's part of /status (node/scrub.ts). */
export interface IntegrityView {
  /** When the last full pass ended (ms since the epoch), or null before the first. */
  lastFullPassAt: number | null;
  passesCompleted: number;
  bytesVerified: number;
  problemsFound: number;
  /** Records that failed their checksums, by kind, found by reads and by scrubbing. */
  corruptionsFound: Record<string, number>;
  scrubbing: boolean;
}

/** NodeStatusView is what NodeApi.status() returns and GET /status shows. */
export interface NodeStatusView {
  name: NodeId;
  incarnation: string;
  /** The stored lifecycle state, or "fenced" once this incarnation is fenced (R7). */
  status: "normal" | "recovering" | "fenced";
  /** A replacement's catch-up progress; null when normal. */
  recovery: RecoveryView | null;
  alarms: string[];
  /** The scrubber: last full pass, bytes verified, damage found (absent in older nodes). */
  integrity?: IntegrityView;
  version: string;
  clusterName: string;
  role: Role;
  term: number;
  leader: NodeId | null;
  votedFor: NodeId | null;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  firstIndex: number;
  /** The latest snapshot's index and size; 0 when there is none. */
  snapshotIndex: number;
  snapshotBytes: number;
  logBytesInMemory: number;
  storageBytes: number;
  uptimeMs: number;
  /** 0 on the leader; null when no leader is known. */
  leaderHeardMsAgo: number | null;
  pendingWrites: number;
  pendingReads: number;
  suspended: boolean;
  /** The leader's commitIndex as last heard (its own on the leader). */
  leaderCommitSeen: number;
  counters: NodeCounters;
  /** Peer authentication, tokens and TLS in force (config/secret.ts). */
  security: SecurityStatus;
  service: ServiceStatusView;
  /** Every configured member, in config order, this node included. */
  members: MemberStatusView[];
}

/** NodeCounters are monotonic counts shown on /status and /metrics. */
export interface NodeCounters {
  leaderChanges: number;
  electionsStarted: number;
  proposals: number;
  readsServed: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  messagesSent: number;
  messagesReceived: number;
  /** Entries whose apply or onTimer threw (rolled back, answered with an error). */
  serviceErrors: number;
  /** Timers fired (onTimer called) on this node. */
  timersFired: number;
}

/** zeroCounters is a node's counters before anything happened. */
export function zeroCounters(): NodeCounters {
  return {
    leaderChanges: 0,
    electionsStarted: 0,
    proposals: 0,
    readsServed: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    messagesSent: 0,
    messagesReceived: 0,
    serviceErrors: 0,
    timersFired: 0,
  };
}

/** ServiceStatusView is the service part of /status: the same fields for any service. */
export interface ServiceStatusView {
  /** The log's time as of the last applied entry (ms since the epoch). */
  timeMs: number;
  timers: number;
  /** Entries applied to the service by this process, and their total and worst apply time. */
  applied: number;
  applySecondsTotal: number;
  applySecondsMax: number;
  /** The latest apply that threw, the same on every member: index and message. */
  lastError: { index: number; message: string } | null;
  snapshotBytes: number;
}

/** RecoveryView is a replacement's catch-up progress (R2-R6), or why it is fenced (R7). */
export interface RecoveryView {
  state: "waiting-for-members" | "catching-up" | "fenced";
  fencedReason: string | null;
  startedAt: number | null;
  snapshotBytesDone: number;
  snapshotBytesTotal: number;
  entriesDone: number;
  entriesTotal: number;
  bytesPerSecond: number | null;
  etaSeconds: number | null;
}

/** MemberStatusView is one configured member as this node sees it. */
export interface MemberStatusView {
  name: NodeId;
  self: boolean;
  /** "host:port" of its peer endpoint; "" while a gossip-named member is unknown. */
  peer: string;
  /** Base URL of its HTTP API; "" while unknown. */
  http: string;
  connected: boolean;
  incarnation: string | null;
  lastError: string | null;
  /**
   * Its own lastIndex for this node; for a peer, what this node tracked while it last led
   * (null if it has not led since it started).
   */
  matchIndex: number | null;
  lag: number | null;
  /** The leader's replication state for it ("probe", "replicate", "snapshot"), else null. */
  replication: string | null;
  /** Leader: whether this member's acknowledgements count toward commit (R3, R5). */
  counted: boolean | null;
  /** DNS resolution of the peer endpoint; null for this node itself or an IP endpoint. */
  resolution: MemberResolution | null;
  /** Gossip entry of the member (name scheme); null when this node runs no gossip. */
  gossip: MemberGossip | null;
}
