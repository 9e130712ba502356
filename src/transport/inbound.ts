// The accepting side of the peer port: accept, send a Challenge, judge the Hello
// (judge_hello.ts), then deliver the handshaken peer's messages.
//
// A new connection is admitted only within the bounds on pending handshakes (admission.ts:
// per source address, and for strangers in all; a member's address has its own slots).
// It gets our Challenge at once (over TLS: once the TLS handshake is done, within
// handshakeTimeoutMs); it must send a Hello within helloTimeoutMs of it; then only message
// frames, each from the handshaken name and to us. Any violation, malformed or oversized
// frame closes that connection alone and logs a warning with its address; what strangers
// do (before a Hello is accepted) is said once per kind, then counted.

import type { Socket, SocketHandler, TCPSocketListener, TLSOptions } from "bun";
import type { Message, NodeId, Sender } from "../consensus/types.ts";
import { encodeChallengeFrame, encodeHelloReplyFrame, type Frame } from "./codec.ts";
import { decodeFrames, formatAddress, tlsFailure, type TransportContext } from "./context.ts";
import { FrameDecoder } from "./frame.ts";
import { type Hello, type HelloReply, replyAuth } from "./handshake.ts";
import { type HelloVerdict, judgeHello } from "./judge_hello.ts";
import { admit, normalizeHost } from "./admission.ts";
import {
  frameBytesMax,
  handshakeFrameBytesMax,
  handshakeTimeoutMs,
  helloTimeoutMs,
  keepAliveIdleMs,
  nonceBytes,
} from "./limits.ts";

interface InboundConn {
  readonly kind: "inbound";
  readonly socket: Socket<InboundConn | undefined>;
  readonly remoteAddress: string;
  /** The source address, normalized (admission.ts), and whether it is a member's. */
  readonly host: string;
  readonly member: boolean;
  /** Counted among the pending handshakes: admitted, no Hello accepted yet. */
  pending: boolean;
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

/** StrangerFault is how a connection that has not handshaken broke the protocol. */
type StrangerFault = "tls" | "no-hello" | "junk";

/** InboundEvents is what the accepting side reports to the transport. */
export interface InboundEvents {
  message(message: Message, sender: Sender): void;
  /** A peer's Hello was accepted: it is linked to us as this incarnation. */
  accepted(name: NodeId, incarnation: string): void;
}

/** Inbound listens on the peer port and serves every connection dialled to it. */
export class Inbound {
  readonly #ctx: TransportContext;
  readonly #events: InboundEvents;
  readonly #conns = new Set<InboundConn>();
  /** The accepted inbound connection of each peer name. */
  readonly #byName = new Map<NodeId, InboundConn>();
  #listener: TCPSocketListener<InboundConn | undefined> | null = null;
  readonly #isMemberHost: (host: string) => boolean;
  /** Pending handshakes by source address, and from strangers in all. */
  readonly #pendingByHost = new Map<string, number>();
  #pendingStrangers = 0;

  /** isMemberHost says whether a normalized address is a configured member's, resolved. */
  constructor(
    ctx: TransportContext,
    events: InboundEvents,
    isMemberHost: (host: string) => boolean,
  ) {
    this.#ctx = ctx;
    this.#events = events;
    this.#isMemberHost = isMemberHost;
  }

  /** listen opens the peer port; throws with the address and why when it cannot. */
  listen(host: string, port: number): void {
    const tls = this.#ctx.options.tls;
    try {
      this.#listener = Bun.listen<InboundConn | undefined>({
        hostname: host,
        port,
        data: undefined,
        socket: this.#handlers,
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
      throw new Error(`Cannot listen for peers on ${formatAddress(host, port)}: ${why}`, {
        cause: error,
      });
    }
  }

  /** closeInbound closes the inbound links of a member (all, or one incarnation's). */
  closeInbound(name: NodeId, incarnation?: string): void {
    for (const conn of [...this.#conns]) {
      if (
        conn.peerName === name && (incarnation === undefined || conn.incarnation === incarnation)
      ) {
        this.#end(conn);
      }
    }
  }

  /** close closes every inbound connection and the listener. */
  close(): void {
    for (const conn of this.#conns) this.#end(conn);
    this.#listener?.stop(true);
    this.#listener = null;
  }

  readonly #handlers: SocketHandler<InboundConn | undefined> = {
    binaryType: "uint8array",
    open: (socket) => this.#onOpen(socket),
    data: (socket, chunk) => {
      if (socket.data !== undefined) this.#onData(socket.data, chunk);
    },
    close: (socket) => {
      const conn = socket.data;
      if (conn === undefined) return;
      if (!conn.closed && conn.peerName !== null) {
        this.#ctx.log("info", `Peer "${conn.peerName}" closed its link`, {
          peer: conn.peerName,
          remoteAddress: conn.remoteAddress,
        });
      }
      this.#forget(conn);
    },
    // TLS only: the protocol starts once the peer's certificate is checked.
    handshake: (socket, success, authorizationError) => {
      const conn = socket.data;
      if (conn === undefined || conn.closed) return;
      const failure = tlsFailure(this.#ctx.options, success, authorizationError, "acceptor");
      if (failure !== null) {
        this.#reject(conn, failure, "tls");
        return;
      }
      this.#sendChallenge(conn);
    },
  };

