// The node: the one event loop around the consensus core. Inputs (peer messages, ticks,
// client proposals and reads) are queued and drained together, so one pass makes one
// Ready: persist (one transaction, one fsync), then send, then apply, then advance.
// Persist before send, always (Raft's rule; etcd's Ready contract).

import { raftDefaults } from "../consensus/config.ts";
import { Raft } from "../consensus/raft.ts";
import type {
  Entry,
  Message,
  NodeId,
  Ready,
  RestoredState,
  Sender,
  SnapshotMeta,
} from "../consensus/types.ts";
import type { Config, MemberConfig } from "../config/types.ts";
import type {
  AdminResult,
  Check,
  LeaderInfo,
  NodeApi,
  NodeCounters,
  NodeStatusView,
  OpsApi,
  OpsEvent,
  ReadBarrierResult,
  RecoveryView,
  ServiceStatusView,
  SessionKey,
  SubmitResult,
} from "../http/api.ts";
import { zeroCounters } from "../http/api.ts";
import { assert, AssertionError } from "../lib/assert.ts";
import type { Logger } from "../lib/log.ts";
import { type Histogram, Registry } from "../lib/metrics.ts";
import { nodeHistograms, registerNodeGauges } from "./metrics.ts";
import type { Service } from "../service/service.ts";
import { encodeEnvelope } from "../service/sessions.ts";
import type { HelloState, Refusal } from "../consensus/incarnations.ts";
import { decodeSnapshot, encodeSnapshotParts } from "./snapshot_envelope.ts";
import {
  decodeHostState,
  encodeCommandEntry,
  encodeHostState,
  encodeTimerEntry,
  type HostOutcome,
  type HostState,
  ServiceFatalError,
  ServiceHost,
  stampedTime,
} from "./service_host.ts";
import {
  type Identity,
  type NodeStatus,
  type NodeStorage,
  StorageCorruptionError,
} from "../storage/storage.ts";
import { Requests } from "./requests.ts";
import { Durability } from "./durability.ts";
import { Scrubber } from "./scrub.ts";
import { type RecoveryTransport, Replacement } from "./replacement.ts";
import {
  catchingUpFollower,
  DiskCompaction,
  SnapshotSchedule,
  snapshotTrailingEntries,
} from "./snapshots.ts";
import {
  formatHost,
  healthChecks,
  httpScheme,
  nodeStatus,
  readinessChecks,
  StorageProbe,
} from "./status.ts";
import type { MemberResolution } from "../resolver/dns.ts";
import type { GossipEndpoint, MemberGossip } from "../resolver/gossip.ts";

export type { RecoveryTransport } from "./replacement.ts";

export { snapshotTrailingEntries } from "./snapshots.ts";
/** An admin step-down waits at least this long for leadership to move. */
export const stepDownWaitMsMin = 5000;
/** Events kept for /admin/events and the dashboard. */
export const eventsMax = 200;
/** Timer-fired entries a leader proposes per tick, at most. */
export const timerFiresPerTickMax = 64;

/**
 * StorageFailedError unwinds the loop after a write to storage failed and the node halted
 * (KeelNode.#storageFailed).
 */
export class StorageFailedError extends Error {
  override name = "StorageFailedError";
}

export interface NodeDeps {
  config: Config;
  name: NodeId;
  identity: Identity;
  storage: NodeStorage;
  transport: RecoveryTransport;
  /**
   * The replicated state machine (sessions wrapper around the user's service). Its hooks
   * (onTimer, start, onRoleChange) are called through the same object.
   */
  service: Service;
  /**
   * Called when the node cannot go on serving the log's state (a snapshot the service
   * cannot restore, a service that is not deterministic): stop the process, non-zero.
   * Without it, the error is thrown from the loop.
   */
  onFatal?: (message: string) => void;
  /**
   * Called when a write to storage failed (disk full, I/O error, read-only file system,
   * a damaged database): the node has halted and must not acknowledge anything again in
   * this process. Stop the process (exit 74); started again, it reloads what is durable.
   * Without it, the error is thrown from the loop.
   */
  onStorageFailed?: (message: string) => void;
  log: Logger;
  version: string;
  random?: () => number;
  /** Token for the admin API; undefined disables it. */
  adminToken?: string | undefined;
  /** Called by shutdown() once leadership is handed over: stop the process. */
  onShutdown?: () => void;
  /**
   * Called when this process must stop and start again: peers saw its data dir go back
   * in time, and it has taken a new incarnation to rejoin as a replacement.
   */
  onRestartRequired?: (reason: string) => void;
  /**
   * Founding members to form a new cluster without (keel run --form-without): for an
   * empty data dir only; the others named join later as replacements (R1).
   */
  formWithout?: readonly NodeId[];
  /**
   * What the caller already read back (and verified) from storage at start: the node
   * restores from it instead of reading the log and the snapshot a second time.
   */
  loaded?: {
    restored: RestoredState;
    snapshot: { meta: SnapshotMeta; data: Uint8Array } | undefined;
  };
  /** The data dir was quarantined: rejoin the cluster, never found one (R1). */
  joinOnly?: boolean;
  /** The re-resolver's per-member state (resolver/dns.ts), shown in /status. */
  resolution?: () => readonly MemberResolution[];
  /** The name scheme's gossip (resolver/gossip.ts): addresses of members listed by name alone. */
  gossip?: {
    httpAddress(name: NodeId): GossipEndpoint | null;
    peerAddress(name: NodeId): GossipEndpoint | null;
    state(): readonly MemberGossip[];
  };
}

