// The node's side of the replacement protocol (DESIGN §3, R0-R8). The rules live in the
// core (consensus/incarnations.ts: bootstrap, admission, fencing, rollback); this room
// performs the I/O they ask for (status writes, a new incarnation, re-handshakes, closing
// links), and reports: the catch-up progress of a replacement, the R8 alarm of two live
// hosts claiming one name, and the log lines an operator follows.

import { decideBootstrap, type HelloState, type Refusal } from "../consensus/incarnations.ts";
import { decodeFence } from "../consensus/fences.ts";
import type { Raft } from "../consensus/raft.ts";
import type { Entry, NodeId, SnapshotChunkToPersist } from "../consensus/types.ts";
import type { OpsEvent, RecoveryView } from "../http/api.ts";
import type { Logger } from "../lib/log.ts";
import type { Identity, NodeStatus, NodeStorage } from "../storage/storage.ts";
import type { Transport } from "../transport/transport.ts";

/** RecoveryTransport is the part of the TCP transport the replacement protocol uses. */
export interface RecoveryTransport extends Transport {
  handshakes(): Array<
    { name: NodeId; incarnation: string; hasState: boolean; recovering: boolean; at: number }
  >;
  onRefused(
    handler: (name: NodeId, reason: string, kind: "fenced" | "rolled-back" | null) => void,
  ): void;
  closeInbound(name: NodeId, incarnation?: string): void;
  rehandshake(reason: string): void;
}

/** Alarms kept for /status (oldest dropped). */
export const alarmsMax = 20;
/** Incarnations remembered per member for the R8 alarm. */
export const heardIncarnationsMax = 8;

/** ReplacementDeps are the node's parts the replacement protocol uses. */
export interface ReplacementDeps {
  name: NodeId;
  identity: Identity;
  raft: Raft;
  storage: Pick<NodeStorage, "setStatus" | "reincarnate">;
  transport: Pick<RecoveryTransport, "handshakes" | "rehandshake" | "closeInbound">;
  log: Logger;
  event(kind: OpsEvent["kind"], message: string): void;
  /** Runs a write to storage; a failure halts the node (KeelNode.storageWrite). */
  storageWrite<T>(what: string, write: () => T): T;
  failWrites(message: string): void;
  onRestartRequired(reason: string): void;
  appliedIndex(): number;
  leaderCommitSeen(): number;
  /** Founders to form the cluster without (keel run --form-without); usually none. */
  formWithout: readonly NodeId[];
  /** This member's damaged data dir was moved aside: it rejoins, never founds (R1). */
  joinOnly: boolean;
}

/** Bootstrap is what an empty node decided (R1), or "not-empty" for any other node. */
export type Bootstrap = "undecided" | "forming" | "replacement" | "not-empty";