  #sendChallenge(conn: InboundConn): void {
    conn.socket.write(encodeChallengeFrame({ nonce: conn.challenge }));
    this.#armHelloTimer(conn, helloTimeoutMs);
  }

  #onOpen(socket: Socket<InboundConn | undefined>): void {
    const remoteAddress = formatAddress(socket.remoteAddress, socket.remotePort);
    if (this.#ctx.isClosed()) {
      socket.end();
      return;
    }
    const host = normalizeHost(socket.remoteAddress);
    const member = this.#isMemberHost(host);
    if (!this.#admit(remoteAddress, host, member)) {
      socket.end();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, keepAliveIdleMs);
    const conn: InboundConn = {
      kind: "inbound",
      socket,
      remoteAddress,
      host,
      member,
      pending: false,
      // Small until the peer's hello is accepted; then full-size message frames.
      decoder: new FrameDecoder(handshakeFrameBytesMax),
      challenge: crypto.getRandomValues(new Uint8Array(nonceBytes)),
      peerName: null,
      incarnation: null,
      recovering: false,
      helloTimer: null,
      closed: false,
    };
    this.#holdPending(conn);
    socket.data = conn;
    this.#conns.add(conn);
    // Over TLS nothing can be written before the TLS handshake: the handler sends it then.
    if (this.#ctx.options.tls === undefined) this.#sendChallenge(conn);
    else this.#armHelloTimer(conn, handshakeTimeoutMs);
  }

