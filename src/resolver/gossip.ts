// Gossip: the name scheme ("driver name", DESIGN.md §1 journey 5 and §6). Members listed
// in the config by name alone have no fixed address: every node advertises a claim
// `{name, incarnation, recovering, seq, peer, http, gossip}` for itself to its neighbours
// (the bootstrap neighbours of the config, re-resolved like member names, plus every
// member it has learned), every gossip.interval with the claims that changed recently,
// and its whole table every gossip.full_interval. A node that adopts a new address for a
// member points the transport there (setPeerAddress); the http address serves forwarding
// to the leader and the dashboard.
//
// Which claim wins (per member name; the invariant behind "a replacement is adopted within
// a few seconds and stale copies of the old address never win back"):
//
//  1. A node never accepts a claim for its own name. It refutes instead: when it hears a
//     claim for its name that differs from its own (another incarnation or address) with
//     a version at or above its own, it jumps its version past it and pushes its claim at
//     once. So the live owner of a name always holds the highest version of it.
//  2. A claim whose incarnation the Raft incarnation table refuses (a superseded
//     incarnation, or a normal host the committed fences do not name: the same rule as
//     the handshake, R7) is refused, and a held claim refused that way loses to any other.
//     So an old host coming back can never take its name back once the replacement is
//     fenced in, however high it counts.
//  3. Otherwise the higher version (seq) wins. seq is the owner's own counter: it grows
//     every round it advertises (a heartbeat) and jumps on refutation (1). Copies relayed
//     by others carry the version the owner gave them and are never changed, so a stale
//     copy of a dead host's address has a version the replacement has already passed: it
//     loses wherever it arrives, forever. Equal versions with different content (two
//     owners that counted to the same number) are ordered by a fixed tie-break on the
//     content, so every node settles on the same claim.
//
// A replacement starts at seq 0, below the old host's version. It pulls the table of its
// bootstrap neighbours when it starts, and a node that refuses a first-hand claim as
// stale answers the owner with the claim it holds; either way the replacement hears the
// old claim for its name and refutes it (1) within one round trip. No clocks are compared
// between hosts: versions are the owner's counters, ages are each node's own.
//
// Two live hosts claiming one name (a zombie and its replacement before the fence commits)
// refute each other in turn; each logs an error naming the other ("another live host
// claims this node's name") and counts a conflict. The fence (2) ends it.
//
// Expiry: an entry whose version has not grown for gossip.expiry is no longer gossiped and
// its gossip address is no longer a neighbour, but its version and addresses are kept:
// the transport keeps dialling the last known address (a dead host's address is harmless,
// a forgotten live one is not), and the version still refuses stale copies.
//
// Bounds: claims only for configured members (never more entries than members), at most
// neighboursMax neighbours, gossipMessageBytesMax per datagram, one reply to a pull per
// sender per half interval and one correction per member per interval. Authentication:
// HMAC-SHA256 with the cluster secret (gossip_wire.ts). Time and timers are injected.

import type { Config } from "../config/types.ts";
import { gossipAddressed } from "../config/parse.ts";
import { loadSecret } from "../config/secret.ts";
import { AssertionError } from "../lib/assert.ts";
import type { Logger } from "../lib/log.ts";
import type { Registry } from "../lib/metrics.ts";
import { type Clock, realScheduler, ReResolver, type Scheduler } from "./dns.ts";
import { createLookup, type Lookup } from "./dns_client.ts";
import {
  type DecodeFailure,
  decodeGossip,
  encodeGossip,
  formatGossipEndpoint,
  type GossipClaim,
  type GossipEndpoint,
  gossipEntriesMax,
  isWildcard,
} from "./gossip_wire.ts";

export type { GossipClaim, GossipEndpoint } from "./gossip_wire.ts";

/** neighboursMax bounds the neighbours a node sends to (bootstrap list plus members). */
export const neighboursMax = 32;
/** startPullRounds: the first rounds after start ask neighbours for their whole table. */
export const startPullRounds = 3;
/** recentRounds: a changed claim rides along in this many rounds after it changed. */
export const recentRounds = 3;
/** heardDirectMax bounds the incarnations per member remembered for the conflict alarm. */
const heardDirectMax = 8;
/** pullRepliesTracked bounds the rate limiter's memory of senders it answered. */
const pullRepliesTracked = 64;

