import type { IncarnationUnsafe } from "./incarnations.ts";
import type { NodeId, SnapshotSource } from "./types.ts";

/** RaftConfig is everything the core needs; time and randomness come in from outside. */
export interface RaftConfig {
  id: NodeId;
  /** Every voting member, this node included (static membership). */
  members: NodeId[];
  /**
   * Election timeout in ticks; each wait is drawn from [electionTicks, electionTicks +
   * electionJitterTicks). A leader seen to be gone (peerDown) is followed by a campaign
   * within half the jitter.
   */
  electionTicks: number;
  /** Default electionTicks: waits in [electionTicks, 2 * electionTicks). */
  electionJitterTicks?: number;
  heartbeatTicks: number;
  /** Pipelined appendEntries in flight per follower before waiting for acks. */
  inflightMessagesMax: number;
  entriesPerMessageMax: number;
  messageBytesMax: number;
  snapshotChunkBytes: number;
  /** Proposals not yet committed before propose() pushes back. */
  pendingProposalsMax: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** A float in [0, 1); injected so a simulator seed reproduces a run. */
  random: () => number;
  snapshots: SnapshotSource;
  /**
   * Catch-up bound: snapshot bytes sent to one follower per tick (0 or unset: no bound).
   * Keeps a replacement's catch-up from starving the cluster's own traffic.
   */
  snapshotBytesPerTick?: number;
  /**
   * The node persists a Ready's entries in the background and reports them durable with
   * Raft.persisted; entries are applied only once durable here. Unset: each Ready is
   * durable before advance (the simple contract).
   */
  asyncStorage?: boolean;
  /** This host's incarnation (R0); messages from peers are checked against fences. */
  incarnation?: string;
  /** Start as a replacement that must be fenced in before it votes (R2, R3). */
  recovering?: boolean;
  /**
   * Test-only switches that turn a safety rule off, so the simulator can show that its
   * checks catch the violation. Never set outside tests.
   */
  unsafe?: { recoveringVotes?: boolean } & IncarnationUnsafe;
}

export const raftDefaults = {
  inflightMessagesMax: 64,
  entriesPerMessageMax: 512,
  messageBytesMax: 1024 * 1024,
  snapshotChunkBytes: 1024 * 1024,
  pendingProposalsMax: 16384,
  preVote: true,
  checkQuorum: true,
} as const;
