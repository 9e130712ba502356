// TcpTransport: the peer links of one member, over Bun.listen / Bun.connect.
//
// Each member dials one outbound connection to every peer and sends its messages to that
// peer only there; it receives on the connections peers dial to it. So a link is one-way
// and each direction's order is the order of send() calls. A connection is identified by
// the name in its Hello, never by its source address (addresses change when hosts are
// replaced).
//
// Outbound link lifecycle:
//   idle --dial--> connecting --open--> handshaking: wait for the peer's Challenge, send
//   our Hello signed over it, check the peer's signed HelloReply --accepted--> established
//   any state --close, error, refusal, timeout, address change--> idle, redial after a
//   jittered exponential backoff (reset by an accepted handshake).
// Inbound connection: we send a Challenge at once; it must send a Hello within
// handshakeTimeoutMs; then only message frames, each message from the handshaken name
// and to us. Any violation, malformed or oversized frame closes that connection alone and
// logs a warning with its address. The handshake and its authentication: handshake.ts.
//
// With TLS (options.tls) both directions run over TLS and the protocol starts once the TLS
// handshake is done. With a CA, each side checks that the other's certificate chains to
// it (mutual TLS); the dialled address is not checked against the certificate, because a
// peer is identified by the name in its authenticated Hello and hosts change addresses.

import type { Socket, SocketHandler, TCPSocketListener, TLSOptions } from "bun";
import { assert } from "../lib/assert.ts";
import type { Message, NodeId, Sender } from "../consensus/types.ts";
import type { PeerLinkState, Transport } from "./transport.ts";
import {
  DecodeError,
  decodeFrame,
  encodeChallengeFrame,
  encodeHelloFrame,
  encodeHelloReplyFrame,
  encodeMessagesFrame,
  type Frame,
  messageBytesUpperBound,
} from "./codec.ts";
import { FrameDecoder } from "./frame.ts";
import {
  authEqual,
  checkHello,
  checkHelloAuth,
  checkReplyAuth,
  type Hello,
  helloAuth,
  type HelloReply,
  type LocalHandshakeInfo,
  protocolVersion,
  replyAuth,
} from "./handshake.ts";
import {
  batchBytesTarget,
  batchMessagesMax,
  frameBytesMax,
  handshakeFrameBytesMax,
  handshakeTimeoutMs,
  inboundPendingMax,
  keepAliveIdleMs,
  nonceBytes,
  outboundQueueBytesMax,
  outboundQueueMessagesMax,
  reconnectBackoffMaxMs,
  reconnectBackoffMinMs,
  refusalWarnIntervalMs,
  refusalWarnKeysMax,
  writeStallMsMax,
} from "./limits.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";

/** TransportLog receives the transport's log lines: a sentence and structured fields. */
export type TransportLog = (
  level: LogLevel,
  message: string,
  fields: Record<string, unknown>,
) => void;

/** PeerAddress is where a member's peer port is (an IP or a DNS name, and a port). */
export interface PeerAddress {
  name: NodeId;
  host: string;
  port: number;
}

export interface TcpTransportOptions {
  self: { name: NodeId; incarnation: string };
  listen: { host: string; port: number };
  /** Every other configured member. */
  peers: readonly PeerAddress[];
  clusterName: string;
  fingerprint: string;
  fingerprintFields: Record<string, string>;
  log: TransportLog;
  /** random returns a float in [0, 1): backoff jitter only. */
  random: () => number;
  /** This node's state, sent in every handshake (for unanimous bootstrap, R1). */
  localState?: () => LocalState;
  /**
   * checkPeer may refuse a handshaking host: its incarnation is fenced out (R7), or its
   * disk went back in time (restored from a backup). The refusal tells the host which.
   */
  checkPeer?: (hello: Hello) => PeerRefusal | null;
  /**
   * The cluster secret (config/secret.ts): handshakes are authenticated with it both ways.
   * Undefined is dev mode: no authentication, and peers that have a secret are refused.
   */
  secret?: Uint8Array | undefined;
  /** Serve and dial peer links over TLS. */
  tls?: PeerTls | undefined;
}

/** PeerTls holds PEM text: this member's certificate and key, and the CA peers chain to. */
export interface PeerTls {
  cert: string;
  key: string;
  /** Set: peers must present a certificate issued by this CA, both ways. */
  ca?: string | undefined;
}

/** LocalState is what this node says of itself in every handshake. */
export interface LocalState {
  hasState: boolean;
  recovering: boolean;
  term: number;
  lastIndex: number;
}

export interface PeerRefusal {
  kind: "fenced" | "rolled-back";
  reason: string;
}

/** PeerHandshake is what the latest handshake with a member said, either direction. */
export interface PeerHandshake {
  name: NodeId;
  incarnation: string;
  hasState: boolean;
  recovering: boolean;
  /** Milliseconds since the epoch. */
  at: number;
}

type LinkState = "idle" | "connecting" | "handshaking" | "established";

interface OutboundConn {
  readonly kind: "outbound";
  readonly link: PeerLink;
  readonly address: string;
  readonly decoder: FrameDecoder;
  socket: Socket<OutboundConn> | null;
  /** The acceptor's challenge nonce, once its Challenge frame arrived. */
  challenge: Uint8Array | null;
  /** The nonce of the Hello we sent; the reply's auth signs it. */
  nonce: Uint8Array | null;
  /** Set once this connection is abandoned; its later callbacks are ignored. */
  closed: boolean;
}