/** Replacement holds this host's lifecycle: status, fencing, bootstrap, catch-up. */
export class Replacement {
  readonly #deps: ReplacementDeps;
  /** Durable lifecycle status: "recovering" until bootstrapped or fenced in (R2, R6). */
  #status: NodeStatus;
  /** Why this host is fenced (R7), for /readyz and the log. */
  #fencedReason: string | null = null;
  /** The decision an empty node made at start: form a new cluster, or join as a replacement. */
  #bootstrap: Bootstrap = "not-empty";
  #bootstrapLoggedAt = 0;
  /** When each (member, incarnation) was first and last heard, for the R8 alarm. */
  #heard = new Map<NodeId, Map<string, { first: number; last: number }>>();
  #alarms: string[] = [];
  #restartRequired = false;
  /** Catch-up progress of a replacement (bytes of snapshot staged, when it started). */
  #recovery = {
    startedAt: 0,
    snapshotBytesDone: 0,
    snapshotBytesTotal: 0,
    samples: [] as Array<[number, number]>,
  };
  #recoveryLoggedAt = 0;

  /** `empty`: the data dir holds no term, no entries and no snapshot. */
  constructor(deps: ReplacementDeps, empty: boolean) {
    this.#deps = deps;
    this.#status = deps.identity.status;
    if (this.#status === "recovering" && empty) {
      this.#bootstrap = "undecided";
    } else if (this.#status === "recovering") {
      this.#bootstrap = "replacement";
      this.#recovery.startedAt = Date.now();
    }
  }

  get status(): NodeStatus {
    return this.#status;
  }

  get fencedReason(): string | null {
    return this.#fencedReason;
  }

  get alarms(): readonly string[] {
    return this.#alarms;
  }

  /** waitingForMembers: an empty node that has not formed a cluster or found one (R1). */
  get waitingForMembers(): boolean {
    return this.#bootstrap === "undecided";
  }

  /** onSnapshotChunk counts a replacement's catch-up by the snapshot bytes staged. */
  onSnapshotChunk(chunk: SnapshotChunkToPersist): void {
    if (this.#status !== "recovering") return;
    this.#recovery.snapshotBytesDone = chunk.offset + chunk.data.byteLength;
    this.#recovery.snapshotBytesTotal = chunk.snapshot.bytes;
    this.#sampleProgress();
  }

  /**
   * becameNormal: the replacement's status "normal" is durable with its adopted vote
   * (R6): it is a voting member again; its links handshake again to say so.
   */
  becameNormal(): void {
    this.#status = "normal";
    this.#deps.transport.rehandshake("this replacement is now a voting member");
    const seconds = this.#recovery.startedAt
      ? ((Date.now() - this.#recovery.startedAt) / 1000).toFixed(1)
      : "?";
    this.#deps.event(
      "recovery",
      `${this.#deps.name} (incarnation ${this.#deps.identity.incarnation}) is a voting member again after ${seconds} s`,
    );
    this.#deps.log.info("replacement caught up and fenced in: now a voting member", {
      incarnation: this.#deps.identity.incarnation,
      term: this.#deps.raft.term,
      votedFor: this.#deps.raft.votedFor,
      appliedIndex: this.#deps.appliedIndex(),
      seconds,
    });
  }

  /** onRefused: a peer refused this host's handshake as fenced or rolled back. */
  onRefused(name: NodeId, reason: string, kind: "fenced" | "rolled-back" | null): void {
    if (kind === "fenced") this.becomeFenced(`member ${name} refused this host: ${reason}`);
    if (kind === "rolled-back") this.onRolledBack(name, reason);
  }

  /**
   * maybeBootstrap settles what an empty node is (R1). It starts recovering (R2); when
   * every configured member has linked and said it is empty too, they form a new cluster
   * together. Any member with cluster state makes this node a replacement, to be fenced
   * in by the leader. Until then it waits, and says what it waits for; it never forms a
   * cluster alone.
   */
  maybeBootstrap(): void {
    if (this.#bootstrap !== "undecided" || this.#fencedReason !== null) return;
    const decision = decideBootstrap({
      term: this.#deps.raft.term,
      lastIndex: this.#deps.raft.lastIndex,
      recovering: this.#deps.raft.recovering,
      peers: this.#deps.raft.peers,
      linked: this.#deps.transport.handshakes(),
      formWithout: this.#deps.formWithout,
      joinOnly: this.#deps.joinOnly,
    });
    switch (decision.kind) {
      case "not-empty":
        this.#bootstrap = "not-empty";
        return;
      case "replacement":
        this.#becomeReplacement(decision.withState);
        return;
      case "form":
        this.#formCluster();
        return;
      case "wait":
        this.#logWaitingForMembers(decision.reached, decision.waitingFor);
        return;
    }
  }

  #becomeReplacement(withState: NodeId[]): void {
    this.#bootstrap = "replacement";
    this.#recovery.startedAt = Date.now();
    this.#deps.event(
      "recovery",
      `${this.#deps.name} found cluster state on ${withState.join(", ")}: joining as a replacement`,
    );
    this.#deps.log.warn(
      "empty data dir and the cluster has state: joining as a replacement of this member",
      { incarnation: this.#deps.identity.incarnation, peersWithState: withState },
    );
  }

  #formCluster(): void {
    this.#deps.storageWrite("write status normal", () => this.#deps.storage.setStatus("normal"));
    this.#status = "normal";
    this.#deps.raft.bootstrapNormal();
    this.#bootstrap = "forming";
    this.#deps.transport.rehandshake("this node is no longer recovering");
    this.#deps.event(
      "recovery",
      `all ${this.#deps.raft.members.length} members are empty: forming a new cluster`,
    );
    const without = this.#deps.formWithout;
    this.#deps.log.info(
      without.length === 0
        ? "every member is reachable and empty: forming a new cluster"
        : "forming a new cluster without the members named by --form-without; they join as replacements",
      { members: this.#deps.raft.members, without },
    );
  }

  #logWaitingForMembers(reached: NodeId[], waitingFor: NodeId[]): void {
    const now = Date.now();
    if (now - this.#bootstrapLoggedAt < 5000) return;
    this.#bootstrapLoggedAt = now;
    this.#deps.log.info("empty data dir: waiting for every member before forming a cluster", {
      reached,
      waitingFor,
    });
  }

  /** checkPeer judges a handshaking host (Raft.judgePeer): fenced out (R7), or rolled back. */
  checkPeer(hello: HelloState): Refusal | null {
    const refusal = this.#deps.raft.judgePeer(hello);
    if (refusal?.kind === "rolled-back") {
      this.#deps.event("fence", `${hello.name} refused: ${refusal.reason}`);
    }
    // A fenced incarnation that still dials is a live host claiming the name (R8), though
    // none of its messages get through any more: raise the alarm from the refusal.
    if (refusal?.kind === "fenced") this.#noteFencedDialing(hello.name, hello.incarnation);
    return refusal;
  }

  onRolledBack(peer: NodeId, reason: string): void {
    if (this.#restartRequired) return;
    this.#restartRequired = true;
    const identity = this.#deps.storageWrite(
      "take a new incarnation",
      () => this.#deps.storage.reincarnate(),
    );
    this.#deps.log.error(
      "peers saw this data dir go back in time (restored from an old backup?): it took a new incarnation and restarts to rejoin as a replacement",
      { refusedBy: peer, reason, newIncarnation: identity.incarnation },
    );
    this.becomeFenced(`data dir rolled back; restarting as incarnation ${identity.incarnation}`);
    this.#deps.onRestartRequired(reason);
  }

  becomeFenced(reason: string): void {
    if (this.#fencedReason !== null) return;
    this.#fencedReason = reason;
    this.#deps.raft.markFenced(reason);
    this.#deps.event("fence", `this host is fenced: ${reason}`);
    this.#deps.log.error(
      "this host's incarnation was replaced by another host: it no longer serves",
      {
        incarnation: this.#deps.identity.incarnation,
        reason,
      },
    );
    this.#deps.failWrites("This host is fenced");
  }

  onFenceApplied(entry: Entry): void {
    const record = decodeFence(entry);
    if ("members" in record) {
      this.#deps.log.info("founding incarnations recorded", {
        index: entry.index,
        members: record.members,
      });
      return;
    }
    this.#deps.event(
      "fence",
      `fence committed at index ${entry.index}: ${record.name} is incarnation ${record.incarnation}`,
    );
    this.#deps.log.info("fence committed", {
      member: record.name,
      incarnation: record.incarnation,
      replaces: record.replaces,
      index: entry.index,
    });
    if (record.name !== this.#deps.name) {
      // Links from the replaced host must handshake again, and are then refused (R7).
      this.#deps.transport.closeInbound(record.name);
    }
  }

  /**
   * noteHeard raises an alarm when two hosts speak for one member at once (R8): an older
   * incarnation is still heard after a newer one first spoke. A host that died before its
   * replacement started is not heard again, so it raises nothing.
   */
  noteHeard(name: NodeId, incarnation: string): void {
    const now = Date.now();
    let byIncarnation = this.#heard.get(name);
    if (byIncarnation === undefined) {
      byIncarnation = new Map();
      this.#heard.set(name, byIncarnation);
    }
    const seen = byIncarnation.get(incarnation);
    if (seen === undefined) {
      byIncarnation.set(incarnation, { first: now, last: now });
      if (byIncarnation.size > heardIncarnationsMax) {
        byIncarnation.delete(byIncarnation.keys().next().value!);
      }
      return;
    }
    seen.last = now;
    const newer = [...byIncarnation].filter(([other, times]) =>
      other !== incarnation && times.first > seen.first
    );
    if (newer.length === 0) return;
    this.#raiseAlarm(
      name,
      `two live hosts claim member ${name}: incarnation ${incarnation} still speaks after ${
        newer.map(([other]) => other).join(", ")
      } appeared`,
    );
  }

  /**
   * noteFencedDialing: a fenced incarnation of `name` dialled and was refused (R7): that
   * host is alive. With a current incarnation of the name heard too, two live hosts claim
   * it (R8). Its messages never get through any more, so only its handshakes show it.
   */
  #noteFencedDialing(name: NodeId, incarnation: string): void {
    const current = this.#deps.raft.currentIncarnation(name);
    if (current === undefined || current === incarnation) return;
    // The current holder is alive when this node has heard it or holds a link with it (a
    // follower hears only its leader, but every member links with every other).
    const linked = this.#deps.transport.handshakes().some((h) =>
      h.name === name && h.incarnation === current
    );
    if (!linked && this.#heard.get(name)?.has(current) !== true) return;
    this.#raiseAlarm(
      name,
      `two live hosts claim member ${name}: incarnation ${incarnation} (fenced) still dials while ${current} serves`,
    );
  }

  #raiseAlarm(name: NodeId, alarm: string): void {
    if (this.#alarms.includes(alarm)) return;
    this.#alarms.push(alarm);
    if (this.#alarms.length > alarmsMax) this.#alarms.shift();
    this.#deps.log.error("alarm", { alarm, member: name });
    this.#deps.event("fence", alarm);
  }

  /** logProgress says every few seconds how a replacement's catch-up is going. */
  logProgress(): void {
    if (this.#status !== "recovering" || this.#bootstrap !== "replacement") return;
    const now = Date.now();
    if (now - this.#recoveryLoggedAt < 2000) return;
    this.#recoveryLoggedAt = now;
    const view = this.view();
    if (view === null) return;
    this.#deps.log.info("catching up as a replacement", {
      snapshotBytes: `${view.snapshotBytesDone}/${view.snapshotBytesTotal}`,
      entries: `${view.entriesDone}/${view.entriesTotal}`,
      bytesPerSecond: view.bytesPerSecond,
      etaSeconds: view.etaSeconds,
    });
  }

  #sampleProgress(): void {
    const samples = this.#recovery.samples;
    samples.push([Date.now(), this.#recovery.snapshotBytesDone]);
    if (samples.length > 20) samples.shift();
  }

  /** recovery is the replacement's catch-up progress for /status, or null when normal. */
  view(): RecoveryView | null {
    if (this.#status !== "recovering" && this.#fencedReason === null) return null;
    const samples = this.#recovery.samples;
    const first = samples[0];
    const last = samples[samples.length - 1];
    const rate = first !== undefined && last !== undefined && last[0] > first[0]
      ? (last[1] - first[1]) / ((last[0] - first[0]) / 1000)
      : null;
    const bytesLeft = this.#recovery.snapshotBytesTotal - this.#recovery.snapshotBytesDone;
    const leaderCommit = this.#deps.leaderCommitSeen();
    return {
      state: this.#fencedReason !== null
        ? "fenced"
        : this.#bootstrap === "undecided"
        ? "waiting-for-members"
        : "catching-up",
      fencedReason: this.#fencedReason,
      startedAt: this.#recovery.startedAt || null,
      snapshotBytesDone: this.#recovery.snapshotBytesDone,
      snapshotBytesTotal: this.#recovery.snapshotBytesTotal,
      entriesDone: this.#deps.appliedIndex(),
      entriesTotal: leaderCommit,
      bytesPerSecond: rate === null ? null : Math.round(rate),
      etaSeconds: rate !== null && rate > 0 && bytesLeft > 0 ? Math.round(bytesLeft / rate) : null,
    };
  }
}
