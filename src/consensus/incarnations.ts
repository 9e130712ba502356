// Incarnations: who may speak, vote and be counted for a member name, and who must be
// refused (DESIGN §3, R0-R8). Every rule that decides whether a host may join, vote, be
// fenced or counted lives here, so the simulator drives the same code the node runs:
//
// - admission (R7): a host's messages are listened to only while its incarnation may
//   speak for the name (`admits`); a handshake is refused when committed fences rule the
//   host out (`fencedOut`) or when its disk went back in time (`judgeHello`, with the
//   high-water table);
// - counting (R3, R5): whose acknowledgements and votes count (`counts`);
// - fencing (R4, R8): which fence or roster entry a leader appends (`fenceToPropose`,
//   `rosterToPropose`);
// - bootstrap (R1): whether an empty member forms a new cluster, is a replacement, or
//   waits (`decideBootstrap`).
//
// The table of fences itself is fences.ts; the log keeps it in step with its entries.

import type { Fences } from "./fences.ts";
import { encodeFence, encodeRoster, newerIncarnation } from "./fences.ts";
import { quorumSize } from "./quorum.ts";
import type { Message, NodeId, Sender } from "./types.ts";

/**
 * IncarnationUnsafe are test-only switches that break one rule, so the simulator can show
 * its checks catch the violation. Never set outside tests.
 */
export interface IncarnationUnsafe {
  /** A member still being fenced in counts with its new incarnation (breaks R5). */
  fenceCountsReplaced?: boolean;
  /** A superseded incarnation is admitted and never refused (breaks R7). */
  admitSuperseded?: boolean;
  /** A host whose disk went back in time is not refused (breaks the rollback rule). */
  ignoreRollback?: boolean;
  /** An empty member forms a new cluster even when a peer has state (breaks R1). */
  bootstrapIgnoresState?: boolean;
}

/** HelloState is what a handshake says of the host that dials (transport/handshake.ts). */
export interface HelloState {
  name: NodeId;
  incarnation: string;
  recovering: boolean;
  /** The host's current term and last log index. */
  term: number;
  lastIndex: number;
}

/** Refusal says why a handshaking host is refused. */
export interface Refusal {
  kind: "fenced" | "rolled-back";
  reason: string;
}

/** Hosts remembered in the high-water table at most (oldest forgotten first). */
export const highWaterHostsMax = 64;

/** HighWaterMark is the highest term a host spoke in and the index it acked in that term. */
interface HighWaterMark {
  term: number;
  index: number;
}

/**
 * Incarnations applies the identity rules to the fence table of one node's log. It holds
 * the high-water table: per (member, incarnation), the highest term the host spoke in and
 * the highest index it acknowledged in that term. A correct host never goes below either:
 * its term and acknowledged entries are durable. One that comes back below them was
 * restored from an old copy of its disk, and could vote twice or lose acknowledged entries.
 * The table is per process: it does not outlive a restart.
 */
export class Incarnations {
  readonly #fences: () => Fences;
  readonly #unsafe: IncarnationUnsafe;
  readonly #highWater = new Map<string, HighWaterMark>();

  constructor(fences: () => Fences, unsafe: IncarnationUnsafe = {}) {
    this.#fences = fences;
    this.#unsafe = unsafe;
  }

