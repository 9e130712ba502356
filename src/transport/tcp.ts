// TcpTransport: the peer links of one member, over Bun.listen / Bun.connect.
//
// Each member dials one outbound connection to every peer and sends its messages to that
// peer only there; it receives on the connections peers dial to it. So a link is one-way
// and each direction's order is the order of send() calls. A connection is identified by
// the name in its Hello, never by its source address (addresses change when hosts are
// replaced).
//
// The rooms: outbound.ts (dial, backoff, the client handshake, the per-peer queue of
// queue.ts), inbound.ts (accept within admission.ts's bounds, the server handshake,
// whose decision is judge_hello.ts's pure judgeHello), context.ts (what both sides
// share), repeat_log.ts (lines that repeat are said once, then counted). The handshake and its
// authentication: handshake.ts. This file is the facade that wires them.
//
// With TLS (options.tls) both directions run over TLS and the protocol starts once the TLS
// handshake is done. With a CA, each side checks that the other's certificate chains to
// it (mutual TLS); the dialled address is not checked against the certificate, because a
// peer is identified by the name in its authenticated Hello and hosts change addresses.

import { assert } from "../lib/assert.ts";
import type { Message, NodeId, Sender } from "../consensus/types.ts";
import type { PeerLinkState, Transport } from "./transport.ts";
import { normalizeHost } from "./admission.ts";
import { formatAddress, type TransportContext } from "./context.ts";
import { Inbound } from "./inbound.ts";
import { Outbound } from "./outbound.ts";
import { RepeatLog } from "./repeat_log.ts";
import type {
  LocalState,
  LogLevel,
  PeerHandshake,
  RefusedHandler,
  TcpTransportOptions,
} from "./options.ts";

export type {
  LocalState,
  LogLevel,
  PeerAddress,
  PeerHandshake,
  PeerRefusal,
  PeerTls,
  TcpTransportOptions,
  TransportLog,
} from "./options.ts";
export { backoffMs } from "./outbound.ts";

/**
 * TcpTransport implements Transport over TCP. start() listens and dials every peer;
 * send() never blocks and never throws for a peer that is down: messages wait in a
 * bounded per-peer queue, and are dropped (and counted) when it is full.
 */
export class TcpTransport implements Transport {
  readonly #options: TcpTransportOptions;
  readonly #context: TransportContext;
  readonly #outbound: Outbound;
  readonly #inbound: Inbound;
  readonly #messageHandlers: Array<(message: Message, sender: Sender) => void> = [];
  readonly #refusedHandlers: RefusedHandler[] = [];
  readonly #peerDownHandlers: Array<(name: NodeId) => void> = [];
  #started = false;
  #closed = false;

  constructor(options: TcpTransportOptions) {
    this.#options = options;
    this.#context = {
      options,
      local: {
        clusterName: options.clusterName,
        fingerprint: options.fingerprint,
        fingerprintFields: options.fingerprintFields,
        memberNames: [options.self.name, ...options.peers.map((peer) => peer.name)],
        selfName: options.self.name,
        ...(options.protocolVersions === undefined
          ? {}
          : { protocolVersions: options.protocolVersions }),
      },
      handshakes: new Map<NodeId, PeerHandshake>(),
      isClosed: () => this.#closed,
      localState: () => this.#localState(),
      log: (level, message, fields) => this.#log(level, message, fields),
      repeats: new RepeatLog((level, message, fields) => this.#log(level, message, fields)),
    };
    this.#outbound = new Outbound(this.#context, options.peers, {
      refused: (name, reason, kind) => {
        for (const handler of this.#refusedHandlers) handler(name, reason, kind);
      },
      peerDown: (name) => {
        for (const handler of this.#peerDownHandlers) handler(name);
      },
    });
    this.#inbound = new Inbound(this.#context, {
      message: (message, sender) => {
        for (const handler of this.#messageHandlers) handler(message, sender);
      },
      accepted: (name, incarnation) => this.#outbound.noteIncarnation(name, incarnation),
    }, (host) => this.#isMemberHost(host));
  }

  /** start listens on the peer port (rejects if it cannot) and dials every peer. */
  async start(): Promise<void> {
    assert(!this.#started && !this.#closed, "a TcpTransport starts once");
    this.#started = true;
    const { host, port } = this.#options.listen;
    this.#inbound.listen(host, port);
    this.#log("info", `Listening for peers on ${formatAddress(host, port)}`, {
      address: formatAddress(host, port),
      auth: this.#options.secret === undefined ? "none (dev mode)" : "hmac-sha256",
      tls: this.#options.tls === undefined
        ? "off"
        : this.#options.tls.ca === undefined
        ? "on, peers not verified (no ca_file)"
        : "on, peers verified (mutual)",
    });
    this.#outbound.dialAll();
  }

  send(message: Message): void {
    assert(message.from === this.#options.self.name, `message must be from us: ${message.from}`);
    if (this.#closed) return;
    this.#outbound.send(message);
  }

  /** onRefused fires when a peer refuses our handshake; kind says if we were fenced or rolled back. */
  onRefused(handler: RefusedHandler): void {
    this.#refusedHandlers.push(handler);
  }

  /** handshakes returns the latest handshake information per peer. */
  handshakes(): PeerHandshake[] {
    return [...this.#context.handshakes.values()];
  }

  /**
   * closeInbound closes the inbound links of a member (all, or one incarnation's), so
   * the host must handshake again: a replaced incarnation then learns it is fenced.
   */
  closeInbound(name: NodeId, incarnation?: string): void {
    this.#inbound.closeInbound(name, incarnation);
  }

  onMessage(handler: (message: Message, sender: Sender) => void): void {
    this.#messageHandlers.push(handler);
  }

  onPeerDown(handler: (name: NodeId) => void): void {
    this.#peerDownHandlers.push(handler);
  }

  links(): PeerLinkState[] {
    return [...this.#outbound.links.values()].map((link) => ({
      name: link.name,
      address: link.address,
      connected: link.state === "established",
      incarnation: link.incarnation,
      lastError: link.lastError,
      queuedMessages: link.queue.length,
      droppedMessages: link.droppedMessages,
      protocolVersion: link.state === "established" ? link.protocolVersion : null,
    }));
  }

  /**
   * setPeerAddress points a peer's link at a new address: when it differs from the
   * current one, the link is torn down and redialled at once.
   */
  setPeerAddress(name: NodeId, host: string, port: number): void {
    this.#outbound.setAddress(name, host, port, this.#started);
  }

  /**
   * rehandshake redials every outbound link at once so peers learn this node's new
   * state (a replacement that turned normal, a founding member of a new cluster). It is
   * not a peer failure: onPeerDown does not fire.
   */
  rehandshake(reason: string): void {
    if (!this.#started || this.#closed) return;
    this.#outbound.rehandshake(reason);
  }

  /** close closes every connection and the listener, and stops redialling. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#outbound.close();
    this.#inbound.close();
  }

  /** #isMemberHost: is this (normalized) address where a peer's link dials, resolved? */
  #isMemberHost(host: string): boolean {
    for (const link of this.#outbound.links.values()) {
      if (normalizeHost(link.host) === host) return true;
    }
    return false;
  }

  #localState(): LocalState {
    return this.#options.localState?.() ??
      { hasState: false, recovering: false, term: 0, lastIndex: 0 };
  }

  #log(level: LogLevel, message: string, fields: Record<string, unknown>): void {
    this.#options.log(level, message, { self: this.#options.self.name, ...fields });
  }
}
