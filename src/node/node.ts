// The node: the one event loop around the consensus core. Inputs (peer messages, ticks,
// client proposals and reads) are queued and drained together, so one pass makes one
// Ready: persist (one transaction, one fsync), then send, then apply, then advance.
// Persist before send, always (Raft's rule; etcd's Ready contract).

import { raftDefaults } from "../consensus/config.ts";
import { Raft, type RaftStatus } from "../consensus/raft.ts";
import type { Entry, Message, NodeId, Ready, SnapshotMeta } from "../consensus/types.ts";
import type { Config, MemberConfig } from "../config/types.ts";
import type {
  LeaderInfo,
  NodeApi,
  ReadBarrierResult,
  SessionKey,
  SubmitResult,
} from "../http/api.ts";
import { assert } from "../lib/assert.ts";
import type { Logger } from "../lib/log.ts";
import type { Service } from "../service/service.ts";
import { decodeSessionResult, encodeEnvelope } from "../service/sessions.ts";
import type { Identity, NodeStorage } from "../storage/storage.ts";
import type { Transport } from "../transport/transport.ts";

/** Entries kept behind a snapshot so a briefly lagging follower needs no snapshot. */
export const snapshotTrailingEntries = 5000;
/** Client requests waiting for commit or a read index, per node. */
export const pendingRequestsMax = 100_000;

export interface NodeDeps {
  config: Config;
  name: NodeId;
  identity: Identity;
  storage: NodeStorage;
  transport: Transport;
  /** The replicated state machine (sessions wrapper around the user's service). */
  service: Service;
  log: Logger;
  version: string;
  random?: () => number;
}

interface PendingWrite {
  term: number;
  resolve: (result: SubmitResult) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingRead {
  resolve: (result: ReadBarrierResult) => void;
  timer: ReturnType<typeof setTimeout>;
  /** Set once the read index is known: resolve when applied reaches it. */
  index: number;
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
}

export class KeelNode implements NodeApi {
  readonly name: NodeId;
  readonly raft: Raft;
  readonly counters: NodeCounters = {
    leaderChanges: 0,
    electionsStarted: 0,
    proposals: 0,
    readsServed: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    messagesSent: 0,
    messagesReceived: 0,
  };
  readonly #deps: NodeDeps;
  readonly #members: Map<NodeId, MemberConfig>;
  readonly #startedAt = Date.now();
  #inbox: Message[] = [];
  #scheduled = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #lastTickAt = 0;
  #pendingWrites = new Map<number, PendingWrite>();
  #pendingReads = new Map<number, PendingRead>();
  /** Reads with a known index waiting for apply, in request order. */
  #readsWaitingApply: number[] = [];
  #nextRequestId = 1;
  #appliedIndex: number;
  #appliedTerm: number;
  #snapshotIndex: number;
  #lastRole: string;
  #lastLeader: NodeId | null = null;
  #stopped = false;
  /** When the leader was last heard (ms since epoch), for readiness. */
  #leaderHeardAt = 0;

  constructor(deps: NodeDeps) {
    this.#deps = deps;
    this.name = deps.name;
    this.#members = new Map(deps.config.members.map((member) => [member.name, member]));
    const storage = deps.storage;
    const restored = storage.load();
    const snapshot = storage.readSnapshot();
    if (snapshot !== undefined) deps.service.restore(snapshot.data);
    this.#appliedIndex = snapshot?.meta.index ?? 0;
    this.#appliedTerm = snapshot?.meta.term ?? 0;
    this.#snapshotIndex = this.#appliedIndex;
    const timing = deps.config.raft;
    const random = deps.random ?? Math.random;
    this.raft = new Raft({
      ...raftDefaults,
      id: deps.name,
      members: deps.config.members.map((member) => member.name),
      electionTicks: Math.max(2, Math.round(timing.electionTimeoutMs / timing.tickMs)),
      heartbeatTicks: Math.max(1, Math.round(timing.heartbeatIntervalMs / timing.tickMs)),
      random,
      snapshots: {
        latest: () => storage.latestSnapshot(),
        readChunk: (index, offset, length) => storage.readSnapshotChunk(index, offset, length),
      },
    }, restored);
    this.#lastRole = this.raft.role;
    deps.log.info("node restored", {
      incarnation: deps.identity.incarnation,
      term: restored.hardState.term,
      commitIndex: restored.hardState.commitIndex,
      snapshotIndex: this.#snapshotIndex,
      entries: restored.entries.length,
    });
  }