  /**
   * admits decides whether a host may speak for a member (R7): its current incarnation
   * (the latest fence, committed or not), an original member never fenced, or a
   * replacement still recovering (it may catch up; it is not counted). A superseded
   * incarnation, or a normal host whose incarnation the table does not know, is a
   * zombie and is ignored.
   */
  admits(name: NodeId, sender: Sender): boolean {
    const fences = this.#fences();
    const current = fences.current(name);
    if (current !== undefined && current.incarnation === sender.incarnation) return true;
    if (this.#unsafe.admitSuperseded === true) return true;
    if (fences.isSuperseded(name, sender.incarnation)) return false;
    // Incarnations order by creation. One older than the current one was replaced (a
    // founder missing from the roster, or a replacement abandoned before it was fenced
    // in): never again. A newer one the table does not name was fenced in by a fence this
    // node has not seen yet, or is a replacement still recovering: listen (not counted).
    return current === undefined || newerIncarnation(sender.incarnation, current.incarnation);
  }

  /**
   * counts says whether a follower's acknowledgements count toward commit and its votes
   * toward a quorum. Not while a fence for it is uncommitted (R5: the fence commits on a
   * majority of the OTHER members), not for a replacement not yet fenced in (R3), and
   * only for the incarnation the table names.
   */
  counts(
    name: NodeId,
    incarnation: string | null,
    recovering: boolean,
    commitIndex: number,
  ): boolean {
    const current = this.#fences().current(name);
    if (current !== undefined && current.fence && current.index > commitIndex) {
      if (this.#unsafe.fenceCountsReplaced === true) return incarnation === current.incarnation;
      // The host the fence names says it is normal: it turned normal only holding its
      // fence committed (R6), so the fence did commit; this node has not learned it yet (a
      // commit index is volatile: a leader that committed the fence and restarted forgot
      // it). Not counting it could leave no electable quorum: this node's longer log
      // needs that vote, and the replacement's shorter log cannot win.
      return incarnation === current.incarnation && !recovering;
    }
    if (incarnation === null) return current === undefined;
    if (current !== undefined) return current.incarnation === incarnation;
    return !recovering;
  }

  /**
   * fencedOut says why a host must be refused at the handshake (R7), judged by committed
   * fences only: a superseded incarnation, or a normal host whose incarnation the table
   * does not name. Null when the host may link.
   */
  fencedOut(name: NodeId, sender: Sender, commitIndex: number): string | null {
    if (this.#unsafe.admitSuperseded === true) return null;
    const entry = this.#fences().entryAt(name, commitIndex);
    if (entry === undefined || entry.incarnation === sender.incarnation) return null;
    if (entry.superseded.includes(sender.incarnation)) {
      return `incarnation ${sender.incarnation} of ${name} was replaced by ${entry.incarnation} (fence at index ${entry.index})`;
    }
    if (!newerIncarnation(sender.incarnation, entry.incarnation)) {
      // Incarnations start with their creation time: an older one was replaced. (A host
      // whose clock is far behind makes "older" incarnations: this names the cause.)
      return `incarnation ${sender.incarnation} of ${name} is older than its current one, ${entry.incarnation} (replaced; or check this host's clock)`;
    }
    // Unknown and normal: newer than this node's committed table. Not refused.
    return null;
  }

  /**
   * noteHeard records a message in the high-water table. A pre-vote (and a granted
   * answer) carries the term the sender would campaign in, which it has not made durable:
   * only other messages prove a durable term.
   */
  noteHeard(message: Message, sender: Sender): void {
    if (message.type === "preVote" || message.type === "preVoteResponse") return;
    const key = `${message.from}@${sender.incarnation}`;
    const mark = this.#highWater.get(key);
    // What the host holds durably in its term: an acknowledged match, or, from a leader,
    // the commit index it announces (never above its own durable log: sentCommitIndex).
    const index = message.type === "appendEntriesResponse" && message.success
      ? message.matchIndex
      : message.type === "appendEntries" || message.type === "heartbeat"
      ? message.commitIndex
      : 0;
    if (mark === undefined || message.term > mark.term) {
      if (this.#highWater.size >= highWaterHostsMax && mark === undefined) {
        this.#highWater.delete(this.#highWater.keys().next().value!);
      }
      this.#highWater.set(key, { term: message.term, index });
    } else if (message.term === mark.term && index > mark.index) {
      mark.index = index;
    }
  }

  /**
   * rolledBack says why a handshaking host is refused as rolled back: it says a term or a
   * last index below what it already spoke in or acknowledged. Null when it is not.
   */
  rolledBack(hello: HelloState): string | null {
    if (this.#unsafe.ignoreRollback === true) return null;
    const mark = this.#highWater.get(`${hello.name}@${hello.incarnation}`);
    if (mark === undefined) return null;
    if (hello.term > mark.term || (hello.term === mark.term && hello.lastIndex >= mark.index)) {
      return null;
    }
    return `its disk went back in time: term ${hello.term} and last index ${hello.lastIndex}, ` +
      `but it already spoke in term ${mark.term} and acknowledged index ${mark.index}`;
  }

  /** judgeHello judges a handshaking host: fenced out (R7), or rolled back; null admits it. */
  judgeHello(hello: HelloState, commitIndex: number): Refusal | null {
    const fenced = this.fencedOut(hello.name, hello, commitIndex);
    if (fenced !== null) return { kind: "fenced", reason: fenced };
    const rolledBack = this.rolledBack(hello);
    if (rolledBack !== null) return { kind: "rolled-back", reason: rolledBack };
    return null;
  }
}

/** FenceProposalInput is what a leader knows when it hears from a recovering host. */
export interface FenceProposalInput {
  name: NodeId;
  sender: Sender;
  commitIndex: number;
  /** The incarnation last heard under this name before `sender`, if any. */
  previousIncarnation: string | null;
  transferring: boolean;
}

/**
 * fenceToPropose is the fence entry a leader appends for a replacement it has heard from
 * (R4), or undefined: one fence at a time (R8), never while a transfer runs, never for an
 * incarnation older than the current one or already superseded.
 */
export function fenceToPropose(fences: Fences, input: FenceProposalInput): Uint8Array | undefined {
  const { name, sender } = input;
  if (!sender.recovering) return undefined;
  const current = fences.current(name);
  if (current !== undefined && !newerIncarnation(sender.incarnation, current.incarnation)) {
    return undefined;
  }
  if (fences.isSuperseded(name, sender.incarnation)) return undefined;
  if (fences.uncommitted(input.commitIndex).length > 0) return undefined;
  if (input.transferring) return undefined;
  // Name the incarnation we last heard under this name when the table lacks it (a
  // member replaced before the roster was recorded), so it is known to be superseded.
  const previous = input.previousIncarnation;
  const replaces = previous !== null && previous !== current?.incarnation &&
      !fences.isSuperseded(name, previous) &&
      newerIncarnation(sender.incarnation, previous)
    ? previous
    : undefined;
  return encodeFence(name, sender.incarnation, replaces);
}

/** RosterInput is the leader's view of its members' incarnations. */
export interface RosterInput {
  self: { name: NodeId; incarnation: string; recovering: boolean };
  peers: Iterable<[NodeId, { incarnation: string | null; recovering: boolean }]>;
  commitIndex: number;
  transferring: boolean;
}

/**
 * rosterToPropose is the roster entry a leader appends: the incarnation of every normal
 * member the table does not name yet (the founders, at first), so that once that member
 * is replaced, its old host is known to be superseded and is refused. Undefined when
 * there is nothing to record or a roster is still on its way to commit.
 */
export function rosterToPropose(fences: Fences, input: RosterInput): Uint8Array | undefined {
  if (input.self.incarnation === "" || input.transferring) return undefined;
  if (fences.hasUncommittedRoster(input.commitIndex)) return undefined;
  const members: Record<NodeId, string> = {};
  if (fences.current(input.self.name) === undefined && !input.self.recovering) {
    members[input.self.name] = input.self.incarnation;
  }
  for (const [peer, progress] of input.peers) {
    if (progress.incarnation === null || progress.recovering) continue;
    if (fences.current(peer) !== undefined) continue;
    members[peer] = progress.incarnation;
  }
  if (Object.keys(members).length === 0) return undefined;
  return encodeRoster(members);
}

/** PeerHandshake is what an empty member knows of a peer it has linked with. */
export interface PeerHandshake {
  name: NodeId;
  /** The peer has a term or log entries. */
  hasState: boolean;
}

/** BootstrapInput is an empty member's view for the bootstrap decision (R1). */
export interface BootstrapInput {
  term: number;
  lastIndex: number;
  recovering: boolean;
  peers: readonly NodeId[];
  /** Peers linked now, with what their handshake said. */
  linked: readonly PeerHandshake[];
  /**
   * Founding members the operator chose to form without (keel run --form-without): they
   * join later as replacements. The rest, this node included, must be a majority.
   */
  formWithout?: readonly NodeId[];
  /**
   * This member held a cluster's data before (its damaged data dir was moved aside): it
   * rejoins that cluster, and never founds one, even when every peer it sees is empty.
   */
  joinOnly?: boolean;
  unsafe?: IncarnationUnsafe;
}

/** BootstrapDecision is what an empty member does next (R1). */
export type BootstrapDecision =
  /** Not an empty recovering member: no bootstrap to decide, ever again. */
  | { kind: "not-empty" }
  /** A peer has cluster state: this member is a replacement, to be fenced in (R4-R6). */
  | { kind: "replacement"; withState: NodeId[] }
  /** Every member is linked and empty: form a new cluster together. */
  | { kind: "form" }
  /** Not every member is linked yet, and none has state: wait, never form alone. */
  | { kind: "wait"; reached: NodeId[]; waitingFor: NodeId[] };

/**
 * decideBootstrap is R1: an empty node forms a new cluster only when every configured
 * member is linked and empty. An empty node that finds any peer with cluster state is a
 * replacement. An empty node that cannot reach every member waits; it never forms a
 * cluster alone. The operator may name founders to form without (a host that never came
 * up): then every other member must be linked and empty, and they must be a majority;
 * the ones left out join later as replacements, fenced in like any other.
 */
export function decideBootstrap(input: BootstrapInput): BootstrapDecision {
  if (input.term !== 0 || input.lastIndex !== 0 || !input.recovering) return { kind: "not-empty" };
  const linked = new Map(input.linked.map((peer) => [peer.name, peer]));
  const withState = [...linked.values()].filter((peer) => peer.hasState).map((p) => p.name);
  if (withState.length > 0 && input.unsafe?.bootstrapIgnoresState !== true) {
    return { kind: "replacement", withState };
  }
  const reached = input.peers.filter((peer) => linked.has(peer));
  const without = new Set(input.formWithout ?? []);
  const needed = input.peers.filter((peer) => !without.has(peer));
  const founders = needed.length + 1;
  const enough = founders >= quorumSize(input.peers.length + 1);
  if (input.joinOnly !== true && enough && needed.every((peer) => linked.has(peer))) {
    return { kind: "form" };
  }
  return { kind: "wait", reached, waitingFor: needed.filter((peer) => !linked.has(peer)) };
}
