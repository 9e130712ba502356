// What the node says about itself: /healthz and /readyz checks, and the /status view.
// Functions of plain inputs, so what a load balancer or a person reads is decided in one
// room and tested without a loop.

import type { RaftStatus } from "../consensus/raft.ts";
import type { NodeId } from "../consensus/types.ts";
import type { Config } from "../config/types.ts";
import { securityStatus } from "../config/secret.ts";
import type {
  Check,
  IntegrityView,
  NodeCounters,
  NodeStatusView,
  RecoveryView,
  ServiceStatusView,
} from "../http/api.ts";
import type { MemberResolution } from "../resolver/dns.ts";
import type { GossipEndpoint, MemberGossip } from "../resolver/gossip.ts";
import type { NodeStatus, NodeStorage } from "../storage/storage.ts";
import type { Transport } from "../transport/transport.ts";

/** A follower is ready while its applied index trails the leader's commit by at most this. */
export const readyApplyLagMax = 1000;
/** Storage write probes for /healthz and /readyz are cached this long. */
export const storageProbeIntervalMs = 1000;

/** StorageProbe writes to storage at most every storageProbeIntervalMs and remembers how it went. */
export class StorageProbe {
  #at = 0;
  #error: string | null = null;

  constructor(readonly storage: Pick<NodeStorage, "probeWrite">) {}

  check(now = Date.now()): Check {
    if (now - this.#at >= storageProbeIntervalMs) {
      let error: string | null = null;
      try {
        this.storage.probeWrite();
      } catch (caught: unknown) {
        error = caught instanceof Error ? caught.message : String(caught);
      }
      this.#at = now;
      this.#error = error;
    }
    const error = this.#error;
    return {
      name: "storage_writable",
      ok: error === null,
      detail: error === null ? "storage accepts writes" : `storage write failed: ${error}`,
    };
  }
}

/** HealthInput is what /healthz judges: is the process doing its work at all. */
export interface HealthInput {
  stopped: boolean;
  halted: boolean;
  storageFailure: string | null;
  storage: Check;
}

/** healthChecks are /healthz: the process runs and its storage takes writes. */
export function healthChecks(input: HealthInput): Check[] {
  return [
    {
      name: "process",
      ok: !input.stopped && !input.halted,
      detail: input.storageFailure !== null
        ? `halted: ${input.storageFailure}`
        : input.halted
        ? "halted: the service cannot serve the log's state (see the log)"
        : input.stopped
        ? "node is stopping"
        : "running",
    },
    input.storage,
  ];
}

/** ReadinessInput is what /readyz judges (DESIGN §8). */
export interface ReadinessInput {
  leader: NodeId | null;
  term: number;
  isLeader: boolean;
  /** The leader's commit index: this node's own on the leader, else as last heard. */
  leaderCommit: number;
  appliedIndex: number;
  /** ms since the leader was heard (0 on the leader), null without a leader. */
  leaderHeardMsAgo: number | null;
  electionTimeoutMs: number;
  recovering: boolean;
  /** An empty node still waiting for every member before forming a cluster (R1). */
  waitingForMembers: boolean;
  fencedReason: string | null;
  storage: Check;
  stopped: boolean;
}

/**
 * readinessChecks are /readyz: 200 only if a leader is known and recently heard, this
 * node has applied up to the leader's commit, it is not recovering and not fenced, its
 * storage takes writes. Never ready without a leader.
 */
export function readinessChecks(input: ReadinessInput): Check[] {
  const heardAgo = input.leaderHeardMsAgo;
  const lag = Math.max(0, input.leaderCommit - input.appliedIndex);
  return [
    {
      name: "leader_known",
      ok: input.leader !== null,
      detail: input.leader === null
        ? "no leader is known"
        : `leader is ${input.leader} in term ${input.term}`,
    },
    {
      name: "leader_recent",
      ok: heardAgo !== null && heardAgo <= input.electionTimeoutMs,
      detail: heardAgo === null
        ? "no leader to hear from"
        : input.isLeader
        ? "this node is the leader"
        : `leader heard ${heardAgo} ms ago (limit ${input.electionTimeoutMs} ms)`,
    },
    {
      name: "applied_caught_up",
      ok: input.leader !== null && lag <= readyApplyLagMax,
      detail:
        `applied ${input.appliedIndex}, leader commit ${input.leaderCommit} (lag ${lag}, limit ${readyApplyLagMax})`,
    },
    {
      name: "not_recovering",
      ok: !input.recovering,
      detail: input.recovering
        ? input.waitingForMembers
          ? "empty: waiting for every member before forming a cluster"
          : "catching up as a replacement; not yet a voter"
        : "normal member",
    },
    {
      name: "not_fenced",
      ok: input.fencedReason === null,
      detail: input.fencedReason === null
        ? "incarnation is current"
        : `fenced: ${input.fencedReason}`,
    },
    input.storage,
    {
      name: "not_stopping",
      ok: !input.stopped,
      detail: input.stopped ? "node is stopping" : "running",
    },
  ];
}