interface InboundConn {
  readonly kind: "inbound";
  readonly socket: Socket<InboundConn | undefined>;
  readonly remoteAddress: string;
  readonly decoder: FrameDecoder;
  /** The nonce of the Challenge we sent: the Hello's auth must sign it. */
  readonly challenge: Uint8Array;
  /** The name and incarnation from an accepted Hello; null until then. */
  peerName: NodeId | null;
  incarnation: string | null;
  recovering: boolean;
  helloTimer: Timer | null;
  closed: boolean;
}

/** PeerLink is our outbound side of one peer: its queue and its current connection. */
class PeerLink {
  readonly name: NodeId;
  host: string;
  port: number;
  state: LinkState = "idle";
  conn: OutboundConn | null = null;
  readonly queue = new MessageQueue(outboundQueueMessagesMax, outboundQueueBytesMax);
  /** Bytes of a frame the socket has not taken yet; sent first when it drains. */
  pending: Uint8Array | null = null;
  /** When pending last made no progress, for the write stall check. */
  pendingSinceMs = 0;
  droppedMessages = 0;
  /** Consecutive failed dials or handshakes: the backoff exponent. */
  failures = 0;
  redialTimer: Timer | null = null;
  handshakeTimer: Timer | null = null;
  flushScheduled = false;
  lastError: string | null = null;
  /** Incarnation from the peer's last handshake, either direction. */
  incarnation: string | null = null;

  constructor(address: PeerAddress) {
    this.name = address.name;
    this.host = address.host;
    this.port = address.port;
  }

  get address(): string {
    return formatAddress(this.host, this.port);
  }
}

/**
 * TcpTransport implements Transport over TCP. start() listens and dials every peer;
 * send() never blocks and never throws for a peer that is down: messages wait in a
 * bounded per-peer queue, and are dropped (and counted) when it is full.
 */
export class TcpTransport implements Transport {
  readonly #options: TcpTransportOptions;
  readonly #local: LocalHandshakeInfo;
  readonly #links = new Map<NodeId, PeerLink>();
  readonly #inbound = new Set<InboundConn>();
  /** The accepted inbound connection of each peer name. */
  readonly #inboundByName = new Map<NodeId, InboundConn>();
  readonly #messageHandlers: Array<(message: Message, sender: Sender) => void> = [];
  readonly #refusedHandlers: Array<
    (name: NodeId, reason: string, kind: PeerRefusal["kind"] | null) => void
  > = [];
  readonly #handshakes = new Map<NodeId, PeerHandshake>();
  readonly #peerDownHandlers: Array<(name: NodeId) => void> = [];
  #listener: TCPSocketListener<InboundConn | undefined> | null = null;
  #started = false;
  #closed = false;
  /** When each (remote host, reason) refusal was last logged as a warning. */
  readonly #refusalWarnedAt = new Map<string, number>();