export interface GossipMember {
  name: string;
  /** Listed by name alone: its addresses are learned here and applied to the transport. */
  gossipAddressed: boolean;
}

/** GossipSelf is what this node advertises about itself. */
export interface GossipSelf {
  name: string;
  incarnation: string;
  peer: GossipEndpoint;
  http: GossipEndpoint;
  gossip: GossipEndpoint;
}

/** GossipNetwork sends one datagram; failures are thrown and counted. */
export interface GossipNetwork {
  send(bytes: Uint8Array, host: string, port: number): void;
}

export interface GossipAgentOptions {
  clusterName: string;
  self: GossipSelf;
  /** Every configured member, this node included. */
  members: readonly GossipMember[];
  /** The bootstrap neighbours' current addresses (re-resolved by the caller). */
  bootstrap: () => readonly GossipEndpoint[];
  intervalMs: number;
  fullIntervalMs: number;
  expiryMs: number;
  /** The cluster secret; undefined is dev mode (unsigned gossip). */
  secret: Uint8Array | undefined;
  clock: Clock;
  scheduler: Scheduler;
  network: GossipNetwork;
  /** This node now: recovering is advertised; a fenced node stops gossiping. */
  selfState?: () => { recovering: boolean; fenced: boolean };
  /**
   * checkClaim returns why a claim's incarnation must be refused (the Raft incarnation
   * table, as at the handshake), or null. Default: nothing is refused.
   */
  checkClaim?: (name: string, incarnation: string, recovering: boolean) => string | null;
  /** onChange: a gossip-addressed member's address was learned or moved. */
  onChange: (name: string, peer: GossipEndpoint, http: GossipEndpoint) => void;
  log: Logger;
  /** Called by stop(): close the socket, stop re-resolving neighbours. */
  onStop?: () => void;
}

/** MemberGossip is what /status shows of one member's gossip entry. */
export interface MemberGossip {
  name: string;
  self: boolean;
  gossipAddressed: boolean;
  incarnation: string | null;
  recovering: boolean | null;
  /** The claim's version (the owner's seq). */
  version: number | null;
  peer: string | null;
  http: string | null;
  gossip: string | null;
  /** The member that told us (the member itself when first-hand). */
  learnedFrom: string | null;
  /** When this node last took a newer version (epoch ms), and how long ago. */
  lastHeardAt: number | null;
  ageMs: number | null;
  /** Not refreshed for gossip.expiry: no longer gossiped (the address is kept). */
  expired: boolean;
  /** When the address last moved (the first learning is not a change). */
  lastChangeAt: number | null;
  changes: number;
  /** Claims for this member refused: stale copies of other content, fenced incarnations. */
  refused: number;
}

export type GossipRejectReason =
  | DecodeFailure
  | "wrong-cluster"
  | "unknown-member"
  | "own-name"
  | "fenced"
  | "stale";

export interface GossipCounters {
  sent: number;
  received: number;
  sendFailures: number;
  rejected: Record<GossipRejectReason, number>;
  addressChanges: number;
  refutations: number;
  conflicts: number;
}

interface Entry {
  claim: GossipClaim;
  learnedFrom: string;
  /** Last time a newer version was taken (local clock). */
  heardAt: number;
  /** Last time the content (incarnation, recovering, addresses) changed. */
  changedAt: number;
}

interface MemberState {
  readonly name: string;
  readonly gossipAddressed: boolean;
  entry: Entry | undefined;
  changes: number;
  lastChangeAt: number | null;
  refused: number;
  lastCorrectionAt: number;
  /** When each recent incarnation of the member last spoke first-hand (bounded). */
  readonly heardDirect: Map<string, number>;
  lastConflictLogAt: number;
}

/**
 * GossipAgent runs the name scheme's protocol for one node: start() begins the rounds,
 * receive() takes each datagram the socket gets. Pure but for the injected clock,
 * scheduler and network.
 */