/** StatusInput is everything /status shows, gathered by the node. */
export interface StatusInput {
  name: NodeId;
  config: Config;
  incarnation: string;
  version: string;
  status: NodeStatus;
  fencedReason: string | null;
  recovery: RecoveryView | null;
  alarms: string[];
  integrity: IntegrityView;
  raft: RaftStatus;
  appliedIndex: number;
  leaderHeardMsAgo: number | null;
  leaderCommitSeen: number;
  pendingWrites: number;
  pendingReads: number;
  suspended: boolean;
  counters: NodeCounters;
  service: ServiceStatusView;
  startedAt: number;
  storage: Pick<NodeStorage, "latestSnapshot" | "sizeBytes">;
  transport: Pick<Transport, "links">;
  resolution: readonly MemberResolution[];
  gossip: {
    state: readonly MemberGossip[];
    httpAddress(name: NodeId): GossipEndpoint | null;
    peerAddress(name: NodeId): GossipEndpoint | null;
  } | undefined;
}

/** httpScheme: members serve HTTP over TLS when security.tls is set (the same file for all). */
export function httpScheme(config: Config): "http" | "https" {
  return config.security.tls === undefined ? "http" : "https";
}

export function formatHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** nodeStatus is the JSON of GET /status. */
export function nodeStatus(input: StatusInput): NodeStatusView {
  const raft = input.raft;
  const snapshot = input.storage.latestSnapshot();
  return {
    name: input.name,
    incarnation: input.incarnation,
    status: input.fencedReason !== null ? "fenced" : input.status,
    recovery: input.recovery,
    alarms: input.alarms.slice(),
    integrity: input.integrity,
    version: input.version,
    clusterName: input.config.clusterName,
    role: raft.role,
    term: raft.term,
    leader: raft.leader,
    votedFor: raft.votedFor,
    commitIndex: raft.commitIndex,
    appliedIndex: input.appliedIndex,
    lastIndex: raft.lastIndex,
    firstIndex: raft.firstIndex,
    snapshotIndex: snapshot?.index ?? 0,
    snapshotBytes: snapshot?.bytes ?? 0,
    logBytesInMemory: raft.logBytes,
    storageBytes: input.storage.sizeBytes(),
    uptimeMs: Date.now() - input.startedAt,
    leaderHeardMsAgo: input.leaderHeardMsAgo,
    pendingWrites: input.pendingWrites,
    pendingReads: input.pendingReads,
    suspended: input.suspended,
    leaderCommitSeen: raft.role === "leader" ? raft.commitIndex : input.leaderCommitSeen,
    counters: { ...input.counters },
    security: securityStatus(input.config),
    service: input.service,
    members: memberViews(input),
  };
}

function memberViews(input: StatusInput): NodeStatusView["members"] {
  const raft = input.raft;
  const links = new Map(input.transport.links().map((link) => [link.name, link]));
  const resolutions = new Map(input.resolution.map((r) => [r.name, r]));
  const gossip = new Map((input.gossip?.state ?? []).map((g) => [g.name, g]));
  const scheme = httpScheme(input.config);
  return input.config.members.map((member) => {
    const link = links.get(member.name);
    const progress = raft.progress[member.name];
    const self = member.name === input.name;
    // A member listed by name alone shows where gossip found it ("" while unknown).
    const peerAt = member.peer ?? input.gossip?.peerAddress(member.name) ?? null;
    const httpAt = member.http ?? input.gossip?.httpAddress(member.name) ?? null;
    return {
      name: member.name,
      self,
      peer: peerAt === null ? "" : `${formatHost(peerAt.host)}:${peerAt.port}`,
      http: httpAt === null ? "" : `${scheme}://${formatHost(httpAt.host)}:${httpAt.port}`,
      connected: self ? true : link?.connected ?? false,
      incarnation: self ? input.incarnation : link?.incarnation ?? null,
      lastError: link?.lastError ?? null,
      matchIndex: self ? raft.lastIndex : progress?.matchIndex ?? null,
      lag: self
        ? 0
        : progress === undefined
        ? null
        : Math.max(0, raft.lastIndex - progress.matchIndex),
      replication: progress?.state ?? null,
      counted: self ? !raft.recovering : progress?.counted ?? null,
      resolution: resolutions.get(member.name) ?? null,
      gossip: gossip.get(member.name) ?? null,
    };
  });
}