  constructor(options: TcpTransportOptions) {
    this.#options = options;
    for (const peer of options.peers) {
      assert(peer.name !== options.self.name, `peers must not include self "${peer.name}"`);
      assert(!this.#links.has(peer.name), `peer "${peer.name}" is listed twice`);
      this.#links.set(peer.name, new PeerLink(peer));
    }
    this.#local = {
      clusterName: options.clusterName,
      fingerprint: options.fingerprint,
      fingerprintFields: options.fingerprintFields,
      memberNames: [options.self.name, ...this.#links.keys()],
      selfName: options.self.name,
    };
  }

  /** start listens on the peer port (rejects if it cannot) and dials every peer. */
  async start(): Promise<void> {
    assert(!this.#started && !this.#closed, "a TcpTransport starts once");
    this.#started = true;
    const { host, port } = this.#options.listen;
    const address = formatAddress(host, port);
    try {
      const tls = this.#options.tls;
      this.#listener = Bun.listen<InboundConn | undefined>({
        hostname: host,
        port,
        data: undefined,
        socket: this.#inboundHandlers,
        ...(tls === undefined ? {} : {
          tls: {
            cert: tls.cert,
            key: tls.key,
            ...(tls.ca === undefined
              ? {}
              : { ca: tls.ca, requestCert: true, rejectUnauthorized: true }),
          } satisfies TLSOptions,
        }),
      });
    } catch (error: unknown) {
      // Bun's message names the host only; say which address and why (EADDRINUSE...).
      const code = (error as { code?: unknown }).code;
      const why = typeof code === "string" ? code : error instanceof Error ? error.message : "";
      throw new Error(`Cannot listen for peers on ${address}: ${why}`, { cause: error });
    }
    this.#log("info", `Listening for peers on ${address}`, {
      address,
      auth: this.#options.secret === undefined ? "none (dev mode)" : "hmac-sha256",
      tls: this.#options.tls === undefined
        ? "off"
        : this.#options.tls.ca === undefined
        ? "on, peers not verified (no ca_file)"
        : "on, peers verified (mutual)",
    });
    for (const link of this.#links.values()) this.#dial(link);
  }

  send(message: Message): void {
    assert(message.from === this.#options.self.name, `message must be from us: ${message.from}`);
    if (this.#closed) return;
    const link = this.#links.get(message.to);
    if (link === undefined) {
      this.#log("warn", `Dropped a ${message.type} message to unknown member "${message.to}"`, {
        peer: message.to,
      });
      return;
    }
    if (!link.queue.push(message, messageBytesUpperBound(message))) {
      link.droppedMessages++;
      return;
    }
    if (link.pending !== null && Date.now() - link.pendingSinceMs > writeStallMsMax) {
      this.#disconnect(link, `Writes stalled for more than ${writeStallMsMax} ms`);
      return;
    }
    if (link.state === "established" && !link.flushScheduled) {
      // Flush after the caller's current batch of sends, so they share frames.
      link.flushScheduled = true;
      queueMicrotask(() => {
        link.flushScheduled = false;
        this.#flush(link);
      });
    }
  }

  /** onRefused fires when a peer refuses our handshake; kind says if we were fenced or rolled back. */
  onRefused(
    handler: (name: NodeId, reason: string, kind: PeerRefusal["kind"] | null) => void,
  ): void {
    this.#refusedHandlers.push(handler);
  }

  /** handshakes returns the latest handshake information per peer. */
  handshakes(): PeerHandshake[] {
    return [...this.#handshakes.values()];
  }

  /**
   * closeInbound closes the inbound links of a member (all, or one incarnation's), so
   * the host must handshake again: a replaced incarnation then learns it is fenced.
   */
  closeInbound(name: NodeId, incarnation?: string): void {
    for (const conn of [...this.#inbound]) {
      if (
        conn.peerName === name && (incarnation === undefined || conn.incarnation === incarnation)
      ) {
        this.#endInbound(conn);
      }
    }
  }

  #localState(): LocalState {
    return this.#options.localState?.() ??
      { hasState: false, recovering: false, term: 0, lastIndex: 0 };
  }

  onMessage(handler: (message: Message, sender: Sender) => void): void {
    this.#messageHandlers.push(handler);
  }

  onPeerDown(handler: (name: NodeId) => void): void {
    this.#peerDownHandlers.push(handler);
  }

  links(): PeerLinkState[] {
    return [...this.#links.values()].map((link) => ({
      name: link.name,
      address: link.address,
      connected: link.state === "established",
      incarnation: link.incarnation,
      lastError: link.lastError,
      queuedMessages: link.queue.length,
      droppedMessages: link.droppedMessages,
    }));
  }

  /**
   * setPeerAddress points a peer's link at a new address: when it differs from the
   * current one, the link is torn down and redialled at once.
   */
  setPeerAddress(name: NodeId, host: string, port: number): void {
    const link = this.#links.get(name);
    if (link === undefined) throw new RangeError(`Unknown peer "${name}"`);
    if (link.host === host && link.port === port) return;
    const previous = link.address;
    link.host = host;
    link.port = port;
    this.#log("info", `Peer "${name}" moved from ${previous} to ${link.address}`, {
      peer: name,
      address: link.address,
      previousAddress: previous,
    });
    if (!this.#started || this.#closed) return;
    link.failures = 0;
    if (link.conn !== null) {
      this.#disconnect(link, `Address changed to ${link.address}`, "info", true);
    } else {
      this.#clearTimer(link, "redialTimer");
      this.#dial(link);
    }
  }

  /**
   * rehandshake redials every outbound link at once so peers learn this node's new
   * state (a replacement that turned normal, a founding member of a new cluster). It is
   * not a peer failure: onPeerDown does not fire.
   */
  rehandshake(reason: string): void {
    if (!this.#started || this.#closed) return;
    for (const link of this.#links.values()) {
      link.failures = 0;
      if (link.conn !== null) {
        this.#disconnect(link, reason, "info", true, true);
      } else {
        this.#clearTimer(link, "redialTimer");
        this.#dial(link);
      }
    }
  }

  /** close closes every connection and the listener, and stops redialling. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const link of this.#links.values()) {
      this.#clearTimer(link, "redialTimer");
      this.#clearTimer(link, "handshakeTimer");
      if (link.conn !== null) this.#endOutbound(link.conn);
      link.conn = null;
      link.state = "idle";
      link.pending = null;
    }
    for (const conn of this.#inbound) this.#endInbound(conn);
    this.#listener?.stop(true);
    this.#listener = null;
  }

  // ---- Outbound ------------------------------------------------------------------------

  readonly #outboundHandlers: SocketHandler<OutboundConn> = {
    binaryType: "uint8array",
    open: (socket) => this.#onOutboundOpen(socket),
    data: (socket, chunk) => this.#onOutboundData(socket.data, chunk),
    drain: (socket) => {
      const conn = socket.data;
      if (!conn.closed && conn.link.conn === conn) this.#flush(conn.link);
    },
    close: (socket, error) => {
      const conn = socket.data;
      if (conn.closed || conn.link.conn !== conn) return;
      const reason = error === undefined ? "Connection closed by peer" : error.message;
      this.#disconnect(conn.link, reason);
    },
    connectError: (socket, error) => {
      const conn = socket.data;
      if (conn.closed || conn.link.conn !== conn) return;
      this.#disconnect(conn.link, `Cannot connect: ${error.message}`);
    },
    // TLS only: the peer's certificate was checked (or failed) before any frame.
    handshake: (socket, success, authorizationError) => {
      const conn = socket.data;
      if (conn.closed || conn.link.conn !== conn) return;
      const failure = this.#tlsFailure(success, authorizationError, "dialler");
      if (failure !== null) this.#disconnect(conn.link, failure, "warn");
    },
  };

  /**
   * #tlsFailure says why a finished TLS handshake is not good enough, or null. Without a
   * CA nothing is verified. With one, the certificate must chain to it; the dialler
   * accepts a certificate that does not name the dialled address (see the file comment).
   */
  #tlsFailure(
    success: boolean,
    authorizationError: Error | null,
    side: "dialler" | "acceptor",
  ): string | null {
    // Without a CA nothing is checked; a broken TLS session closes the socket anyway.
    if (this.#options.tls?.ca === undefined) return null;
    const code = (authorizationError as { code?: unknown } | null)?.code;
    // Bun reports the address check only once the chain verified.
    if (side === "dialler" && code === "ERR_TLS_CERT_ALTNAME_INVALID") return null;
    if (authorizationError !== null) return `TLS handshake failed: ${authorizationError.message}`;
    return success ? null : "TLS handshake failed";
  }

  #dial(link: PeerLink): void {
    if (this.#closed) return;
    assert(link.conn === null, "a link dials one connection at a time");
    const conn: OutboundConn = {
      kind: "outbound",
      link,
      address: link.address,
      // The dialler only ever receives the challenge and the reply on its own link.
      decoder: new FrameDecoder(handshakeFrameBytesMax),
      socket: null,
      challenge: null,
      nonce: null,
      closed: false,
    };
    link.conn = conn;
    link.state = "connecting";
    // One deadline covers connecting and the handshake: a blackholed address must not
    // hold the link for the kernel's connect timeout.
    link.handshakeTimer = setTimeout(() => {
      link.handshakeTimer = null;
      if (link.conn === conn) {
        const stage = conn.socket === null
          ? "not connected"
          : conn.challenge === null
          ? `no challenge from the peer (a keel older than protocol ${protocolVersion}?)`
          : "no answer to our hello";
        this.#disconnect(link, `Not linked within ${handshakeTimeoutMs} ms: ${stage}`);
      }
    }, handshakeTimeoutMs);
    const tls = this.#options.tls;
    Bun.connect<OutboundConn>({
      hostname: link.host,
      port: link.port,
      data: conn,
      socket: this.#outboundHandlers,
      // Checked in the handshake handler (#tlsFailure), not by Bun: see the file comment.
      ...(tls === undefined ? {} : {
        tls: {
          cert: tls.cert,
          key: tls.key,
          ...(tls.ca === undefined ? {} : { ca: tls.ca }),
          rejectUnauthorized: false,
        } satisfies TLSOptions,
      }),
    }).catch((error: unknown) => {
      // connectError normally reports this first; this covers failures before a socket.
      if (link.conn === conn) {
        const text = error instanceof Error ? error.message : String(error);
        this.#disconnect(link, `Cannot connect: ${text}`);
      }
    });
  }

  #onOutboundOpen(socket: Socket<OutboundConn>): void {
    const conn = socket.data;
    conn.socket = socket;
    const link = conn.link;
    if (conn.closed || link.conn !== conn) {
      socket.end();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, keepAliveIdleMs);
    // The acceptor speaks first: its Challenge, which our Hello answers.
    link.state = "handshaking";
  }

  /** #sendHello answers the acceptor's challenge with our Hello, signed over it. */
  #sendHello(conn: OutboundConn, challenge: Uint8Array): void {
    const link = conn.link;
    const socket = conn.socket;
    assert(socket !== null, "a challenge arrives on an open socket");
    conn.challenge = challenge;
    conn.nonce = crypto.getRandomValues(new Uint8Array(nonceBytes));
    const hello: Hello = {
      protocolVersion,
      clusterName: this.#options.clusterName,
      fingerprint: this.#options.fingerprint,
      fingerprintFields: this.#options.fingerprintFields,
      name: this.#options.self.name,
      incarnation: this.#options.self.incarnation,
      nonce: conn.nonce,
      auth: new Uint8Array(0),
      ...this.#localState(),
    };
    const secret = this.#options.secret;
    if (secret !== undefined) hello.auth = helloAuth(secret, challenge, link.name, hello);
    this.#write(link, socket, encodeHelloFrame(hello));
  }

  #onOutboundData(conn: OutboundConn, chunk: Uint8Array): void {
    const link = conn.link;
    const frames = this.#decode(conn.decoder, chunk, (reason) => {
      if (link.conn === conn) this.#disconnect(link, reason, "warn");
    });
    for (const frame of frames) {
      if (conn.closed || link.conn !== conn) return;
      if (link.state === "handshaking" && conn.challenge === null && frame.kind === "challenge") {
        this.#sendHello(conn, frame.challenge.nonce);
        continue;
      }
      if (
        link.state !== "handshaking" || conn.challenge === null || frame.kind !== "helloReply"
      ) {
        this.#disconnect(link, `Unexpected ${frame.kind} frame from the peer`, "warn");
        return;
      }
      this.#onHelloReply(conn, frame.reply);
    }
  }

  /** #onHelloReply checks the acceptor's answer to our Hello: its proof, then its verdict. */
  #onHelloReply(conn: OutboundConn, reply: HelloReply): void {
    const link = conn.link;
    assert(conn.challenge !== null && conn.nonce !== null, "a reply follows our hello");
    const auth = checkReplyAuth(this.#options.secret, conn.nonce, conn.challenge, reply);
    if (!auth.ok) {
      // Nothing in an unproven reply is believed (a forged "fenced" would make us take
      // a new incarnation); what it claims is logged, for the operator.
      const claim = reply.accepted ? "accepted" : `refused: ${reply.reason ?? "no reason given"}`;
      const reason = `Refused peer "${link.name}" at ${conn.address}: ${auth.reason}`;
      this.#log(link.lastError === reason ? "debug" : "warn", reason, {
        peer: link.name,
        address: conn.address,
        unverifiedReply: claim,
      });
      link.lastError = reason;
      this.#disconnect(link, reason, "none");
      return;
    }
    if (reply.name !== link.name) {
      this.#disconnect(
        link,
        `The member at ${conn.address} is "${reply.name}", not "${link.name}"`,
        "warn",
      );
      return;
    }
    if (!reply.accepted) {
      const differingFields = reply.differingFields ?? [];
      const reason = `Peer "${link.name}" refused our handshake: ${reply.reason ?? "no reason"}`;
      // Said once as a warning; the same refusal on every redial after it, at debug.
      this.#log(link.lastError === reason ? "debug" : "warn", reason, {
        peer: link.name,
        address: conn.address,
        differingFields,
        fenced: reply.fenced,
      });
      link.lastError = reason;
      this.#disconnect(link, reason, "none");
      const kind = reply.fenced ? "fenced" : reply.rolledBack ? "rolled-back" : null;
      for (const handler of this.#refusedHandlers) {
        handler(link.name, reply.reason ?? reason, kind);
      }
      return;
    }
    this.#handshakes.set(link.name, {
      name: link.name,
      incarnation: reply.incarnation,
      hasState: reply.hasState,
      recovering: reply.recovering,
      at: Date.now(),
    });
    this.#clearTimer(link, "handshakeTimer");
    link.incarnation = reply.incarnation;
    link.state = "established";
    link.failures = 0;
    link.lastError = null;
    this.#log("info", `Connected to peer "${link.name}" at ${conn.address}`, {
      peer: link.name,
      address: conn.address,
      incarnation: reply.incarnation,
    });
    this.#flush(link);
  }

  /**
   * #flush writes the pending remainder, then the queue in batch frames, until the queue
   * is empty or the socket pushes back (the drain handler calls #flush again).
   */
  #flush(link: PeerLink): void {
    const socket = link.conn?.socket;
    if (socket === undefined || socket === null) return;
    if (link.pending !== null && !this.#write(link, socket, link.pending)) return;
    if (link.state !== "established") return;
    const queue = link.queue;
    while (queue.length > 0) {
      const batch: Message[] = [];
      let bytes = 0;
      while (queue.length > 0 && batch.length < batchMessagesMax) {
        const size = queue.peekBytes();
        if (batch.length > 0 && bytes + size > batchBytesTarget) break;
        batch.push(queue.shift());
        bytes += size;
      }
      let frame: Uint8Array;
      try {
        frame = encodeMessagesFrame(batch);
      } catch (error: unknown) {
        // Only a message that alone exceeds frameBytesMax gets here: the consensus must
        // bound its appendEntries and snapshot chunks below it.
        if (!(error instanceof RangeError)) throw error;
        link.droppedMessages += batch.length;
        this.#log("error", `Dropped a message to "${link.name}": ${error.message}`, {
          peer: link.name,
          type: batch[0]?.type,
        });
        continue;
      }
      if (!this.#write(link, socket, frame)) return;
    }
  }

  /** #write writes bytes, keeping what the socket did not take; true when all went. */
  #write(link: PeerLink, socket: Socket<OutboundConn>, bytes: Uint8Array): boolean {
    const written = socket.write(bytes);
    if (written === bytes.byteLength) {
      link.pending = null;
      return true;
    }
    if (written < 0) {
      // The socket is closing; its close handler tears the link down.
      link.pending = null;
      return false;
    }
    if (link.pending === null || written > 0) link.pendingSinceMs = Date.now();
    link.pending = bytes.subarray(written);
    return false;
  }

  /**
   * #disconnect ends the link's connection, reports a lost established link, and redials:
   * after the backoff, or at once for an address change. logLevel "none" when the caller
   * has logged the reason already.
   */
  #disconnect(
    link: PeerLink,
    reason: string,
    logLevel: LogLevel | "none" = "info",
    redialNow = false,
    quiet = false,
  ): void {
    const conn = link.conn;
    const wasEstablished = link.state === "established";
    if (conn !== null) this.#endOutbound(conn);
    link.conn = null;
    link.state = "idle";
    link.pending = null;
    this.#clearTimer(link, "handshakeTimer");
    if (this.#closed) return;
    const fields = { peer: link.name, address: conn?.address ?? link.address, reason };
    if (wasEstablished) {
      const level = logLevel === "none" ? "info" : logLevel;
      this.#log(level, `Lost the link to peer "${link.name}": ${reason}`, fields);
    } else if (logLevel !== "none") {
      // A peer that stays down fails every dial: say so once, then at debug level.
      const level = link.lastError === reason ? "debug" : logLevel;
      this.#log(level, `Cannot link to peer "${link.name}": ${reason}`, fields);
    }
    link.lastError = reason;
    if (wasEstablished && !quiet) {
      for (const handler of this.#peerDownHandlers) handler(link.name);
    }
    // A handler may have closed the transport or moved the peer (and redialled).
    if (this.#closed || link.conn !== null) return;
    if (redialNow) {
      this.#clearTimer(link, "redialTimer");
      this.#dial(link);
    } else {
      this.#scheduleRedial(link);
    }
  }

  #scheduleRedial(link: PeerLink): void {
    if (this.#closed || link.redialTimer !== null) return;
    const delayMs = backoffMs(link.failures, this.#options.random);
    link.failures++;
    link.redialTimer = setTimeout(() => {
      link.redialTimer = null;
      if (link.conn === null) this.#dial(link);
    }, delayMs);
  }

  #endOutbound(conn: OutboundConn): void {
    conn.closed = true;
    conn.socket?.end();
  }

  #clearTimer(link: PeerLink, timer: "redialTimer" | "handshakeTimer"): void {
    const handle = link[timer];
    if (handle !== null) clearTimeout(handle);
    link[timer] = null;
  }

  // ---- Inbound -------------------------------------------------------------------------

  readonly #inboundHandlers: SocketHandler<InboundConn | undefined> = {
    binaryType: "uint8array",
    open: (socket) => this.#onInboundOpen(socket),
    data: (socket, chunk) => {
      if (socket.data !== undefined) this.#onInboundData(socket.data, chunk);
    },
    close: (socket) => {
      const conn = socket.data;
      if (conn === undefined) return;
      if (!conn.closed && conn.peerName !== null) {
        this.#log("info", `Peer "${conn.peerName}" closed its link`, {
          peer: conn.peerName,
          remoteAddress: conn.remoteAddress,
        });
      }
      this.#forgetInbound(conn);
    },
    // TLS only: the protocol starts once the peer's certificate is checked.
    handshake: (socket, success, authorizationError) => {
      const conn = socket.data;
      if (conn === undefined || conn.closed) return;
      const failure = this.#tlsFailure(success, authorizationError, "acceptor");
      if (failure !== null) {
        this.#rejectInbound(conn, failure);
        return;
      }
      this.#sendChallenge(conn);
    },
  };

  #sendChallenge(conn: InboundConn): void {
    conn.socket.write(encodeChallengeFrame({ nonce: conn.challenge }));
  }

  #onInboundOpen(socket: Socket<InboundConn | undefined>): void {
    const remoteAddress = formatAddress(socket.remoteAddress, socket.remotePort);
    if (this.#closed) {
      socket.end();
      return;
    }
    let pending = 0;
    for (const conn of this.#inbound) if (conn.peerName === null) pending++;
    if (pending >= inboundPendingMax) {
      this.#log("warn", `Refused a connection from ${remoteAddress}: too many handshakes`, {
        remoteAddress,
        pendingMax: inboundPendingMax,
      });
      socket.end();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, keepAliveIdleMs);
    const conn: InboundConn = {
      kind: "inbound",
      socket,
      remoteAddress,
      // Small until the peer's hello is accepted; then full-size message frames.
      decoder: new FrameDecoder(handshakeFrameBytesMax),
      challenge: crypto.getRandomValues(new Uint8Array(nonceBytes)),
      peerName: null,
      incarnation: null,
      recovering: false,
      helloTimer: null,
      closed: false,
    };
    conn.helloTimer = setTimeout(() => {
      conn.helloTimer = null;
      this.#rejectInbound(conn, `No hello within ${handshakeTimeoutMs} ms`);
    }, handshakeTimeoutMs);
    socket.data = conn;
    this.#inbound.add(conn);
    // Over TLS nothing can be written before the TLS handshake: the handler sends it then.
    if (this.#options.tls === undefined) this.#sendChallenge(conn);
  }

  #onInboundData(conn: InboundConn, chunk: Uint8Array): void {
    const frames = this.#decode(conn.decoder, chunk, (reason) => {
      this.#rejectInbound(conn, reason);
    });
    for (const frame of frames) {
      if (conn.closed || this.#closed) return;
      if (conn.peerName === null) {
        if (frame.kind !== "hello") {
          this.#rejectInbound(conn, `Expected a hello frame, got ${frame.kind}`);
          return;
        }
        this.#onHello(conn, frame.hello);
        continue;
      }
      if (frame.kind !== "messages") {
        this.#rejectInbound(conn, `Unexpected ${frame.kind} frame after the handshake`);
        return;
      }
      // Check the whole frame before delivering any of it.
      for (const message of frame.messages) {
        if (message.from !== conn.peerName) {
          this.#rejectInbound(
            conn,
            `Message from "${message.from}" on the link of "${conn.peerName}"`,
          );
          return;
        }
        if (message.to !== this.#options.self.name) {
          this.#rejectInbound(conn, `Message addressed to "${message.to}", not to us`);
          return;
        }
      }
      const sender: Sender = { incarnation: conn.incarnation ?? "", recovering: conn.recovering };
      for (const message of frame.messages) {
        for (const handler of this.#messageHandlers) handler(message, sender);
      }
    }
  }

  #onHello(conn: InboundConn, hello: Hello): void {
    const self = this.#options.self;
    // Authentication first (another protocol version is refused by checkHello below, for
    // what it is): nothing about this node or its config goes to an unproven peer.
    if (hello.protocolVersion === protocolVersion) {
      const auth = checkHelloAuth(this.#options.secret, conn.challenge, self.name, hello);
      if (!auth.ok) {
        const reason = this.#misdirected(conn, hello) ?? auth.reason;
        this.#warnRefusal(conn, `Refused peer from ${conn.remoteAddress}: ${reason}`, reason, {
          remoteAddress: conn.remoteAddress,
          claimedName: hello.name,
        });
        this.#writeReply(conn, hello, {
          accepted: false,
          reason,
          name: self.name,
          incarnation: self.incarnation,
          hasState: false,
          recovering: false,
          fenced: false,
          rolledBack: false,
        });
        this.#endInbound(conn);
        return;
      }
    }
    const local = this.#localState();
    const refusal = checkHello(hello, this.#local).ok
      ? this.#options.checkPeer?.(hello) ?? null
      : null;
    if (refusal !== null) {
      this.#log(
        "warn",
        `Refused peer "${hello.name}" from ${conn.remoteAddress} (${refusal.kind}): ${refusal.reason}`,
        {
          peer: hello.name,
          remoteAddress: conn.remoteAddress,
          incarnation: hello.incarnation,
          refusal: refusal.kind,
        },
      );
      this.#writeReply(conn, hello, {
        accepted: false,
        reason: refusal.reason,
        name: self.name,
        incarnation: self.incarnation,
        ...local,
        fenced: refusal.kind === "fenced",
        rolledBack: refusal.kind === "rolled-back",
      });
      this.#endInbound(conn);
      return;
    }
    const check = checkHello(hello, this.#local);
    if (!check.ok) {
      this.#log(
        "warn",
        `Refused the handshake of "${hello.name}" from ${conn.remoteAddress}: ${check.reason}`,
        {
          peer: hello.name,
          remoteAddress: conn.remoteAddress,
          differingFields: check.differingFields,
        },
      );
      this.#writeReply(conn, hello, {
        accepted: false,
        reason: check.reason,
        differingFields: check.differingFields,
        name: self.name,
        incarnation: self.incarnation,
        ...local,
        fenced: false,
        rolledBack: false,
      });
      this.#endInbound(conn);
      return;
    }
    if (conn.helloTimer !== null) clearTimeout(conn.helloTimer);
    conn.helloTimer = null;
    conn.peerName = hello.name;
    conn.decoder.setFrameBytesMax(frameBytesMax);
    conn.incarnation = hello.incarnation;
    conn.recovering = hello.recovering;
    this.#handshakes.set(hello.name, {
      name: hello.name,
      incarnation: hello.incarnation,
      hasState: hello.hasState,
      recovering: hello.recovering,
      at: Date.now(),
    });
    const previous = this.#inboundByName.get(hello.name);
    if (previous !== undefined) {
      // The peer redialled before we saw its old connection close (a restart), or two
      // live hosts claim one name (R8); the newer connection wins, and with another
      // incarnation that is worth a warning.
      const sameIncarnation = previous.incarnation === hello.incarnation;
      this.#log(
        sameIncarnation ? "info" : "warn",
        sameIncarnation
          ? `Peer "${hello.name}" opened a new link; closing its previous one`
          : `Peer "${hello.name}" linked again as incarnation "${hello.incarnation}" while incarnation "${previous.incarnation}" was still linked; closing the older link`,
        {
          peer: hello.name,
          remoteAddress: conn.remoteAddress,
          previousRemoteAddress: previous.remoteAddress,
          incarnation: hello.incarnation,
          previousIncarnation: previous.incarnation,
        },
      );
      this.#endInbound(previous);
    }
    this.#inboundByName.set(hello.name, conn);
    const link = this.#links.get(hello.name);
    if (link !== undefined) link.incarnation = hello.incarnation;
    this.#writeReply(conn, hello, {
      accepted: true,
      name: self.name,
      incarnation: self.incarnation,
      ...local,
      fenced: false,
      rolledBack: false,
    });
    this.#log("info", `Accepted the link of peer "${hello.name}" from ${conn.remoteAddress}`, {
      peer: hello.name,
      remoteAddress: conn.remoteAddress,
      incarnation: hello.incarnation,
    });
  }

  /** #writeReply signs a reply over the dialler's nonce (with a secret) and sends it. */
  #writeReply(conn: InboundConn, hello: Hello, fields: Omit<HelloReply, "auth">): void {
    const secret = this.#options.secret;
    const reply: HelloReply = { ...fields, auth: new Uint8Array(0) };
    if (secret !== undefined) reply.auth = replyAuth(secret, hello.nonce, conn.challenge, reply);
    conn.socket.write(encodeHelloReplyFrame(reply));
  }

  /**
   * #misdirected explains a Hello that failed authentication because it was signed for
   * another member (the dialler has a stale address for it), or returns null.
   */
  #misdirected(conn: InboundConn, hello: Hello): string | null {
    const secret = this.#options.secret;
    if (secret === undefined || hello.auth.byteLength === 0) return null;
    for (const name of this.#local.memberNames) {
      if (name === this.#options.self.name) continue;
      if (authEqual(hello.auth, helloAuth(secret, conn.challenge, name, hello))) {
        return `the peer meant to reach "${name}", not us (it has a stale address for "${name}")`;
      }
    }
    return null;
  }

  /**
   * #warnRefusal logs a refused handshake as a warning once per remote host and reason
   * every refusalWarnIntervalMs, at debug level in between: a peer with the wrong secret
   * redials every few seconds, and a flood must not flood the log.
   */
  #warnRefusal(
    conn: InboundConn,
    message: string,
    reason: string,
    fields: Record<string, unknown>,
  ): void {
    const key = `${conn.socket.remoteAddress} ${reason}`;
    const now = Date.now();
    const last = this.#refusalWarnedAt.get(key);
    const warn = last === undefined || now - last >= refusalWarnIntervalMs;
    if (warn) {
      if (this.#refusalWarnedAt.size >= refusalWarnKeysMax) this.#refusalWarnedAt.clear();
      this.#refusalWarnedAt.set(key, now);
    }
    this.#log(warn ? "warn" : "debug", message, fields);
  }

  /** #rejectInbound closes an inbound connection that broke the protocol. */
  #rejectInbound(conn: InboundConn, reason: string): void {
    if (conn.closed) return;
    this.#log("warn", `Closed the connection from ${conn.remoteAddress}: ${reason}`, {
      remoteAddress: conn.remoteAddress,
      peer: conn.peerName,
      reason,
    });
    this.#endInbound(conn);
  }

  #endInbound(conn: InboundConn): void {
    conn.closed = true;
    conn.socket.end();
    this.#forgetInbound(conn);
  }

  #forgetInbound(conn: InboundConn): void {
    conn.closed = true;
    if (conn.helloTimer !== null) clearTimeout(conn.helloTimer);
    conn.helloTimer = null;
    this.#inbound.delete(conn);
    if (conn.peerName !== null && this.#inboundByName.get(conn.peerName) === conn) {
      this.#inboundByName.delete(conn.peerName);
    }
  }

  // ---- Shared --------------------------------------------------------------------------

  /** #decode returns the frames a chunk completes; on bad input it calls fail instead. */
  #decode(decoder: FrameDecoder, chunk: Uint8Array, fail: (reason: string) => void): Frame[] {
    try {
      return decoder.push(chunk).map(decodeFrame);
    } catch (error: unknown) {
      if (error instanceof RangeError || error instanceof DecodeError) {
        fail(error.message);
        return [];
      }
      throw error;
    }
  }

  #log(level: LogLevel, message: string, fields: Record<string, unknown>): void {
    this.#options.log(level, message, { self: this.#options.self.name, ...fields });
  }
}

