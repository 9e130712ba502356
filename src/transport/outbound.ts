// The dialling side: one outbound link per peer, its queue, dial, backoff and the client
// half of the handshake. Each member sends to a peer only on its own outbound link.
//
// Outbound link lifecycle:
//   idle --dial--> connecting --open--> handshaking: wait for the peer's Challenge, send
//   our Hello signed over it, check the peer's signed HelloReply --accepted--> established
//   any state --close, error, refusal, timeout, address change--> idle, redial after a
//   jittered exponential backoff (reset by an accepted handshake).

import type { Socket, SocketHandler, TLSOptions } from "bun";
import { assert } from "../lib/assert.ts";
import type { Message, NodeId } from "../consensus/types.ts";
import { encodeHelloFrame, encodeMessagesFrame, messageBytesUpperBound } from "./codec.ts";
import { decodeFrames, formatAddress, tlsFailure, type TransportContext } from "./context.ts";
import { FrameDecoder } from "./frame.ts";
import {
  anonymousName,
  checkReplyAuth,
  formatProtocols,
  type Hello,
  helloAuth,
  type HelloReply,
  isVersionRefusal,
  type ProtocolRange,
  protocolVersion,
  protocolVersions,
} from "./handshake.ts";
import {
  batchBytesTarget,
  batchMessagesMax,
  handshakeFrameBytesMax,
  handshakeTimeoutMs,
  keepAliveIdleMs,
  nonceBytes,
  outboundQueueBytesMax,
  outboundQueueMessagesMax,
  reconnectBackoffMaxMs,
  reconnectBackoffMinMs,
  writeStallMsMax,
} from "./limits.ts";
import type { LogLevel, PeerAddress, PeerRefusal } from "./options.ts";
import { MessageQueue } from "./queue.ts";

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

/** PeerLink is our outbound side of one peer: its queue and its current connection. */
export class PeerLink {
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
  /**
   * The protocol version our next Hello proposes: our highest, one lower after each
   * version refusal, our highest again after a link is lost or refused for good.
   */
  proposedVersion: number;
  /** The version of the established link (the one the peer accepted), else null. */
  protocolVersion: number | null = null;

  constructor(address: PeerAddress, spoken: ProtocolRange) {
    this.name = address.name;
    this.host = address.host;
    this.port = address.port;
    this.proposedVersion = spoken.max;
  }

  get address(): string {
    return formatAddress(this.host, this.port);
  }
}

/** OutboundEvents is what the dialling side reports to the transport. */
export interface OutboundEvents {
  /** A peer refused our handshake; kind says if we were fenced or rolled back. */
  refused(name: NodeId, reason: string, kind: PeerRefusal["kind"] | null): void;
  /** An established link was lost. */
  peerDown(name: NodeId): void;
}

/** Outbound owns the link to every peer: its queue, its connection and its redials. */
export class Outbound {
  readonly #ctx: TransportContext;
  readonly #events: OutboundEvents;
  /** One link per peer, in the configured order. */
  readonly links = new Map<NodeId, PeerLink>();