  // ---- Lifecycle ---------------------------------------------------------------------------

  async start(): Promise<void> {
    const transport = this.#deps.transport;
    transport.onMessage((message) => {
      this.counters.messagesReceived++;
      this.#inbox.push(message);
      this.#schedule();
    });
    transport.onPeerDown((name) => {
      this.raft.peerDown(name);
      this.#schedule();
    });
    await transport.start();
    const tickMs = this.#deps.config.raft.tickMs;
    this.#lastTickAt = performance.now();
    this.#ticker = setInterval(() => this.#onTimer(), tickMs);
    this.#schedule();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    for (const [, write] of this.#pendingWrites) {
      clearTimeout(write.timer);
      write.resolve({ ok: false, code: "unavailable", message: "Node is shutting down" });
    }
    this.#pendingWrites.clear();
    for (const [, read] of this.#pendingReads) {
      clearTimeout(read.timer);
      read.resolve({ ok: false, code: "timeout", leader: null, message: "Node is shutting down" });
    }
    this.#pendingReads.clear();
    await this.#deps.transport.close();
  }

  #onTimer(): void {
    // Catch up on ticks missed while the loop was busy (bounded), so timeouts keep their
    // wall-clock meaning under load.
    const tickMs = this.#deps.config.raft.tickMs;
    const now = performance.now();
    const due = Math.min(Math.floor((now - this.#lastTickAt) / tickMs), 10);
    if (due <= 0) return;
    this.#lastTickAt += due * tickMs;
    if (now - this.#lastTickAt > tickMs * 10) this.#lastTickAt = now;
    for (let i = 0; i < due; i++) this.raft.tick();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || this.#stopped) return;
    this.#scheduled = true;
    // setImmediate runs after this turn's I/O callbacks, so messages and requests that
    // arrived together share one Ready and one fsync (group commit).
    setImmediate(() => {
      this.#scheduled = false;
      this.#drain();
    });
  }

  #drain(): void {
    if (this.#stopped) return;
    const inbox = this.#inbox;
    this.#inbox = [];
    for (const message of inbox) {
      if (message.to !== this.name) continue;
      this.raft.step(message);
      if (message.from === this.raft.leader) this.#leaderHeardAt = Date.now();
    }
    for (let rounds = 0; this.raft.hasReady() && rounds < 64; rounds++) {
      this.#handleReady(this.raft.ready());
    }
    this.#observeRole();
    if (this.raft.hasReady()) this.#schedule();
  }

  #handleReady(ready: Ready): void {
    const storage = this.#deps.storage;
    // 1. Persist.
    const chunk = ready.snapshotChunk;
    if (chunk !== undefined) storage.stageSnapshotChunk(chunk.snapshot, chunk.offset, chunk.data);
    if (ready.installSnapshot !== undefined) this.#installSnapshot(ready.installSnapshot);
    if (ready.hardState !== undefined || ready.entries.length > 0) {
      storage.persist({ hardState: ready.hardState, entries: ready.entries });
    }
    // 2. Send, only now that what the messages promise is durable.
    for (const message of ready.messages) {
      this.#deps.transport.send(message);
      this.counters.messagesSent++;
    }
    // 3. Apply.
    for (const entry of ready.committedEntries) this.#apply(entry);
    for (const readState of ready.readStates) {
      this.#onReadState(readState.requestId, readState.index);
    }
    this.#resolveReads();
    // 4. Advance.
    this.raft.advance(ready);
    this.#maybeSnapshot();
  }

  #installSnapshot(meta: SnapshotMeta): void {
    const storage = this.#deps.storage;
    storage.installStagedSnapshot(meta);
    const snapshot = storage.readSnapshot();
    assert(
      snapshot !== undefined && snapshot.meta.index === meta.index,
      "installed snapshot must read back",
    );
    try {
      this.#deps.service.restore(snapshot.data);
    } catch (error: unknown) {
      // Serving state that differs from the log's would split the replicas: stop instead.
      this.#deps.log.error("snapshot restore failed; stopping", { index: meta.index, error });
      throw error;
    }
    this.#appliedIndex = meta.index;
    this.#appliedTerm = meta.term;
    this.#snapshotIndex = meta.index;
    this.counters.snapshotsInstalled++;
    this.#deps.log.info("snapshot installed", {
      index: meta.index,
      term: meta.term,
      bytes: meta.bytes,
    });
    // Writes proposed here at overwritten indexes can no longer be answered from this log.
    for (const [index, write] of this.#pendingWrites) {
      if (index <= meta.index) {
        this.#failWrite(index, write, "Entry was replaced by a snapshot; outcome unknown");
      }
    }
  }

  #apply(entry: Entry): void {
    assert(
      entry.index === this.#appliedIndex + 1,
      `apply must be contiguous: ${entry.index} after ${this.#appliedIndex}`,
    );
    let result: Uint8Array | undefined;
    if (entry.kind === "command") {
      result = this.#deps.service.apply(entry.data, { index: entry.index, term: entry.term });
    }
    this.#appliedIndex = entry.index;
    this.#appliedTerm = entry.term;
    const write = this.#pendingWrites.get(entry.index);
    if (write === undefined) return;
    this.#pendingWrites.delete(entry.index);
    clearTimeout(write.timer);
    if (write.term !== entry.term || result === undefined) {
      write.resolve({
        ok: false,
        code: "unavailable",
        message: "Leadership changed before the write committed; it was not applied",
      });
      return;
    }
    const decoded = decodeSessionResult(result);
    if (decoded.type === "rejected") {
      write.resolve({ ok: false, code: "rejected", message: decoded.message });
    } else {
      write.resolve({ ok: true, result: decoded.result, index: entry.index });
    }
  }

  #maybeSnapshot(): void {
    const every = this.#deps.config.raft.snapshotEntries;
    if (this.#appliedIndex - this.#snapshotIndex < every) return;
    this.takeSnapshot();
  }

  /** takeSnapshot saves the applied state and compacts the log behind it. */
  takeSnapshot(): SnapshotMeta | undefined {
    if (this.#appliedIndex <= this.#snapshotIndex) return undefined;
    const started = performance.now();
    const data = this.#deps.service.snapshot();
    const meta: SnapshotMeta = {
      index: this.#appliedIndex,
      term: this.#appliedTerm,
      bytes: data.byteLength,
    };
    const storage = this.#deps.storage;
    storage.saveSnapshot(meta, data);
    const point = this.raft.compact(meta, snapshotTrailingEntries);
    if (point >= 1) storage.compactLog(point);
    this.#snapshotIndex = meta.index;
    this.counters.snapshotsTaken++;
    this.#deps.log.info("snapshot taken", {
      index: meta.index,
      bytes: meta.bytes,
      compactedTo: point,
      ms: Math.round(performance.now() - started),
    });
    return meta;
  }

  #observeRole(): void {
    const role = this.raft.role;
    const leader = this.raft.leader;
    if (role !== this.#lastRole) {
      if (role === "candidate") this.counters.electionsStarted++;
      if (role === "leader") {
        this.#deps.log.info("became leader", { term: this.raft.term });
      } else if (this.#lastRole === "leader") {
        this.#deps.log.info("lost leadership", { term: this.raft.term, leader });
      }
      this.#lastRole = role;
    }
    if (leader !== this.#lastLeader) {
      if (leader !== null) {
        this.counters.leaderChanges++;
        this.#deps.log.info("leader changed", {
          term: this.raft.term,
          leader,
          previous: this.#lastLeader,
        });
      }
      this.#lastLeader = leader;
    }
  }

  // ---- NodeApi -----------------------------------------------------------------------------

  submit(command: Uint8Array, session: SessionKey | undefined): Promise<SubmitResult> {
    if (this.#stopped) {
      return Promise.resolve({ ok: false, code: "unavailable", message: "Node is shutting down" });
    }
    if (this.#pendingWrites.size >= pendingRequestsMax) {
      return Promise.resolve({
        ok: false,
        code: "unavailable",
        message: "Too many writes in flight",
      });
    }
    const proposed = this.raft.propose(encodeEnvelope(session, command));
    if (!proposed.ok) {
      if (proposed.reason === "not-leader") {
        const leader = this.leader();
        return Promise.resolve({
          ok: false,
          code: "not-leader",
          leader,
          message: leader ? `Leader is ${leader.name}` : "No leader is known",
        });
      }
      return Promise.resolve({
        ok: false,
        code: "unavailable",
        message: `Cannot propose: ${proposed.reason}`,
      });
    }
    this.counters.proposals++;
    this.#schedule();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const write = this.#pendingWrites.get(proposed.index);
        if (write !== undefined) this.#failWrite(proposed.index, write, undefined);
      }, this.#deps.config.http.requestTimeoutMs);
      this.#pendingWrites.set(proposed.index, { term: proposed.term, resolve, timer });
    });
  }

  #failWrite(index: number, write: PendingWrite, message: string | undefined): void {
    this.#pendingWrites.delete(index);
    clearTimeout(write.timer);
    write.resolve({
      ok: false,
      code: "timeout",
      message: message ?? "Write not committed within the request timeout; it may still apply",
    });
  }

  readBarrier(): Promise<ReadBarrierResult> {
    if (this.#stopped) {
      return Promise.resolve({
        ok: false,
        code: "timeout",
        leader: null,
        message: "Node is shutting down",
      });
    }
    if (this.#pendingReads.size >= pendingRequestsMax) {
      return Promise.resolve({
        ok: false,
        code: "timeout",
        leader: null,
        message: "Too many reads in flight",
      });
    }
    const requestId = this.#nextRequestId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const read = this.#pendingReads.get(requestId);
        if (read === undefined) return;
        this.#pendingReads.delete(requestId);
        read.resolve({
          ok: false,
          code: "timeout",
          leader: this.leader(),
          message: "Read not confirmed within the request timeout",
        });
      }, this.#deps.config.http.requestTimeoutMs);
      this.#pendingReads.set(requestId, { resolve, timer, index: 0 });
      this.raft.readIndex(requestId);
      this.#schedule();
    });
  }

  #onReadState(requestId: number, index: number): void {
    const read = this.#pendingReads.get(requestId);
    if (read === undefined) return;
    if (index === 0) {
      this.#pendingReads.delete(requestId);
      clearTimeout(read.timer);
      const leader = this.leader();
      read.resolve({
        ok: false,
        code: leader === null ? "no-leader" : "not-leader",
        leader,
        message: leader === null ? "No leader is known" : "Leadership could not be confirmed",
      });
      return;
    }
    read.index = index;
    this.#readsWaitingApply.push(requestId);
  }

  #resolveReads(): void {
    if (this.#readsWaitingApply.length === 0) return;
    const waiting: number[] = [];
    for (const requestId of this.#readsWaitingApply) {
      const read = this.#pendingReads.get(requestId);
      if (read === undefined) continue;
      if (read.index <= this.#appliedIndex) {
        this.#pendingReads.delete(requestId);
        clearTimeout(read.timer);
        this.counters.readsServed++;
        read.resolve({ ok: true });
      } else {
        waiting.push(requestId);
      }
    }
    this.#readsWaitingApply = waiting;
  }

  leader(): LeaderInfo | null {
    const name = this.raft.leader;
    if (name === null) return null;
    const member = this.#members.get(name);
    if (member === undefined) return null;
    return { name, httpUrl: `http://${formatHost(member.http.host)}:${member.http.port}` };
  }

  get appliedIndex(): number {
    return this.#appliedIndex;
  }

  /** leaderHeardMsAgo is how long since this node heard its leader (0 on the leader). */
  leaderHeardMsAgo(): number | null {
    if (this.raft.role === "leader") return 0;
    if (this.raft.leader === null) return null;
    return Date.now() - this.#leaderHeardAt;
  }

  transferLeadership(to: NodeId | undefined): ReturnType<Raft["transferLeadership"]> {
    let target = to;
    if (target === undefined) {
      // Pick the most caught-up follower.
      const progress = this.raft.status().progress;
      target = Object.entries(progress).sort((a, b) => b[1].matchIndex - a[1].matchIndex)[0]?.[0];
      if (target === undefined) {
        return { ok: false, reason: "not-leader", leader: this.raft.leader };
      }
    }
    const result = this.raft.transferLeadership(target);
    this.#schedule();
    return result;
  }

  status(): NodeStatusView {
    const raft: RaftStatus = this.raft.status();
    const links = new Map(this.#deps.transport.links().map((link) => [link.name, link]));
    const snapshot = this.#deps.storage.latestSnapshot();
    return {
      name: this.name,
      incarnation: this.#deps.identity.incarnation,
      status: this.#deps.identity.status,
      version: this.#deps.version,
      clusterName: this.#deps.config.clusterName,
      role: raft.role,
      term: raft.term,
      leader: raft.leader,
      votedFor: raft.votedFor,
      commitIndex: raft.commitIndex,
      appliedIndex: this.#appliedIndex,
      lastIndex: raft.lastIndex,
      firstIndex: raft.firstIndex,
      snapshotIndex: snapshot?.index ?? 0,
      snapshotBytes: snapshot?.bytes ?? 0,
      logBytesInMemory: raft.logBytes,
      storageBytes: this.#deps.storage.sizeBytes(),
      uptimeMs: Date.now() - this.#startedAt,
      leaderHeardMsAgo: this.leaderHeardMsAgo(),
      pendingWrites: this.#pendingWrites.size,
      pendingReads: this.#pendingReads.size,
      counters: { ...this.counters },
      members: this.#deps.config.members.map((member) => {
        const link = links.get(member.name);
        const progress = raft.progress[member.name];
        const self = member.name === this.name;
        return {
          name: member.name,
          self,
          peer: `${formatHost(member.peer.host)}:${member.peer.port}`,
          http: `http://${formatHost(member.http.host)}:${member.http.port}`,
          connected: self ? true : link?.connected ?? false,
          incarnation: self ? this.#deps.identity.incarnation : link?.incarnation ?? null,
          lastError: link?.lastError ?? null,
          matchIndex: self ? raft.lastIndex : progress?.matchIndex ?? null,
          lag: self
            ? 0
            : progress === undefined
            ? null
            : Math.max(0, raft.lastIndex - progress.matchIndex),
          replication: progress?.state ?? null,
        };
      }),
    };
  }
}

export interface NodeStatusView {
  name: string;
  incarnation: string;
  status: string;
  version: string;
  clusterName: string;
  role: string;
  term: number;
  leader: string | null;
  votedFor: string | null;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  firstIndex: number;
  snapshotIndex: number;
  snapshotBytes: number;
  logBytesInMemory: number;
  storageBytes: number;
  uptimeMs: number;
  leaderHeardMsAgo: number | null;
  pendingWrites: number;
  pendingReads: number;
  counters: NodeCounters;
  members: MemberStatusView[];
}

export interface MemberStatusView {
  name: string;
  self: boolean;
  peer: string;
  http: string;
  connected: boolean;
  incarnation: string | null;
  lastError: string | null;
  matchIndex: number | null;
  lag: number | null;
  replication: string | null;
}

function formatHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}