export class GossipAgent {
  readonly #options: GossipAgentOptions;
  readonly #members = new Map<string, MemberState>();
  readonly #counters: GossipCounters = {
    sent: 0,
    received: 0,
    sendFailures: 0,
    rejected: {
      oversize: 0,
      malformed: 0,
      unsigned: 0,
      "bad-signature": 0,
      "signed-without-secret": 0,
      "wrong-cluster": 0,
      "unknown-member": 0,
      "own-name": 0,
      fenced: 0,
      stale: 0,
    },
    addressChanges: 0,
    refutations: 0,
    conflicts: 0,
  };
  readonly #pullRepliedAt = new Map<string, number>();
  readonly #conflictLoggedAt = new Map<string, number>();
  #seq = 0;
  #rounds = 0;
  #lastFullAt = Number.NEGATIVE_INFINITY;
  #timer: unknown = undefined;
  #pushTimer: unknown = undefined;
  #lastPushAt = Number.NEGATIVE_INFINITY;
  #started = false;
  #stopped = false;
  #fencedLogged = false;

  constructor(options: GossipAgentOptions) {
    for (const [what, ms] of [["interval", options.intervalMs], ["expiry", options.expiryMs]]) {
      if (typeof ms !== "number" || !Number.isFinite(ms) || ms <= 0) {
        throw new RangeError(`Gossip ${what} must be positive, got ${ms} ms`);
      }
    }
    this.#options = options;
    for (const member of options.members) {
      if (member.name === options.self.name) continue;
      this.#members.set(member.name, {
        name: member.name,
        gossipAddressed: member.gossipAddressed,
        entry: undefined,
        changes: 0,
        lastChangeAt: null,
        refused: 0,
        lastCorrectionAt: Number.NEGATIVE_INFINITY,
        heardDirect: new Map(),
        lastConflictLogAt: Number.NEGATIVE_INFINITY,
      });
    }
    if (!options.members.some((member) => member.name === options.self.name)) {
      throw new RangeError(`Gossip self "${options.self.name}" is not a configured member`);
    }
    if (options.members.length > gossipEntriesMax) {
      throw new RangeError(`Gossip handles at most ${gossipEntriesMax} members`);
    }
  }

  /** start sends the first round at once (asking for neighbours' tables), then every interval. */
  start(): void {
    if (this.#started) throw new Error("GossipAgent already started");
    this.#started = true;
    if (this.#options.secret === undefined) {
      this.#options.log.warn(
        "dev mode: no security.secret_file, gossip is not authenticated (unsigned datagrams)",
      );
    }
    this.#round();
    this.#arm();
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    const { scheduler } = this.#options;
    if (this.#timer !== undefined) scheduler.clearTimeout(this.#timer);
    if (this.#pushTimer !== undefined) scheduler.clearTimeout(this.#pushTimer);
    this.#timer = undefined;
    this.#pushTimer = undefined;
    this.#options.onStop?.();
  }

  /** version is this node's current version of its own claim. */
  get version(): number {
    return this.#seq;
  }

  /** peerAddress is a member's peer address as gossip knows it (own: as advertised). */
  peerAddress(name: string): GossipEndpoint | null {
    if (name === this.#options.self.name) return { ...this.#options.self.peer };
    const claim = this.#members.get(name)?.entry?.claim;
    return claim === undefined ? null : { ...claim.peer };
  }

  /** httpAddress is a member's HTTP address as gossip knows it (own: as advertised). */
  httpAddress(name: string): GossipEndpoint | null {
    if (name === this.#options.self.name) return { ...this.#options.self.http };
    const claim = this.#members.get(name)?.entry?.claim;
    return claim === undefined ? null : { ...claim.http };
  }

  /** state is every member's entry, in configured order, this node's own included. */
  state(): MemberGossip[] {
    const now = this.#options.clock.now();
    const { self } = this.#options;
    return this.#options.members.map((member): MemberGossip => {
      if (member.name === self.name) {
        const state = this.#selfState();
        return {
          name: self.name,
          self: true,
          gossipAddressed: member.gossipAddressed,
          incarnation: self.incarnation,
          recovering: state.recovering,
          version: this.#seq,
          peer: formatGossipEndpoint(self.peer),
          http: formatGossipEndpoint(self.http),
          gossip: formatGossipEndpoint(self.gossip),
          learnedFrom: self.name,
          lastHeardAt: null,
          ageMs: null,
          expired: false,
          lastChangeAt: null,
          changes: 0,
          refused: 0,
        };
      }
      const state = this.#members.get(member.name)!;
      const entry = state.entry;
      return {
        name: member.name,
        self: false,
        gossipAddressed: member.gossipAddressed,
        incarnation: entry?.claim.incarnation ?? null,
        recovering: entry?.claim.recovering ?? null,
        version: entry?.claim.seq ?? null,
        peer: entry === undefined ? null : formatGossipEndpoint(entry.claim.peer),
        http: entry === undefined ? null : formatGossipEndpoint(entry.claim.http),
        gossip: entry === undefined ? null : formatGossipEndpoint(entry.claim.gossip),
        learnedFrom: entry?.learnedFrom ?? null,
        lastHeardAt: entry?.heardAt ?? null,
        ageMs: entry === undefined ? null : now - entry.heardAt,
        expired: entry === undefined ? false : this.#expired(entry, now),
        lastChangeAt: state.lastChangeAt,
        changes: state.changes,
        refused: state.refused,
      };
    });
  }

  counters(): GossipCounters {
    return { ...this.#counters, rejected: { ...this.#counters.rejected } };
  }

  /** neighbours is where the next round goes: bootstrap plus live members, without self. */
  neighbours(): GossipEndpoint[] {
    const own = formatGossipEndpoint(this.#options.self.gossip);
    const seen = new Set([own]);
    const out: GossipEndpoint[] = [];
    const now = this.#options.clock.now();
    const learned = [...this.#members.values()].flatMap((state) =>
      state.entry !== undefined && !this.#expired(state.entry, now)
        ? [state.entry.claim.gossip]
        : []
    );
    for (const endpoint of [...this.#options.bootstrap(), ...learned]) {
      const key = formatGossipEndpoint(endpoint);
      if (seen.has(key) || isWildcard(endpoint.host)) continue;
      seen.add(key);
      out.push(endpoint);
      if (out.length === neighboursMax) break;
    }
    return out;
  }

  /** receive handles one datagram from host:port. Bad input is counted, never thrown. */
  receive(bytes: Uint8Array, host: string, port: number): void {
    if (this.#stopped) return;
    this.#counters.received++;
    const source = formatGossipEndpoint({ host, port });
    const decoded = decodeGossip(bytes, this.#options.secret);
    if (!decoded.ok) {
      this.#reject(decoded.reason, `Gossip datagram refused: ${decoded.detail}`, { source });
      return;
    }
    const message = decoded.message;
    if (message.cluster !== this.#options.clusterName) {
      this.#reject("wrong-cluster", "Gossip from another cluster refused", {
        source,
        cluster: message.cluster,
      });
      return;
    }
    const self = this.#options.self.name;
    if (message.from !== self && !this.#members.has(message.from)) {
      this.#reject("unknown-member", "Gossip from a name that is not a member refused", {
        source,
        from: message.from,
      });
      return;
    }
    if (this.#selfState().fenced) return;
    for (const claim of message.entries) {
      if (claim.name === self) {
        this.#onOwnNameClaim(claim, message.from, source);
      } else if (this.#members.has(claim.name)) {
        this.#onClaim(claim, message.from, host, port);
      } else {
        this.#reject("unknown-member", "Gossip claim for a name that is not a member refused", {
          source,
          member: claim.name,
        });
      }
    }
    if (message.pull && message.from !== self) this.#replyToPull(host, port);
  }

  // ---- Rounds ----------------------------------------------------------------------------

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = this.#options.scheduler.setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopped) return;
      this.#round();
      this.#arm();
    }, this.#options.intervalMs);
  }

  #round(): void {
    const state = this.#selfState();
    if (state.fenced) {
      if (!this.#fencedLogged) {
        this.#fencedLogged = true;
        this.#options.log.warn("this node is fenced: it no longer gossips");
      }
      return;
    }
    const now = this.#options.clock.now();
    this.#seq++;
    const full = now - this.#lastFullAt >= this.#options.fullIntervalMs;
    if (full) this.#lastFullAt = now;
    const pull = this.#rounds < startPullRounds;
    this.#rounds++;
    const recentMs = recentRounds * this.#options.intervalMs;
    const others = [...this.#members.values()].flatMap((member) => {
      const entry = member.entry;
      if (entry === undefined || this.#expired(entry, now)) return [];
      return full || now - entry.changedAt < recentMs ? [entry.claim] : [];
    });
    const entries = [this.#selfClaim(state.recovering), ...others];
    for (const neighbour of this.neighbours()) {
      this.#send(entries, pull, neighbour.host, neighbour.port);
    }
  }

  #selfState(): { recovering: boolean; fenced: boolean } {
    return this.#options.selfState?.() ?? { recovering: false, fenced: false };
  }

  #selfClaim(recovering: boolean): GossipClaim {
    const { self } = this.#options;
    return {
      name: self.name,
      incarnation: self.incarnation,
      recovering,
      seq: this.#seq,
      peer: { ...self.peer },
      http: { ...self.http },
      gossip: { ...self.gossip },
    };
  }

  #expired(entry: Entry, now: number): boolean {
    return now - entry.heardAt > this.#options.expiryMs;
  }

  /** send sends claims as one datagram, or several when they do not fit in one. */
  #send(entries: GossipClaim[], pull: boolean, host: string, port: number): void {
    let bytes: Uint8Array;
    try {
      bytes = encodeGossip({
        cluster: this.#options.clusterName,
        from: this.#options.self.name,
        pull,
        entries,
      }, this.#options.secret);
    } catch (error: unknown) {
      if (!(error instanceof RangeError) || entries.length <= 1) throw error;
      const half = Math.ceil(entries.length / 2);
      this.#send(entries.slice(0, half), pull, host, port);
      this.#send(entries.slice(half), pull, host, port);
      return;
    }
    try {
      this.#options.network.send(bytes, host, port);
      this.#counters.sent++;
    } catch (error: unknown) {
      if (error instanceof AssertionError) throw error;
      this.#counters.sendFailures++;
      this.#options.log.debug("cannot send gossip", {
        to: formatGossipEndpoint({ host, port }),
        error,
      });
    }
  }

  /** schedulePush sends this node's claim to every neighbour soon (after a refutation). */
  #schedulePush(): void {
    if (this.#pushTimer !== undefined || this.#stopped) return;
    // At most one push per half interval: two live hosts with one name that hear each
    // other directly would otherwise refute each other as fast as the network goes.
    const now = this.#options.clock.now();
    const delayMs = Math.max(0, this.#lastPushAt + this.#options.intervalMs / 2 - now);
    this.#pushTimer = this.#options.scheduler.setTimeout(() => {
      this.#pushTimer = undefined;
      if (this.#stopped) return;
      this.#lastPushAt = this.#options.clock.now();
      const state = this.#selfState();
      if (state.fenced) return;
      const claim = this.#selfClaim(state.recovering);
      for (const neighbour of this.neighbours()) {
        this.#send([claim], false, neighbour.host, neighbour.port);
      }
    }, delayMs);
  }

  #replyToPull(host: string, port: number): void {
    const now = this.#options.clock.now();
    const key = formatGossipEndpoint({ host, port });
    const last = this.#pullRepliedAt.get(key);
    if (last !== undefined && now - last < this.#options.intervalMs / 2) return;
    if (this.#pullRepliedAt.size >= pullRepliesTracked) this.#pullRepliedAt.clear();
    this.#pullRepliedAt.set(key, now);
    const state = this.#selfState();
    const others = [...this.#members.values()].flatMap((member) =>
      member.entry !== undefined && !this.#expired(member.entry, now) ? [member.entry.claim] : []
    );
    this.#send([this.#selfClaim(state.recovering), ...others], false, host, port);
  }

  // ---- Claims ----------------------------------------------------------------------------

  /** onOwnNameClaim: never accepted (rule 1); refuted when it could compete with ours. */
  #onOwnNameClaim(claim: GossipClaim, from: string, source: string): void {
    const own = this.#selfClaim(this.#selfState().recovering);
    const same = sameOwner(claim, own);
    if (!same) this.#counters.rejected["own-name"]++;
    // A different host sending as us is alive right now: two hosts claim one name.
    if (from === own.name && !same) this.#onConflict(claim, source);
    if (claim.seq > this.#seq || (claim.seq === this.#seq && !same)) {
      this.#seq = claim.seq + 1;
      if (same) return; // an older run of this very host counted further: just move past it
      this.#counters.refutations++;
      this.#options.log.info("refuting a claim for this node's name", {
        incarnation: claim.incarnation,
        peer: formatGossipEndpoint(claim.peer),
        claimVersion: claim.seq,
        version: this.#seq,
        learnedFrom: from,
      });
      this.#schedulePush();
    }
  }

  #onConflict(claim: GossipClaim, source: string): void {
    this.#counters.conflicts++;
    const now = this.#options.clock.now();
    const key = `${claim.incarnation} ${formatGossipEndpoint(claim.peer)}`;
    const last = this.#conflictLoggedAt.get(key);
    if (last !== undefined && now - last < this.#options.expiryMs) return;
    if (this.#conflictLoggedAt.size >= pullRepliesTracked) this.#conflictLoggedAt.clear();
    this.#conflictLoggedAt.set(key, now);
    this.#options.log.error("another live host claims this node's name", {
      incarnation: claim.incarnation,
      ownIncarnation: this.#options.self.incarnation,
      peer: formatGossipEndpoint(claim.peer),
      source,
    });
  }

  #onClaim(claim: GossipClaim, from: string, host: string, port: number): void {
    const member = this.#members.get(claim.name)!;
    if (from === claim.name) this.#heardDirect(member, claim.incarnation);
    const check = this.#options.checkClaim;
    const reason = check?.(claim.name, claim.incarnation, claim.recovering) ?? null;
    if (reason !== null) {
      member.refused++;
      this.#reject("fenced", "Gossip claim of a fenced incarnation refused", {
        member: claim.name,
        incarnation: claim.incarnation,
        reason,
      });
      return;
    }
    const held = member.entry?.claim;
    let adopt: boolean;
    if (held === undefined) {
      adopt = true;
    } else if (check?.(held.name, held.incarnation, held.recovering) ?? null) {
      adopt = true; // rule 2: the claim we hold has been fenced out since
    } else if (claim.seq !== held.seq) {
      adopt = claim.seq > held.seq;
    } else if (sameOwner(claim, held)) {
      adopt = false;
    } else {
      this.#counters.conflicts++;
      adopt = tieBreak(claim) > tieBreak(held);
    }
    if (adopt) {
      this.#adopt(member, claim, from);
      return;
    }
    if (held === undefined) return;
    if (!sameOwner(claim, held)) {
      member.refused++;
      this.#reject("stale", "Stale gossip claim refused", {
        member: claim.name,
        incarnation: claim.incarnation,
        peer: formatGossipEndpoint(claim.peer),
        claimVersion: claim.seq,
        version: held.seq,
      });
    }
    // The owner itself is behind (a replacement, or a restarted process, counting from 0):
    // tell it what we hold, so it moves past it at once instead of at the next full table.
    const now = this.#options.clock.now();
    if (
      from === claim.name && claim.seq < held.seq &&
      now - member.lastCorrectionAt >= this.#options.intervalMs
    ) {
      member.lastCorrectionAt = now;
      this.#send([held], false, host, port);
    }
  }

  /**
   * heardDirect records a first-hand claim and raises the alarm when two incarnations of
   * one member speak in turn (X, then Y, then X again, within three intervals): two live
   * hosts claim the name. A replacement after a death (X, then only Y) never raises it.
   */
  #heardDirect(member: MemberState, incarnation: string): void {
    const now = this.#options.clock.now();
    const windowMs = 3 * this.#options.intervalMs;
    const previous = member.heardDirect.get(incarnation);
    if (previous !== undefined && now - previous <= windowMs) {
      for (const [other, at] of member.heardDirect) {
        if (other === incarnation || at <= previous || now - at > windowMs) continue;
        this.#counters.conflicts++;
        if (now - member.lastConflictLogAt >= this.#options.expiryMs) {
          member.lastConflictLogAt = now;
          this.#options.log.error("two live hosts claim one member name", {
            member: member.name,
            incarnations: [other, incarnation],
          });
        }
        break;
      }
    }
    member.heardDirect.delete(incarnation);
    member.heardDirect.set(incarnation, now);
    if (member.heardDirect.size > heardDirectMax) {
      member.heardDirect.delete(member.heardDirect.keys().next().value!);
    }
  }

  #adopt(member: MemberState, claim: GossipClaim, from: string): void {
    const now = this.#options.clock.now();
    const held = member.entry;
    const changed = held === undefined || !sameOwner(held.claim, claim) ||
      held.claim.recovering !== claim.recovering;
    const moved = held === undefined || !sameEndpoint(held.claim.peer, claim.peer) ||
      !sameEndpoint(held.claim.http, claim.http);
    member.entry = {
      claim,
      learnedFrom: from,
      heardAt: now,
      changedAt: changed || held === undefined ? now : held.changedAt,
    };
    const log = this.#options.log;
    if (held !== undefined && held.claim.incarnation !== claim.incarnation) {
      log.info("member advertises a new incarnation", {
        member: claim.name,
        from: held.claim.incarnation,
        to: claim.incarnation,
        learnedFrom: from,
      });
    }
    if (!moved) return;
    const peer = formatGossipEndpoint(claim.peer);
    const http = formatGossipEndpoint(claim.http);
    if (held === undefined) {
      log.info("learned member address by gossip", { member: claim.name, peer, http, from });
    } else {
      member.changes++;
      member.lastChangeAt = now;
      this.#counters.addressChanges++;
      log.warn(
        member.gossipAddressed
          ? "member address changed by gossip; reconnecting"
          : "member advertises an address other than its configured one (ignored)",
        {
          member: claim.name,
          from: formatGossipEndpoint(held.claim.peer),
          to: peer,
          http,
          learnedFrom: from,
        },
      );
    }
    if (!member.gossipAddressed) return; // configured endpoints stay the truth
    try {
      this.#options.onChange(claim.name, { ...claim.peer }, { ...claim.http });
    } catch (error: unknown) {
      if (error instanceof AssertionError) throw error;
      log.error("cannot apply a member's new address", { member: claim.name, peer, error });
    }
  }

  /** reject counts a refusal; the 1st, 10th, 100th... of each reason is a warning. */
  #reject(reason: GossipRejectReason, message: string, fields: Record<string, unknown>): void {
    const count = ++this.#counters.rejected[reason];
    const routine = reason === "stale" || reason === "fenced";
    const level = !routine && Number.isInteger(Math.log10(count)) ? "warn" : "debug";
    this.#options.log[level](message, { reason, count, ...fields });
  }
}

