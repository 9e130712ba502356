// A whole NodeStatusView for fakes of NodeApi and of a node's GET /status: every field a
// real node sends, with values a test overrides where it cares.

import { type MemberStatusView, type NodeStatusView, zeroCounters } from "../../src/http/api.ts";

/** statusView is a normal single-member leader at index 0, with `fields` laid over it. */
export function statusView(fields: Partial<NodeStatusView> = {}): NodeStatusView {
  const name = fields.name ?? "node-a";
  return {
    name,
    incarnation: `inc-${name}`,
    status: "normal",
    recovery: null,
    alarms: [],
    version: "0.1.0",
    clusterName: "fake",
    role: "leader",
    term: 1,
    leader: name,
    votedFor: name,
    commitIndex: 0,
    appliedIndex: 0,
    lastIndex: 0,
    firstIndex: 1,
    snapshotIndex: 0,
    snapshotBytes: 0,
    logBytesInMemory: 0,
    storageBytes: 0,
    uptimeMs: 0,
    leaderHeardMsAgo: 0,
    pendingWrites: 0,
    pendingReads: 0,
    suspended: false,
    leaderCommitSeen: 0,
    counters: zeroCounters(),
    security: { peerAuth: "none (dev mode)", adminToken: false, clientToken: false, tls: false },
    service: {
      timeMs: 0,
      timers: 0,
      applied: 0,
      applySecondsTotal: 0,
      applySecondsMax: 0,
      lastError: null,
      snapshotBytes: 0,
    },
    members: [memberView({ name, self: true })],
    ...fields,
  };
}

/** memberView is a connected member with nothing known of its replication, `fields` laid over. */
export function memberView(fields: Partial<MemberStatusView> & { name: string }): MemberStatusView {
  return {
    self: false,
    peer: "",
    http: "",
    connected: true,
    incarnation: `inc-${fields.name}`,
    lastError: null,
    matchIndex: null,
    lag: null,
    replication: null,
    counted: null,
    resolution: null,
    gossip: null,
    ...fields,
  };
}