export class KeelNode implements NodeApi, OpsApi {
  readonly name: NodeId;
  readonly raft: Raft;
  readonly counters: NodeCounters = zeroCounters();
  readonly #deps: NodeDeps;
  readonly #members: Map<NodeId, MemberConfig>;
  readonly #startedAt = Date.now();
  #inbox: Array<{ message: Message; sender: Sender }> = [];
  #scheduled = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #lastTickAt = 0;
  /** Client writes and reads waiting on this node (requests.ts). */
  readonly #requests = new Requests();
  #appliedIndex: number;
  #appliedTerm: number;
  #snapshotIndex: number;
  #lastRole: string;
  #lastLeader: NodeId | null = null;
  #stopped = false;
  /** When the leader was last heard (ms since epoch), for readiness. */
  #leaderHeardAt = 0;
  /** Highest commit index the leader has told us (appendEntries and heartbeats). */
  #leaderCommitSeen = 0;
  #suspended = false;
  /** Status, fencing, bootstrap and catch-up of this host (replacement.ts). */
  readonly #replacement: Replacement;
  #events: OpsEvent[] = [];
  readonly #storageProbe: StorageProbe;
  readonly adminToken: string | undefined;
  readonly registry = new Registry();
  readonly #commitSeconds: Histogram;
  readonly #snapshotSeconds: Histogram;
  readonly #applySeconds: Histogram;
  readonly #host: ServiceHost;
  /** The service's state before any entry, when no snapshot exists: the rollback base. */
  #initialService: Uint8Array | undefined;
  /** Highest log time seen in this node's log: a leader never stamps below it. */
  #timeHighMs = 0;
  /** Timer-fired entries this leader proposed and has not seen applied: id -> when. */
  #timerProposals = new Map<string, { generation: number; deadlineMs: number; at: number }>();
  #timerProposalsTerm = 0;
  #applyStats = { applied: 0, secondsTotal: 0, secondsMax: 0 };
  #lastServiceError: { index: number; message: string } | null = null;
  /**
   * Set when the node cannot serve the log's state (fatal) or its storage failed: the loop
   * does no more, and nothing more is sent.
   */
  #halted = false;
  /** Why storage failed (a write or a sync threw), or null. */
  #storageFailure: string | null = null;
  /** Which writes are durable, and the messages waiting for them (durability.ts). */
  readonly #durability: Durability;
  /** Log rows on disk below `target` are garbage (behind a snapshot); below `done` gone. */
  readonly #diskCompaction: DiskCompaction;
  /** The snapshot being written in the background (at most one). */
  #snapshotSaving: Promise<SnapshotMeta | undefined> | undefined = undefined;
  /** Re-reads and verifies what this member stores, a slice per tick (scrub.ts). */
  readonly #scrubber: Scrubber;
  /** When this member takes its next snapshot (snapshots.ts). */
  readonly #snapshotSchedule: SnapshotSchedule;
  constructor(deps: NodeDeps) {
    this.#deps = deps;
    this.name = deps.name;
    this.#members = new Map(deps.config.members.map((member) => [member.name, member]));
    const storage = deps.storage;
    const restored = deps.loaded?.restored ?? storage.load();
    this.#diskCompaction = new DiskCompaction(restored.entries[0]?.index ?? 0);
    this.#snapshotSchedule = new SnapshotSchedule(
      deps.config.raft.snapshotEntries,
      deps.config.members.map((member) => member.name),
      deps.name,
    );
    const snapshot = deps.loaded === undefined ? storage.readSnapshot() : deps.loaded.snapshot;
    this.#host = new ServiceHost(deps.service, {
      base: () => this.#rollbackBase(),
      entry: (index) => this.raft.log.entry(index),
    });
    if (snapshot !== undefined) {
      // Throws ServiceFatalError (or the envelope's Error) when the state cannot be read:
      // the caller stops with the message rather than serve a state the log does not say.
      const decoded = decodeSnapshot(snapshot.data);
      this.#host.restore(decoded.service, hostState(decoded.host), snapshot.meta.index);
      restored.fences = decoded.fences;
      this.#timeHighMs = this.#host.timeMs;
    } else {
      this.#initialService = deps.service.snapshot();
    }
    this.#appliedIndex = snapshot?.meta.index ?? 0;
    this.#appliedTerm = snapshot?.meta.term ?? 0;
    this.#snapshotIndex = this.#appliedIndex;
    const timing = deps.config.raft;
    const random = deps.random ?? Math.random;
    const electionTicks = Math.max(2, Math.round(timing.electionTimeoutMs / timing.tickMs));
    this.raft = new Raft({
      ...raftDefaults,
      id: deps.name,
      members: deps.config.members.map((member) => member.name),
      electionTicks,
      // A quarter of the timeout: a silent leader is replaced within 1.25 timeouts; split
      // votes stay rare (the window is 25 ticks at the defaults, and pre-vote first).
      electionJitterTicks: Math.max(1, Math.floor(electionTicks / 4)),
      heartbeatTicks: Math.max(1, Math.round(timing.heartbeatIntervalMs / timing.tickMs)),
      snapshotBytesPerTick: Math.ceil((timing.catchupBytesPerSecond ?? 0) * timing.tickMs / 1000),
      random,
      asyncStorage: true,
      snapshots: {
        latest: () => storage.latestSnapshot(),
        readChunk: (index, offset, length) => storage.readSnapshotChunk(index, offset, length),
      },
      incarnation: deps.identity.incarnation,
      recovering: deps.identity.status === "recovering",
    }, restored);
    this.#replacement = new Replacement({
      name: deps.name,
      identity: deps.identity,
      raft: this.raft,
      storage,
      transport: deps.transport,
      log: deps.log,
      event: (kind, message) => this.#event(kind, message),
      storageWrite: (what, write) => this.#storageWrite(what, write),
      failWrites: (message) => this.#requests.failWrites(message),
      onRestartRequired: (reason) => this.#deps.onRestartRequired?.(reason),
      appliedIndex: () => this.#appliedIndex,
      leaderCommitSeen: () => this.#leaderCommitSeen,
      formWithout: deps.formWithout ?? [],
      joinOnly: deps.joinOnly ?? false,
    }, restored.hardState.term === 0 && restored.entries.length === 0 && snapshot === undefined);
    this.#lastRole = this.raft.role;
    this.adminToken = deps.adminToken;
    const histograms = nodeHistograms(this.registry);
    this.#storageProbe = new StorageProbe(storage);
    this.#scrubber = new Scrubber(storage, {
      intervalMs: deps.config.storage.scrubIntervalMs,
      bytesPerSecond: deps.config.storage.scrubBytesPerSecond,
      tickMs: deps.config.raft.tickMs,
      now: Date.now(),
    });
    this.#durability = new Durability({
      sync: () => deps.storage.sync(),
      persisted: (index, term) => this.raft.persisted(index, term),
      send: (message) => this.#send(message),
      synced: () => this.#schedule(),
      syncFailed: (error) => {
        try {
          this.#storageFailed("make the log durable (fdatasync)", error);
        } catch (failed: unknown) {
          if (!this.#handledHalt(failed)) throw failed;
        }
      },
      stopped: () => this.#stopped,
      halted: () => this.#halted,
      fsyncSeconds: histograms.fsyncSeconds,
      log: deps.log,
    });
    this.#commitSeconds = histograms.commitSeconds;
    this.#snapshotSeconds = histograms.snapshotSeconds;
    this.#applySeconds = histograms.applySeconds;
    const host = this.#host;
    const requests = this.#requests;
    registerNodeGauges(this.registry, {
      raft: this.raft,
      counters: this.counters,
      storage: deps.storage,
      host,
      transport: deps.transport,
      appliedIndex: () => this.#appliedIndex,
      pendingWrites: () => requests.writeCount,
      suspended: () => this.#suspended,
      startedAt: this.#startedAt,
      integrity: () => this.#scrubber.view(),
    });

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
    transport.onMessage((message, sender) => {
      this.counters.messagesReceived++;
      this.#inbox.push({ message, sender });
      this.#replacement.noteHeard(message.from, sender.incarnation);
      this.#schedule();
    });
    transport.onRefused((name, reason, kind) => {
      try {
        this.#replacement.onRefused(name, reason, kind);
      } catch (error: unknown) {
        if (!this.#handledHalt(error)) throw error;
      }
    });
    transport.onPeerDown((name) => {
      this.raft.peerDown(name);
      this.#schedule();
    });
    await transport.start();
    this.#deps.service.start?.({
      name: this.name,
      appliedIndex: this.#appliedIndex,
      log: this.#deps.log.child({ component: "service" }),
    });
    const tickMs = this.#deps.config.raft.tickMs;
    this.#lastTickAt = performance.now();
    this.#ticker = setInterval(() => this.#onTimer(), tickMs);
    this.#schedule();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    this.#requests.failAll("Node is shutting down");
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
    if (this.#halted) return;
    try {
      for (let i = 0; i < due; i++) this.raft.tick();
      this.#proposeDueTimers();
      this.#compactDiskStep();
      this.#scrubStep();
    } catch (error: unknown) {
      if (!this.#handledHalt(this.#haltOnCorruption(error))) throw error;
      return;
    }
    this.#requests.expire(now, () => this.leader());
    this.#schedule();
  }

  /**
   * handledHalt: the error unwound the loop after the node halted itself (fatal, or
   * storage failed), and the process is told to stop (onFatal, onStorageFailed). Anything
   * else is a bug and goes on up (an AssertionError ends the process with 70).
   */
  #handledHalt(error: unknown): boolean {
    if (error instanceof ServiceFatalError) return this.#deps.onFatal !== undefined;
    if (error instanceof StorageFailedError) return this.#deps.onStorageFailed !== undefined;
    return false;
  }

  /**
   * haltOnCorruption: a record read back failed its checksum (a snapshot chunk to send, the
   * snapshot a rollback restores): the data dir cannot be trusted, so the node halts as for
   * a failed write (exit 74), and the next start moves the data dir aside. Returns the
   * error that unwinds the loop.
   */
  #haltOnCorruption(error: unknown): unknown {
    if (!(error instanceof StorageCorruptionError)) return error;
    try {
      this.#storageFailed(`read a stored record (${error.kind})`, error);
    } catch (failed: unknown) {
      return failed;
    }
  }

  /**
   * storageWrite runs one write to storage. A write that throws (disk full, I/O error,
   * read-only file system, a damaged database) may have left the disk behind what the
   * core believes it holds, so from then on this process must not acknowledge, vote or
   * lead: it halts (storageFailed). A broken invariant (AssertionError) is a bug, not a
   * disk fault, and goes on up.
   */
  #storageWrite<T>(what: string, write: () => T): T {
    try {
      return write();
    } catch (error: unknown) {
      if (error instanceof AssertionError || error instanceof StorageFailedError) throw error;
      this.#storageFailed(what, error);
    }
  }

  /**
   * storageFailed halts the node at once: no message is sent after a failed write (the
   * ones held for a sync are dropped), pending requests fail, and onStorageFailed stops
   * the process. Started again, it reloads what is durable; the peers catch it up.
   */
  #storageFailed(what: string, error: unknown): never {
    const detail = error instanceof Error ? error.message : String(error);
    const message = `Storage failed: could not ${what}: ${detail}`;
    if (this.#storageFailure === null) {
      this.#storageFailure = message;
      this.#halted = true;
      if (this.#ticker !== undefined) clearInterval(this.#ticker);
      this.#durability.dropHeld();
      this.#deps.log.error(
        `${message}; this member stops acknowledging and exits, to restart from what is durable`,
        { error },
      );
      this.#event("storage", message);
      this.#requests.failAll("Storage failed on this node");
      this.#deps.onStorageFailed?.(message);
    }
    throw new StorageFailedError(message, { cause: error });
  }

  /**
   * scrubStep verifies the next slice of what is stored. Damage found halts the node as a
   * failed read does (haltOnCorruption: exit 74), and the next start moves the data dir
   * aside; an error of the disk itself is a failed storage operation.
   */
  #scrubStep(): void {
    const problems = this.#storageWrite(
      "scrub the data dir",
      () => this.#scrubber.tick(Date.now()),
    );
    const first = problems[0];
    if (first === undefined) return;
    for (const problem of problems) {
      this.#deps.log.error("the scrubber found damage in the data dir", {
        kind: problem.kind,
        index: problem.index,
        offset: problem.offset,
        path: problem.path,
        error: problem.message,
      });
    }
    throw this.#haltOnCorruption(first);
  }

  /** compactDiskStep deletes the next slice of log rows behind the snapshot. */
  #compactDiskStep(): void {
    this.#diskCompaction.step((below) =>
      this.#storageWrite("delete compacted log rows", () => this.#deps.storage.compactLog(below))
    );
  }

  #schedule(): void {
    if (this.#scheduled || this.#stopped || this.#halted) return;
    this.#scheduled = true;
    // setImmediate runs after this turn's I/O callbacks, so messages and requests that
    // arrived together share one Ready and one fsync (group commit).
    setImmediate(() => {
      this.#scheduled = false;
      this.#drain();
    });
  }

  #drain(): void {
    if (this.#stopped || this.#halted) return;
    try {
      this.#drainOnce();
    } catch (error: unknown) {
      // The node stopped itself and the process is told to stop: nothing more to do.
      if (!this.#handledHalt(this.#haltOnCorruption(error))) throw error;
    }
  }

  #drainOnce(): void {
    const inbox = this.#inbox;
    this.#inbox = [];
    this.#replacement.maybeBootstrap();
    for (const { message, sender } of inbox) {
      if (message.to !== this.name) continue;
      this.raft.step(message, sender);
      if (message.from === this.raft.leader) {
        this.#leaderHeardAt = Date.now();
        if (message.type === "appendEntries" || message.type === "heartbeat") {
          this.#leaderCommitSeen = Math.max(this.#leaderCommitSeen, message.commitIndex);
        }
      }
    }
    for (let rounds = 0; this.raft.hasReady() && rounds < 64; rounds++) {
      this.#handleReady(this.raft.ready());
    }
    for (const peer of this.raft.takeRolledBack()) {
      // It lost entries it acknowledged: make it handshake again, where it is refused as
      // rolled back (noteHighWater) and rejoins as a new incarnation.
      this.#deps.log.warn(
        "a follower no longer holds entries it acknowledged (a restored backup?)",
        { peer },
      );
      this.#event("fence", `${peer} lost acknowledged entries: its link is reset`);
      this.#deps.transport.closeInbound(peer);
    }
    this.#durability.startSync();
    this.#observeRole();
    this.#replacement.logProgress();
    if (this.raft.hasReady()) this.#schedule();
  }

  /** send hands a message to the transport. */
  #send(message: Message): void {
    this.#deps.transport.send(message);
    this.counters.messagesSent++;
  }

  #handleReady(ready: Ready): void {
    const storage = this.#deps.storage;
    // 0. A leader's appendEntries may go out before its own write: they promise nothing
    // about the leader's disk, and the leader counts itself toward commit only once the
    // entries are durable (advance). Its disk write then overlaps the followers' (Raft
    // thesis §10.2.1; etcd-raft does the same). Everything else waits for step 1.
    const early = this.raft.role === "leader";
    if (early) {
      for (const message of ready.messages) {
        if (message.type === "appendEntries") this.#send(message);
      }
    }
    // 1. Persist.
    const chunk = ready.snapshotChunk;
    if (chunk !== undefined) {
      this.#storageWrite(
        "stage a snapshot chunk",
        () => storage.stageSnapshotChunk(chunk.snapshot, chunk.offset, chunk.data),
      );
    }
    if (ready.installSnapshot !== undefined) this.#installSnapshot(ready.installSnapshot);
    // An install is durable when it returns, and so is every write before it (a staged
    // chunk is not synced: nothing relies on it before the install).
    if (ready.installSnapshot !== undefined) this.#durability.allDurable();
    if (chunk !== undefined) this.#replacement.onSnapshotChunk(chunk);
    for (const entry of ready.entries) {
      if (entry.kind !== "command") continue;
      this.#timeHighMs = Math.max(this.#timeHighMs, stampedTime(entry.data) ?? 0);
    }
    const status: NodeStatus | undefined = ready.becameNormal ? "normal" : undefined;
    const batch = { hardState: ready.hardState, entries: ready.entries, status };
    if (status !== undefined) {
      // R6: the status change and the adopted vote are one write, durable before the
      // node acts as a voting member.
      this.#storageWrite("persist the log and hard state", () => storage.persist(batch));
      this.#durability.wroteDurably(ready.entries);
    } else if (this.#storageWrite("write the log and hard state", () => storage.write(batch))) {
      // Durable once the next sync ends (startSync); until then its messages wait.
      this.#durability.wrote(ready.entries);
    }
    if (status === "normal") this.#replacement.becameNormal();
    // 2. Send, only once what the messages promise is durable: now, or when the writes
    // not yet synced are, in order.
    for (const message of ready.messages) {
      if (early && message.type === "appendEntries") continue;
      this.#durability.sendWhenDurable(message);
    }
    // 3. Apply (the core hands out only entries that are durable here).
    for (const entry of ready.committedEntries) this.#apply(entry);
    for (const readState of ready.readStates) {
      this.#requests.onReadState(readState.requestId, readState.index, this.leader());
    }
    this.counters.readsServed += this.#requests.resolveReads(this.#appliedIndex);
    // 4. Advance.
    this.raft.advance(ready);
    this.#maybeSnapshot();
  }

  #installSnapshot(meta: SnapshotMeta): void {
    const storage = this.#deps.storage;
    this.#storageWrite("install the snapshot", () => storage.installStagedSnapshot(meta));
    const snapshot = storage.readSnapshot();
    assert(
      snapshot !== undefined && snapshot.meta.index === meta.index,
      "installed snapshot must read back",
    );
    try {
      const decoded = decodeSnapshot(snapshot.data);
      this.#host.restore(decoded.service, hostState(decoded.host), meta.index);
      this.raft.restoreFences(decoded.fences);
      this.#timeHighMs = Math.max(this.#timeHighMs, this.#host.timeMs);
    } catch (error: unknown) {
      // Serving state that differs from the log's would split the replicas: stop instead.
      this.#fatal(
        `Cannot restore the leader's snapshot at index ${meta.index}: ${
          error instanceof Error ? error.message : String(error)
        }`,
        error,
      );
    }
    this.#appliedIndex = meta.index;
    this.#appliedTerm = meta.term;
    this.#snapshotIndex = meta.index;
    // The install dropped every log row.
    this.#diskCompaction.installed(meta.index);
    this.counters.snapshotsInstalled++;
    this.#event(
      "snapshot-installed",
      `installed the leader's snapshot at index ${meta.index} (${meta.bytes} bytes)`,
    );
    this.#deps.log.info("snapshot installed", {
      index: meta.index,
      term: meta.term,
      bytes: meta.bytes,
    });
    // Writes proposed here at overwritten indexes can no longer be answered from this log.
    this.#requests.failWritesThrough(
      meta.index,
      "Entry was replaced by a snapshot; outcome unknown",
    );
  }

  #apply(entry: Entry): void {
    assert(
      entry.index === this.#appliedIndex + 1,
      `apply must be contiguous: ${entry.index} after ${this.#appliedIndex}`,
    );
    let outcome: HostOutcome = { type: "none" };
    if (entry.kind === "command") {
      const started = performance.now();
      try {
        outcome = this.#host.apply(entry);
      } catch (error: unknown) {
        if (!(error instanceof ServiceFatalError)) throw error;
        this.#fatal(error.message, error.cause);
      }
      const seconds = (performance.now() - started) / 1000;
      this.#applySeconds.observe(seconds);
      this.#applyStats.applied++;
      this.#applyStats.secondsTotal += seconds;
      this.#applyStats.secondsMax = Math.max(this.#applyStats.secondsMax, seconds);
      this.#onOutcome(entry, outcome);
    } else if (entry.kind === "fence") {
      this.#replacement.onFenceApplied(entry);
    }
    this.#appliedIndex = entry.index;
    this.#appliedTerm = entry.term;
    const seconds = this.#requests.onApplied(entry, outcome);
    if (seconds !== undefined) this.#commitSeconds.observe(seconds);
  }

  #onOutcome(entry: Entry, outcome: HostOutcome): void {
    if (outcome.type === "timer" || (outcome.type === "error" && outcome.timer !== undefined)) {
      const timer = outcome.timer!;
      const proposed = this.#timerProposals.get(timer.id);
      if (proposed !== undefined && proposed.generation === timer.generation) {
        this.#timerProposals.delete(timer.id);
      }
      if (outcome.type === "error" || outcome.fired) this.counters.timersFired++;
    }
    if (outcome.type === "error") {
      this.counters.serviceErrors++;
      this.#lastServiceError = { index: entry.index, message: outcome.message };
      this.#deps.log.error("service apply failed; rolled back and answered with the error", {
        index: entry.index,
        error: outcome.message,
      });
    }
  }

  /**
   * stampMs is the time a leader stamps on an entry it proposes: its clock, but never
   * below a time already in the log, so the log's time only moves forward.
   */
  #stampMs(): number {
    this.#timeHighMs = Math.max(this.#timeHighMs, Date.now());
    return this.#timeHighMs;
  }

  /**
   * proposeDueTimers: the leader proposes a "timer fired" entry for each due timer, a
   * bounded number per tick. A proposal still on its way is not repeated for two election
   * timeouts; a duplicate is harmless anyway (applying it is a no-op), which is what makes
   * a timer fire once across leader changes.
   */
  #proposeDueTimers(): void {
    if (this.raft.role !== "leader" || this.#replacement.fencedReason !== null) {
      this.#timerProposals.clear();
      return;
    }
    if (this.#timerProposalsTerm !== this.raft.term) {
      this.#timerProposals.clear();
      this.#timerProposalsTerm = this.raft.term;
    }
    if (this.#host.timerCount === 0) return;
    const now = Math.max(this.#timeHighMs, Date.now());
    const retryMs = this.#deps.config.raft.electionTimeoutMs * 2;
    const due = this.#host.dueTimers(now, timerFiresPerTickMax, (timer) => {
      const proposed = this.#timerProposals.get(timer.id);
      return proposed === undefined || proposed.generation !== timer.generation ||
        proposed.deadlineMs !== timer.deadlineMs || now - proposed.at >= retryMs;
    });
    for (const timer of due) {
      const proposed = this.raft.propose(encodeTimerEntry(this.#stampMs(), timer));
      if (!proposed.ok) break;
      this.#timerProposals.set(timer.id, {
        generation: timer.generation,
        deadlineMs: timer.deadlineMs,
        at: now,
      });
    }
  }

  /** rollbackBase is the state a failed apply rolls back from: the latest snapshot's. */
  #rollbackBase(): { index: number; service: Uint8Array; state: HostState } {
    const snapshot = this.#deps.storage.readSnapshot();
    if (snapshot === undefined) {
      assert(this.#initialService !== undefined, "without a snapshot the initial state is kept");
      return { index: 0, service: this.#initialService, state: { timeMs: 0, timers: [] } };
    }
    const decoded = decodeSnapshot(snapshot.data);
    return { index: snapshot.meta.index, service: decoded.service, state: hostState(decoded.host) };
  }

  /** fatal stops the node: it cannot serve the log's state. */
  #fatal(message: string, error: unknown): never {
    const why = `${message}; stopping rather than serve a state that differs from the log`;
    this.#deps.log.error(why, { error });
    // The loop applies nothing more; stop() still closes the transport and fails waiters.
    this.#halted = true;
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    this.#deps.onFatal?.(message);
    throw new ServiceFatalError(message, { cause: error });
  }

  #maybeSnapshot(): void {
    if (this.#snapshotSaving !== undefined) return;
    const due = this.#snapshotSchedule.due(
      this.#appliedIndex,
      this.#snapshotIndex,
      () => catchingUpFollower(this.raft.status(), this.#appliedIndex),
    );
    if (due) void this.#snapshotInBackground();
  }

  /**
   * snapshotInBackground serializes the applied state on the loop (it must not change
   * meanwhile: this is the pause), writes and syncs it off the loop, and compacts the log
   * once it is durable. One at a time: a call while one is saved gets that one.
   */
  #snapshotInBackground(): Promise<SnapshotMeta | undefined> {
    if (this.#snapshotSaving !== undefined) return this.#snapshotSaving;
    if (this.#appliedIndex <= this.#snapshotIndex) return Promise.resolve(undefined);
    const started = performance.now();
    let service: Uint8Array;
    try {
      service = this.#deps.service.snapshot();
    } catch (error: unknown) {
      this.#fatal(
        `The service could not take a snapshot at index ${this.#appliedIndex}: ${
          error instanceof Error ? error.message : String(error)
        }`,
        error,
      );
    }
    const parts = encodeSnapshotParts(
      this.raft.fenceTableAt(this.#appliedIndex),
      service,
      encodeHostState(this.#host.state()),
    );
    const meta: SnapshotMeta = {
      index: this.#appliedIndex,
      term: this.#appliedTerm,
      bytes: parts.reduce((sum, part) => sum + part.byteLength, 0),
    };
    const pausedMs = performance.now() - started;
    const saving = this.#deps.storage.saveSnapshotInBackground(meta, parts).then(
      (saved) => {
        this.#snapshotSaving = undefined;
        if (!saved || this.#stopped || this.#halted) return undefined;
        this.#onSnapshotSaved(meta, started, pausedMs);
        return meta;
      },
      (error: unknown) => {
        this.#snapshotSaving = undefined;
        if (this.#stopped || this.#halted) return undefined;
        if (error instanceof AssertionError) throw error;
        try {
          this.#storageFailed(`save the snapshot at index ${meta.index}`, error);
        } catch (failed: unknown) {
          if (!this.#handledHalt(failed)) throw failed;
        }
        return undefined;
      },
    );
    this.#snapshotSaving = saving;
    return saving;
  }

  /** onSnapshotSaved: the snapshot is durable; compact the log behind it. */
  #onSnapshotSaved(meta: SnapshotMeta, started: number, pausedMs: number): void {
    const point = this.raft.compact(meta, snapshotTrailingEntries);
    // The rows go a slice per tick (compactDiskStep): deleting tens of thousands at once
    // would pause the node for ~100 ms, and nothing waits for them to go.
    this.#diskCompaction.behind(point);
    this.#snapshotIndex = meta.index;
    this.#host.forgetFailuresThrough(meta.index);
    this.#initialService = undefined;
    this.counters.snapshotsTaken++;
    this.#snapshotSeconds.observe(pausedMs / 1000);
    this.#event("snapshot-taken", `snapshot at index ${meta.index} (${meta.bytes} bytes)`);
    this.#deps.log.info("snapshot taken", {
      index: meta.index,
      bytes: meta.bytes,
      compactedTo: point,
      pausedMs: Math.round(pausedMs),
      ms: Math.round(performance.now() - started),
    });
    this.#schedule();
  }

  #observeRole(): void {
    if (this.raft.fenced !== null && this.#replacement.fencedReason === null) {
      this.#replacement.becomeFenced(this.raft.fenced);
    }
    const role = this.raft.role;
    const leader = this.raft.leader;
    if (role !== this.#lastRole) {
      if (role === "candidate") {
        this.counters.electionsStarted++;
        this.#event("election-started", `${this.name} campaigns in term ${this.raft.term}`);
      }
      if (role === "leader") {
        this.#deps.log.info("became leader", { term: this.raft.term });
      } else if (this.#lastRole === "leader") {
        this.#deps.log.info("lost leadership", { term: this.raft.term, leader });
      }
      this.#lastRole = role;
      try {
        this.#deps.service.onRoleChange?.(role);
      } catch (error: unknown) {
        // Outside the replicated state: a failure here is the service's to report.
        this.#deps.log.error("service onRoleChange failed", { role, error });
      }
    }
    if (leader !== this.#lastLeader) {
      if (leader !== null) {
        this.counters.leaderChanges++;
        this.#event("leader-changed", `${leader} leads term ${this.raft.term}`);
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
    if (this.#stopped || this.#halted) {
      return Promise.resolve({ ok: false, code: "unavailable", message: "Node is shutting down" });
    }
    // Suspended (keel suspend): client writes sent here, or forwarded here as to the
    // leader, fail until resume. Service timers and the cluster's own entries go on.
    if (this.#suspended) {
      return Promise.resolve({
        ok: false,
        code: "unavailable",
        message: `Client writes are suspended on ${this.name} (keel resume lifts it)`,
      });
    }
    if (this.#requests.writesFull) {
      return Promise.resolve({
        ok: false,
        code: "unavailable",
        message: "Too many writes in flight",
      });
    }
    const proposed = this.raft.propose(
      encodeCommandEntry(this.#stampMs(), encodeEnvelope(session, command)),
    );
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
    return this.#requests.addWrite(
      proposed.index,
      proposed.term,
      this.#deps.config.http.requestTimeoutMs,
    );
  }

  readBarrier(): Promise<ReadBarrierResult> {
    if (this.#stopped || this.#halted) {
      return Promise.resolve({
        ok: false,
        code: "timeout",
        leader: null,
        message: "Node is shutting down",
      });
    }
    if (this.#requests.readsFull) {
      return Promise.resolve({
        ok: false,
        code: "timeout",
        leader: null,
        message: "Too many reads in flight",
      });
    }
    return this.#requests.addRead(this.#deps.config.http.requestTimeoutMs, (requestId) => {
      this.raft.readIndex(requestId);
      this.#schedule();
    });
  }

  leader(): LeaderInfo | null {
    const name = this.raft.leader;
    if (name === null) return null;
    const member = this.#members.get(name);
    if (member === undefined) return null;
    if (member.http === undefined || member.peer === undefined) {
      // A member listed by name alone is reached where gossip last heard it advertise.
      const http = this.#deps.gossip?.httpAddress(name) ?? null;
      return http === null ? null : {
        name,
        httpUrl: `${httpScheme(this.#deps.config)}://${formatHost(http.host)}:${http.port}`,
      };
    }
    // A DNS-named member is reached at the address the re-resolver found for it.
    const resolved = member.http.host === member.peer.host
      ? this.#deps.resolution?.().find((r) => r.name === name)?.address ?? null
      : null;
    return {
      name,
      httpUrl: `${httpScheme(this.#deps.config)}://${
        formatHost(resolved ?? member.http.host)
      }:${member.http.port}`,
    };
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

  /** checkPeer judges a handshaking host (Raft.judgePeer): fenced out (R7), or rolled back. */
  checkPeer(hello: HelloState): Refusal | null {
    return this.#replacement.checkPeer(hello);
  }

  /** recovery is the replacement's catch-up progress for /status, or null when normal. */
  recovery(): RecoveryView | null {
    return this.#replacement.view();
  }

  // ---- OpsApi -------------------------------------------------------------------------------

  #event(kind: OpsEvent["kind"], message: string): void {
    this.#events.push({ at: Date.now(), kind, message });
    if (this.#events.length > eventsMax) this.#events.splice(0, this.#events.length - eventsMax);
  }

  /** recordEvent lets adapters (transport, resolver) add to the event list. */
  recordEvent(kind: OpsEvent["kind"], message: string): void {
    this.#event(kind, message);
  }

  events(): OpsEvent[] {
    return this.#events.slice();
  }

  health(): Check[] {
    return healthChecks({
      stopped: this.#stopped,
      halted: this.#halted,
      storageFailure: this.#storageFailure,
      storage: this.#storageProbe.check(),
    });
  }

  readiness(): Check[] {
    const isLeader = this.raft.role === "leader";
    return readinessChecks({
      leader: this.raft.leader,
      term: this.raft.term,
      isLeader,
      leaderCommit: isLeader ? this.raft.commitIndex : this.#leaderCommitSeen,
      appliedIndex: this.#appliedIndex,
      leaderHeardMsAgo: this.leaderHeardMsAgo(),
      electionTimeoutMs: this.#deps.config.raft.electionTimeoutMs,
      recovering: this.#replacement.status === "recovering",
      waitingForMembers: this.#replacement.waitingForMembers,
      fencedReason: this.#replacement.fencedReason,
      storage: this.#storageProbe.check(),
      stopped: this.#stopped,
    });
  }

  isLeader(): boolean {
    return this.raft.role === "leader";
  }

  metricsText(): string {
    return this.registry.render();
  }

  async snapshotNow(): Promise<AdminResult<{ index: number; bytes: number }>> {
    const meta = await this.#snapshotInBackground();
    const latest = meta ?? this.#deps.storage.latestSnapshot();
    if (latest === undefined) {
      return {
        ok: false,
        code: "unavailable",
        message: "Nothing applied yet to snapshot",
        leader: this.leader(),
      };
    }
    return { ok: true, index: latest.index, bytes: latest.bytes };
  }

  async stepDown(to: string | undefined): Promise<AdminResult<{ leader: string }>> {
    if (to !== undefined && !this.#members.has(to)) {
      return {
        ok: false,
        code: "unknown_member",
        message: `No member named "${to}"`,
        leader: this.leader(),
      };
    }
    const started = Date.now();
    const result = this.transferLeadership(to);
    if (!result.ok) {
      const leader = this.leader();
      if (result.reason === "already-leader") {
        return { ok: false, code: "bad_request", message: `${to} is already the leader`, leader };
      }
      if (result.reason === "not-leader") {
        return {
          ok: false,
          code: leader === null ? "no_leader" : "not_leader",
          message: leader === null
            ? "No leader is known"
            : `Only the leader steps down; the leader is ${leader.name}`,
          leader,
        };
      }
      if (result.reason === "not-voter") {
        return {
          ok: false,
          code: "unavailable",
          message: `${to} is not a voting member yet (recovering)`,
          leader,
        };
      }
      return { ok: false, code: "unknown_member", message: `No member named "${to}"`, leader };
    }
    // A transfer gives up after an election timeout if the target is slow to catch up (a
    // loaded host); try again until the deadline rather than fail the operator's request.
    const electionMs = this.#deps.config.raft.electionTimeoutMs;
    const deadline = Date.now() + Math.max(electionMs * 5, stepDownWaitMsMin);
    while (Date.now() < deadline) {
      const leader = this.raft.leader;
      if (leader !== null && leader !== this.name) return { ok: true, leader };
      if (this.raft.role === "leader" && this.raft.status().transferee === null) {
        this.transferLeadership(to);
      }
      await Bun.sleep(10);
    }
    return {
      ok: false,
      code: "timeout",
      message: `Leadership did not move within ${Math.round((deadline - started) / 1000)} s`,
      leader: this.leader(),
    };
  }

  suspend(): void {
    if (!this.#suspended) this.#deps.log.info("client writes suspended");
    this.#suspended = true;
  }

  resume(): void {
    if (this.#suspended) this.#deps.log.info("client writes resumed");
    this.#suspended = false;
  }

  suspended(): boolean {
    return this.#suspended;
  }

  async shutdown(): Promise<void> {
    this.#deps.log.info("shutdown requested", { role: this.raft.role });
    if (this.raft.role === "leader" && this.raft.peers.length > 0) {
      const result = this.transferLeadership(undefined);
      // Wait until this node no longer leads: handed over, or stepped down because its
      // peers are gone too (a whole cluster stopping). Bounded by two election timeouts.
      const electionMs = this.#deps.config.raft.electionTimeoutMs;
      const started = Date.now();
      const successorKnown = () => this.raft.leader !== null && this.raft.leader !== this.name;
      while (result.ok && !successorKnown() && Date.now() - started < electionMs * 2) {
        // Stepped down with nobody taking over: the peers are going away too.
        if (this.raft.role !== "leader" && Date.now() - started > electionMs) break;
        await Bun.sleep(10);
      }
      const leader = this.raft.leader;
      if (result.ok && leader !== null && leader !== this.name) {
        this.#deps.log.info("handed over leadership before shutdown", { leader });
      } else {
        this.#deps.log.warn("could not hand over leadership before shutdown", {
          reason: result.ok ? "no other member took over in time" : result.reason,
        });
      }
    }
    this.#deps.onShutdown?.();
  }

  /** serviceStatus is the service part of /status. */
  serviceStatus(): ServiceStatusView {
    return {
      timeMs: this.#host.timeMs,
      timers: this.#host.timerCount,
      applied: this.#applyStats.applied,
      applySecondsTotal: this.#applyStats.secondsTotal,
      applySecondsMax: this.#applyStats.secondsMax,
      lastError: this.#lastServiceError,
      snapshotBytes: this.#deps.storage.latestSnapshot()?.bytes ?? 0,
    };
  }

  status(): NodeStatusView {
    const gossip = this.#deps.gossip;
    return nodeStatus({
      name: this.name,
      config: this.#deps.config,
      incarnation: this.#deps.identity.incarnation,
      version: this.#deps.version,
      status: this.#replacement.status,
      fencedReason: this.#replacement.fencedReason,
      recovery: this.recovery(),
      alarms: [...this.#replacement.alarms],
      integrity: this.#scrubber.view(),
      raft: this.raft.status(),
      appliedIndex: this.#appliedIndex,
      leaderHeardMsAgo: this.leaderHeardMsAgo(),
      leaderCommitSeen: this.#leaderCommitSeen,
      pendingWrites: this.#requests.writeCount,
      pendingReads: this.#requests.readCount,
      suspended: this.#suspended,
      counters: this.counters,
      service: this.serviceStatus(),
      startedAt: this.#startedAt,
      storage: this.#deps.storage,
      transport: this.#deps.transport,
      resolution: this.#deps.resolution?.() ?? [],
      gossip: gossip === undefined ? undefined : {
        state: gossip.state(),
        httpAddress: (name) => gossip.httpAddress(name),
        peerAddress: (name) => gossip.peerAddress(name),
      },
    });
  }
}

/** hostState reads a snapshot's host section; a version 1 snapshot (none) has no timers. */
function hostState(host: Uint8Array | undefined): HostState {
  if (host === undefined || host.length === 0) return { timeMs: 0, timers: [] };
  return decodeHostState(host);
}