  /** #admit applies the bounds on pending handshakes (admission.ts); logs a refusal. */
  #admit(remoteAddress: string, host: string, member: boolean): boolean {
    const admission = admit(member, {
      fromHost: this.#pendingByHost.get(host) ?? 0,
      strangers: this.#pendingStrangers,
    });
    if (admission.ok) return true;
    const message = `Refused a connection from ${remoteAddress}: ${admission.reason}`;
    this.#ctx.repeats.note(`too-many ${admission.bound}`, "warn", message, { remoteAddress });
    return false;
  }

  /** #armHelloTimer closes conn unless its Hello is accepted within timeoutMs from now. */
  #armHelloTimer(conn: InboundConn, timeoutMs: number): void {
    if (conn.helloTimer !== null) clearTimeout(conn.helloTimer);
    conn.helloTimer = setTimeout(() => {
      conn.helloTimer = null;
      this.#reject(conn, `No hello within ${timeoutMs} ms`, "no-hello");
    }, timeoutMs);
  }

  #holdPending(conn: InboundConn): void {
    conn.pending = true;
    this.#pendingByHost.set(conn.host, (this.#pendingByHost.get(conn.host) ?? 0) + 1);
    if (!conn.member) this.#pendingStrangers++;
  }

  #releasePending(conn: InboundConn): void {
    if (!conn.pending) return;
    conn.pending = false;
    const count = (this.#pendingByHost.get(conn.host) ?? 0) - 1;
    if (count > 0) this.#pendingByHost.set(conn.host, count);
    else this.#pendingByHost.delete(conn.host);
    if (!conn.member) this.#pendingStrangers--;
  }

  #onData(conn: InboundConn, chunk: Uint8Array): void {
    const frames = decodeFrames(conn.decoder, chunk, (reason) => this.#reject(conn, reason));
    for (const frame of frames) {
      if (conn.closed || this.#ctx.isClosed()) return;
      if (conn.peerName === null) {
        if (frame.kind !== "hello") {
          this.#reject(conn, `Expected a hello frame, got ${frame.kind}`);
          return;
        }
        this.#onHello(conn, frame.hello);
        continue;
      }
      if (!this.#deliver(conn, frame)) return;
    }
  }

  /** #deliver passes on a handshaken peer's messages; false when it broke the protocol. */
  #deliver(conn: InboundConn, frame: Frame): boolean {
    if (frame.kind !== "messages") {
      this.#reject(conn, `Unexpected ${frame.kind} frame after the handshake`);
      return false;
    }
    // Check the whole frame before delivering any of it.
    for (const message of frame.messages) {
      if (message.from !== conn.peerName) {
        this.#reject(conn, `Message from "${message.from}" on the link of "${conn.peerName}"`);
        return false;
      }
      if (message.to !== this.#ctx.options.self.name) {
        this.#reject(conn, `Message addressed to "${message.to}", not to us`);
        return false;
      }
    }
    const sender: Sender = { incarnation: conn.incarnation ?? "", recovering: conn.recovering };
    for (const message of frame.messages) this.#events.message(message, sender);
    return true;
  }

  #onHello(conn: InboundConn, hello: Hello): void {
    const options = this.#ctx.options;
    const verdict = judgeHello({
      hello,
      challenge: conn.challenge,
      secret: options.secret,
      local: this.#ctx.local,
      self: options.self,
      localState: this.#ctx.localState(),
      checkPeer: (peer) => options.checkPeer?.(peer) ?? null,
      remoteAddress: conn.remoteAddress,
    });
    if (!verdict.accepted) {
      this.#logRefusal(verdict);
      this.#writeReply(conn, hello, verdict.reply);
      this.#end(conn);
      return;
    }
    this.#accept(conn, hello);
    this.#writeReply(conn, hello, verdict.reply);
    this.#ctx.log("info", `Accepted the link of peer "${hello.name}" from ${conn.remoteAddress}`, {
      peer: hello.name,
      remoteAddress: conn.remoteAddress,
      incarnation: hello.incarnation,
    });
  }

  /** #accept makes conn the link of the Hello's member, replacing an older one. */
  #accept(conn: InboundConn, hello: Hello): void {
    if (conn.helloTimer !== null) clearTimeout(conn.helloTimer);
    conn.helloTimer = null;
    this.#releasePending(conn);
    conn.peerName = hello.name;
    conn.decoder.setFrameBytesMax(frameBytesMax);
    conn.incarnation = hello.incarnation;
    conn.recovering = hello.recovering;
    this.#ctx.handshakes.set(hello.name, {
      name: hello.name,
      incarnation: hello.incarnation,
      hasState: hello.hasState,
      recovering: hello.recovering,
      at: Date.now(),
    });
    const previous = this.#byName.get(hello.name);
    if (previous !== undefined) this.#replace(previous, conn, hello);
    this.#byName.set(hello.name, conn);
    this.#events.accepted(hello.name, hello.incarnation);
  }

  /**
   * #replace closes a member's older link: it redialled before we saw the old connection
   * close (a restart), or two live hosts claim one name (R8). The newer connection wins,
   * and with another incarnation that is worth a warning.
   */
  #replace(previous: InboundConn, conn: InboundConn, hello: Hello): void {
    const sameIncarnation = previous.incarnation === hello.incarnation;
    this.#ctx.log(
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
    this.#end(previous);
  }

  #logRefusal(verdict: HelloVerdict & { accepted: false }): void {
    this.#ctx.repeats.note(verdict.logKey, "warn", verdict.logMessage, verdict.logFields);
  }

  /** #writeReply signs a reply over the dialler's nonce (with a secret) and sends it. */
  #writeReply(conn: InboundConn, hello: Hello, fields: Omit<HelloReply, "auth">): void {
    const secret = this.#ctx.options.secret;
    const reply: HelloReply = { ...fields, auth: new Uint8Array(0) };
    if (secret !== undefined) reply.auth = replyAuth(secret, hello.nonce, conn.challenge, reply);
    conn.socket.write(encodeHelloReplyFrame(reply));
  }

  /**
   * #reject closes an inbound connection that broke the protocol. Before a Hello is
   * accepted anyone can connect, so what strangers do is said once per kind of fault,
   * then counted (RepeatLog); a handshaken peer's violation is warned each time.
   */
  #reject(conn: InboundConn, reason: string, fault: StrangerFault = "junk"): void {
    if (conn.closed) return;
    const message = `Closed the connection from ${conn.remoteAddress}: ${reason}`;
    const fields = { remoteAddress: conn.remoteAddress, peer: conn.peerName, reason };
    if (conn.peerName === null) {
      this.#ctx.repeats.note(`stranger ${fault}`, "warn", message, fields);
    } else {
      this.#ctx.log("warn", message, fields);
    }
    this.#end(conn);
  }

  #end(conn: InboundConn): void {
    conn.closed = true;
    conn.socket.end();
    this.#forget(conn);
  }

  #forget(conn: InboundConn): void {
    conn.closed = true;
    if (conn.helloTimer !== null) clearTimeout(conn.helloTimer);
    conn.helloTimer = null;
    this.#releasePending(conn);
    this.#conns.delete(conn);
    if (conn.peerName !== null && this.#byName.get(conn.peerName) === conn) {
      this.#byName.delete(conn.peerName);
    }
  }
}