function sameEndpoint(a: GossipEndpoint, b: GossipEndpoint): boolean {
  return a.host === b.host && a.port === b.port;
}

/** sameOwner: the same host (incarnation) at the same addresses; versions aside. */
function sameOwner(a: GossipClaim, b: GossipClaim): boolean {
  return a.incarnation === b.incarnation && sameEndpoint(a.peer, b.peer) &&
    sameEndpoint(a.http, b.http) && sameEndpoint(a.gossip, b.gossip);
}

/** tieBreak orders two claims of equal version by content, the same way on every node. */
function tieBreak(claim: GossipClaim): string {
  return [
    claim.incarnation,
    formatGossipEndpoint(claim.peer),
    formatGossipEndpoint(claim.http),
    formatGossipEndpoint(claim.gossip),
  ].join(" ");
}

/** registerGossipMetrics adds the keel_gossip_* series, read from the agent on scrape. */
export function registerGossipMetrics(registry: Registry, agent: GossipAgent): void {
  registry.counter("keel_gossip_messages_sent_total", "Gossip datagrams sent", () => [
    [{}, agent.counters().sent],
  ]);
  registry.counter("keel_gossip_messages_received_total", "Gossip datagrams received", () => [
    [{}, agent.counters().received],
  ]);
  registry.counter(
    "keel_gossip_send_failures_total",
    "Gossip datagrams the socket refused to send",
    () => [[{}, agent.counters().sendFailures]],
  );
  registry.counter(
    "keel_gossip_rejected_total",
    "Gossip datagrams or claims refused, by reason",
    () => Object.entries(agent.counters().rejected).map(([reason, value]) => [{ reason }, value]),
  );
  registry.counter(
    "keel_gossip_refutations_total",
    "Claims for this node's name it refuted by advertising a higher version",
    () => [[{}, agent.counters().refutations]],
  );
  registry.counter(
    "keel_gossip_name_conflicts_total",
    "Times two live hosts claimed one member name",
    () => [[{}, agent.counters().conflicts]],
  );
  const others = () => agent.state().filter((view) => !view.self);
  registry.counter(
    "keel_gossip_address_changes_total",
    "Times gossip moved a member to a new address",
    () => others().map((view) => [{ member: view.name }, view.changes]),
  );
  registry.gauge(
    "keel_gossip_entry_age_seconds",
    "Seconds since this node took a newer version of a member's claim",
    () =>
      others().flatMap((view): Array<[{ member: string }, number]> =>
        view.ageMs === null ? [] : [[{ member: view.name }, view.ageMs / 1000]]
      ),
  );
  registry.gauge(
    "keel_gossip_entry_expired",
    "1 when a member's entry has not been refreshed within gossip.expiry",
    () => others().map((view) => [{ member: view.name }, view.expired ? 1 : 0]),
  );
}