/** MessageQueue is a bounded FIFO ring of messages with their encoded-size bounds. */
class MessageQueue {
  readonly #messages: Array<Message | undefined>;
  readonly #bytes: number[];
  readonly #bytesMax: number;
  #head = 0;
  #length = 0;
  #totalBytes = 0;

  constructor(messagesMax: number, bytesMax: number) {
    this.#messages = new Array<Message | undefined>(messagesMax).fill(undefined);
    this.#bytes = new Array<number>(messagesMax).fill(0);
    this.#bytesMax = bytesMax;
  }

  get length(): number {
    return this.#length;
  }

  /** push appends unless that would exceed a bound; false means dropped. */
  push(message: Message, bytes: number): boolean {
    const capacity = this.#messages.length;
    if (this.#length === capacity || this.#totalBytes + bytes > this.#bytesMax) return false;
    const slot = (this.#head + this.#length) % capacity;
    this.#messages[slot] = message;
    this.#bytes[slot] = bytes;
    this.#length++;
    this.#totalBytes += bytes;
    return true;
  }

  peekBytes(): number {
    assert(this.#length > 0, "peek on an empty queue");
    return this.#bytes[this.#head]!;
  }

  shift(): Message {
    const message = this.#messages[this.#head];
    assert(this.#length > 0 && message !== undefined, "shift on an empty queue");
    this.#messages[this.#head] = undefined;
    this.#totalBytes -= this.#bytes[this.#head]!;
    this.#head = (this.#head + 1) % this.#messages.length;
    this.#length--;
    return message;
  }
}

/**
 * backoffMs is the redial delay after `failures` consecutive failures: exponential from
 * reconnectBackoffMinMs, capped at reconnectBackoffMaxMs, with "equal jitter" (a uniform
 * draw from the upper half) so peers that failed together do not redial together.
 */
export function backoffMs(failures: number, random: () => number): number {
  const ceilingMs = Math.min(
    reconnectBackoffMaxMs,
    reconnectBackoffMinMs * 2 ** Math.min(failures, 30),
  );
  return ceilingMs / 2 + random() * (ceilingMs / 2);
}

function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