  constructor(ctx: TransportContext, peers: readonly PeerAddress[], events: OutboundEvents) {
    this.#ctx = ctx;
    this.#events = events;
    const self = ctx.options.self.name;
    for (const peer of peers) {
      assert(peer.name !== self, `peers must not include self "${peer.name}"`);
      assert(!this.links.has(peer.name), `peer "${peer.name}" is listed twice`);
      this.links.set(peer.name, new PeerLink(peer, this.#spoken()));
    }
  }

  dialAll(): void {
    for (const link of this.links.values()) this.#dial(link);
  }

  /** send queues a message for its peer and schedules a flush; see TcpTransport.send. */
  send(message: Message): void {
    const link = this.links.get(message.to);
    if (link === undefined) {
      this.#ctx.log("warn", `Dropped a ${message.type} message to unknown member "${message.to}"`, {
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

  /** noteIncarnation records the incarnation a peer presented on its inbound link. */
  noteIncarnation(name: NodeId, incarnation: string): void {
    const link = this.links.get(name);
    if (link !== undefined) link.incarnation = incarnation;
  }

  /**
   * setAddress points a peer's link at a new address; when it differs, the link is torn
   * down and, once the transport started, redialled at once.
   */
  setAddress(name: NodeId, host: string, port: number, started: boolean): void {
    const link = this.links.get(name);
    if (link === undefined) throw new RangeError(`Unknown peer "${name}"`);
    if (link.host === host && link.port === port) return;
    const previous = link.address;
    link.host = host;
    link.port = port;
    this.#ctx.log("info", `Peer "${name}" moved from ${previous} to ${link.address}`, {
      peer: name,
      address: link.address,
      previousAddress: previous,
    });
    if (!started || this.#ctx.isClosed()) return;
    link.failures = 0;
    if (link.conn !== null) {
      this.#disconnect(link, `Address changed to ${link.address}`, "info", true);
    } else {
      this.#clearTimer(link, "redialTimer");
      this.#dial(link);
    }
  }

  /** rehandshake redials every link at once; not a peer failure (no peerDown). */
  rehandshake(reason: string): void {
    for (const link of this.links.values()) {
      link.failures = 0;
      if (link.conn !== null) {
        this.#disconnect(link, reason, "info", true, true);
      } else {
        this.#clearTimer(link, "redialTimer");
        this.#dial(link);
      }
    }
  }

  /** close ends every connection and stops redialling. */
  close(): void {
    for (const link of this.links.values()) {
      this.#clearTimer(link, "redialTimer");
      this.#clearTimer(link, "handshakeTimer");
      if (link.conn !== null) this.#end(link.conn);
      link.conn = null;
      link.state = "idle";
      link.pending = null;
    }
  }

  readonly #handlers: SocketHandler<OutboundConn> = {
    binaryType: "uint8array",
    open: (socket) => this.#onOpen(socket),
    data: (socket, chunk) => this.#onData(socket.data, chunk),
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
      const failure = tlsFailure(this.#ctx.options, success, authorizationError, "dialler");
      if (failure !== null) this.#disconnect(conn.link, failure, "warn");
    },
  };

  #dial(link: PeerLink): void {
    if (this.#ctx.isClosed()) return;
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
        this.#disconnect(link, `Not linked within ${handshakeTimeoutMs} ms: ${stage(conn)}`);
      }
    }, handshakeTimeoutMs);
    this.#connect(link, conn);
  }

  #connect(link: PeerLink, conn: OutboundConn): void {
    const tls = this.#ctx.options.tls;
    Bun.connect<OutboundConn>({
      hostname: link.host,
      port: link.port,
      data: conn,
      socket: this.#handlers,
      // Checked in the handshake handler (tlsFailure), not by Bun: see context.ts.
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

  #onOpen(socket: Socket<OutboundConn>): void {
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
    const options = this.#ctx.options;
    conn.challenge = challenge;
    conn.nonce = crypto.getRandomValues(new Uint8Array(nonceBytes));
    const hello: Hello = {
      protocolVersion: link.proposedVersion,
      clusterName: options.clusterName,
      fingerprint: options.fingerprint,
      fingerprintFields: options.fingerprintFields,
      name: options.self.name,
      incarnation: options.self.incarnation,
      nonce: conn.nonce,
      auth: new Uint8Array(0),
      ...this.#ctx.localState(),
    };
    const secret = options.secret;
    if (secret !== undefined) hello.auth = helloAuth(secret, challenge, link.name, hello);
    this.#write(link, socket, encodeHelloFrame(hello));
  }

  #onData(conn: OutboundConn, chunk: Uint8Array): void {
    const link = conn.link;
    const frames = decodeFrames(conn.decoder, chunk, (reason) => {
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
    const auth = checkReplyAuth(this.#ctx.options.secret, conn.nonce, conn.challenge, reply);
    if (!auth.ok) {
      this.#onUnprovenReply(conn, reply, auth.reason);
      return;
    }
    // A refusal that does not say who refused (we did not prove ourselves to it) is
    // still a refusal; any other reply must come from the member we dialled.
    const anonymous = !reply.accepted && reply.name === anonymousName;
    if (reply.name !== link.name && !anonymous) {
      this.#disconnect(
        link,
        `The member at ${conn.address} is "${reply.name}", not "${link.name}"`,
        "warn",
      );
      return;
    }
    if (!reply.accepted) {
      this.#onRefusal(conn, reply);
      return;
    }
    this.#established(conn, reply);
  }

  /**
   * #onUnprovenReply drops a reply without a valid proof. Nothing in it is believed (a
   * forged "fenced" would make us take a new incarnation); what it claims is logged, for
   * the operator.
   */
  #onUnprovenReply(conn: OutboundConn, reply: HelloReply, why: string): void {
    const link = conn.link;
    const claim = reply.accepted ? "accepted" : `refused: ${reply.reason ?? "no reason given"}`;
    const reason = `Refused peer "${link.name}" at ${conn.address}: ${why}`;
    this.#ctx.repeats.note(`unproven ${link.name} ${reason}`, "warn", reason, {
      peer: link.name,
      address: conn.address,
      unverifiedReply: claim,
    });
    link.lastError = reason;
    this.#disconnect(link, reason, "none");
  }

  /**
   * #onRefusal reports a proven refusal of our handshake, and why, to the node. A refusal
   * of the version proposed is first answered by proposing the next lower one, at once.
   */
  #onRefusal(conn: OutboundConn, reply: HelloReply): void {
    const link = conn.link;
    const spoken = this.#spoken();
    if (isVersionRefusal(reply.reason) && link.proposedVersion > spoken.min) {
      const refused = link.proposedVersion;
      link.proposedVersion--;
      this.#ctx.log(
        "info",
        `Peer "${link.name}" does not speak protocol ${refused}; trying ${link.proposedVersion}`,
        { peer: link.name, address: conn.address, reason: reply.reason },
      );
      this.#disconnect(link, `Protocol version ${refused} refused`, "none", true, true);
      return;
    }
    link.proposedVersion = spoken.max;
    const differingFields = reply.differingFields ?? [];
    // A version refusal names the versions the peer speaks (or, from a keel of before
    // negotiation, its one version); ours complete the picture.
    const ours = isVersionRefusal(reply.reason)
      ? `; this member speaks protocol ${formatProtocols(spoken)}`
      : "";
    const reason = `Peer "${link.name}" refused our handshake: ${
      reply.reason ?? "no reason"
    }${ours}`;
    // Said once as a warning; the same refusal on every redial after it, counted.
    this.#ctx.repeats.note(`refused-by ${link.name} ${reason}`, "warn", reason, {
      peer: link.name,
      address: conn.address,
      differingFields,
      fenced: reply.fenced,
    });
    link.lastError = reason;
    this.#disconnect(link, reason, "none");
    const kind = reply.fenced ? "fenced" : reply.rolledBack ? "rolled-back" : null;
    this.#events.refused(link.name, reply.reason ?? reason, kind);
  }

  #established(conn: OutboundConn, reply: HelloReply): void {
    const link = conn.link;
    this.#ctx.handshakes.set(link.name, {
      name: link.name,
      incarnation: reply.incarnation,
      hasState: reply.hasState,
      recovering: reply.recovering,
      at: Date.now(),
    });
    this.#clearTimer(link, "handshakeTimer");
    link.incarnation = reply.incarnation;
    link.protocolVersion = link.proposedVersion;
    link.state = "established";
    link.failures = 0;
    link.lastError = null;
    this.#ctx.log("info", `Connected to peer "${link.name}" at ${conn.address}`, {
      peer: link.name,
      address: conn.address,
      incarnation: reply.incarnation,
      protocolVersion: link.protocolVersion,
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
    while (link.queue.length > 0) {
      const frame = this.#nextFrame(link);
      if (frame !== null && !this.#write(link, socket, frame)) return;
    }
  }

  /** #nextFrame takes the next batch off the queue and encodes it; null if it was dropped. */
  #nextFrame(link: PeerLink): Uint8Array | null {
    const queue = link.queue;
    const batch: Message[] = [];
    let bytes = 0;
    while (queue.length > 0 && batch.length < batchMessagesMax) {
      const size = queue.peekBytes();
      if (batch.length > 0 && bytes + size > batchBytesTarget) break;
      batch.push(queue.shift());
      bytes += size;
    }
    try {
      return encodeMessagesFrame(batch);
    } catch (error: unknown) {
      // Only a message that alone exceeds frameBytesMax gets here: the consensus must
      // bound its appendEntries and snapshot chunks below it.
      if (!(error instanceof RangeError)) throw error;
      link.droppedMessages += batch.length;
      this.#ctx.log("error", `Dropped a message to "${link.name}": ${error.message}`, {
        peer: link.name,
        type: batch[0]?.type,
      });
      return null;
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
   * has logged the reason already; quiet: not a peer failure (no peerDown).
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
    if (conn !== null) this.#end(conn);
    link.conn = null;
    link.state = "idle";
    // A lost link redials at our highest version: the peer may have been upgraded.
    if (wasEstablished) link.proposedVersion = this.#spoken().max;
    link.protocolVersion = null;
    link.pending = null;
    this.#clearTimer(link, "handshakeTimer");
    if (this.#ctx.isClosed()) return;
    this.#logDisconnect(link, conn?.address ?? link.address, reason, logLevel, wasEstablished);
    link.lastError = reason;
    if (wasEstablished && !quiet) this.#events.peerDown(link.name);
    // A handler may have closed the transport or moved the peer (and redialled).
    if (this.#ctx.isClosed() || link.conn !== null) return;
    if (redialNow) {
      this.#clearTimer(link, "redialTimer");
      this.#dial(link);
    } else {
      this.#scheduleRedial(link);
    }
  }

  #logDisconnect(
    link: PeerLink,
    address: string,
    reason: string,
    logLevel: LogLevel | "none",
    wasEstablished: boolean,
  ): void {
    const fields = { peer: link.name, address, reason };
    if (wasEstablished) {
      const level = logLevel === "none" ? "info" : logLevel;
      this.#ctx.log(level, `Lost the link to peer "${link.name}": ${reason}`, fields);
    } else if (logLevel !== "none") {
      // A peer that stays down fails every dial: say so once, then at debug level.
      const level = link.lastError === reason ? "debug" : logLevel;
      this.#ctx.log(level, `Cannot link to peer "${link.name}": ${reason}`, fields);
    }
  }

  /** #spoken is the protocol versions this member speaks. */
  #spoken(): ProtocolRange {
    return this.#ctx.options.protocolVersions ?? protocolVersions;
  }

  #scheduleRedial(link: PeerLink): void {
    if (this.#ctx.isClosed() || link.redialTimer !== null) return;
    const delayMs = backoffMs(link.failures, this.#ctx.options.random);
    link.failures++;
    link.redialTimer = setTimeout(() => {
      link.redialTimer = null;
      if (link.conn === null) this.#dial(link);
    }, delayMs);
  }

  #end(conn: OutboundConn): void {
    conn.closed = true;
    conn.socket?.end();
  }

  #clearTimer(link: PeerLink, timer: "redialTimer" | "handshakeTimer"): void {
    const handle = link[timer];
    if (handle !== null) clearTimeout(handle);
    link[timer] = null;
  }
}

/** stage says how far a dial got when its deadline passed. */
function stage(conn: OutboundConn): string {
  return conn.socket === null
    ? "not connected"
    : conn.challenge === null
    ? `no challenge from the peer (a keel older than protocol ${protocolVersion}?)`
    : "no answer to our hello";
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