export interface StartGossipOptions {
  config: Config;
  self: GossipSelf;
  /** Where the UDP socket binds: self.gossip unless given. */
  listen?: GossipEndpoint;
  transport: { setPeerAddress(name: string, host: string, port: number): void };
  selfState: () => { recovering: boolean; fenced: boolean };
  checkClaim: (name: string, incarnation: string, recovering: boolean) => string | null;
  log: Logger;
  /** Default: resolver.servers directly when set, else the system resolver. */
  lookup?: Lookup;
}

/**
 * startGossip binds the gossip socket (UDP), starts re-resolving the bootstrap neighbours
 * (waits for their first resolution, at most about 2 s) and starts the rounds. Each
 * learned or moved address of a gossip-addressed member redials the transport.
 */
export async function startGossip(options: StartGossipOptions): Promise<GossipAgent> {
  const { config, self, log } = options;
  const settings = config.gossip;
  if (settings === undefined) throw new RangeError("The config has no gossip section");
  // The same secret as the peer handshake (config/secret.ts); keel run warns about it.
  const secret = loadSecret(config);
  const neighbours = new ReResolver({
    members: settings.neighbours.map((endpoint, index) => ({
      name: `gossip.neighbours[${index}]`,
      host: endpoint.host,
      port: endpoint.port,
    })),
    refreshMs: config.resolver.refreshMs,
    lookup: options.lookup ?? createLookup(config.resolver.servers),
    clock: Date,
    scheduler: realScheduler,
    onChange: () => {},
    log: log.child({ component: "gossip-neighbours" }),
  });
  // Declared before the socket: its data callback reads it once the agent exists.
  // deno-lint-ignore prefer-const
  let agent: GossipAgent | undefined;
  const listen = options.listen ?? self.gossip;
  let socket: Bun.udp.Socket<"uint8array">;
  try {
    socket = await Bun.udpSocket({
      hostname: listen.host,
      port: listen.port,
      binaryType: "uint8array",
      socket: {
        data: (_socket, data, port, address) => agent?.receive(data, address, port),
        // ICMP errors (a neighbour's port is closed) surface here; the next round retries.
        error: (error) => log.debug("gossip socket error", { error }),
      },
    });
  } catch (error: unknown) {
    const code = (error as { code?: unknown }).code;
    const why = typeof code === "string" ? code : error instanceof Error ? error.message : "";
    throw new Error(
      `Cannot listen for gossip on ${formatGossipEndpoint(listen)}: ${why}`,
      { cause: error },
    );
  }
  agent = new GossipAgent({
    clusterName: config.clusterName,
    self,
    members: config.members.map((member) => ({
      name: member.name,
      gossipAddressed: gossipAddressed(member),
    })),
    // state() lists the neighbours in configured order, each at its resolved address.
    bootstrap: () =>
      neighbours.state().flatMap((view, index) => {
        const port = settings.neighbours[index]?.port;
        return view.address === null || port === undefined ? [] : [{ host: view.address, port }];
      }),
    intervalMs: settings.intervalMs,
    fullIntervalMs: settings.fullIntervalMs,
    expiryMs: settings.expiryMs,
    secret,
    clock: Date,
    scheduler: realScheduler,
    network: {
      send: (bytes, host, port) => {
        if (!socket.send(bytes, port, host)) throw new Error("socket send buffer full");
      },
    },
    selfState: options.selfState,
    checkClaim: options.checkClaim,
    onChange: (name, peer) => options.transport.setPeerAddress(name, peer.host, peer.port),
    log,
    onStop: () => {
      neighbours.stop();
      socket.close();
    },
  });
  log.info("gossiping", {
    listen: formatGossipEndpoint(listen),
    peer: formatGossipEndpoint(self.peer),
    http: formatGossipEndpoint(self.http),
    neighbours: settings.neighbours.map(formatGossipEndpoint),
  });
  await neighbours.start();
  agent.start();
  return agent;
}

/**
 * pendingPeerAddress is where the transport dials a gossip-addressed member until gossip
 * finds it: a name in the reserved ".invalid" domain (RFC 6761) that never resolves, so
 * each dial fails at once and the link waits in backoff. setPeerAddress then redials.
 */
export function pendingPeerAddress(name: string): { host: string; port: number } {
  return { host: `${name.toLowerCase()}.gossip-pending.invalid`, port: 1 };
}
