// What the two sides of the transport (inbound.ts, outbound.ts) share: the options, the
// handshake record, the closed flag and the log, plus helpers both use.

import type { NodeId } from "../consensus/types.ts";
import { DecodeError, decodeFrame, type Frame } from "./codec.ts";
import type { FrameDecoder } from "./frame.ts";
import type { LocalHandshakeInfo } from "./handshake.ts";
import type { LocalState, LogLevel, PeerHandshake, TcpTransportOptions } from "./options.ts";
import type { RepeatLog } from "./repeat_log.ts";

/** TransportContext is the state of one TcpTransport that both of its sides read. */
export interface TransportContext {
  readonly options: TcpTransportOptions;
  /** What an incoming Hello is checked against. */
  readonly local: LocalHandshakeInfo;
  /** The latest handshake with each peer, either direction. */
  readonly handshakes: Map<NodeId, PeerHandshake>;
  isClosed(): boolean;
  localState(): LocalState;
  log(level: LogLevel, message: string, fields: Record<string, unknown>): void;
  /** The log for lines that repeat: said once, then with a count (repeat_log.ts). */
  readonly repeats: RepeatLog;
}

/** decodeFrames returns the frames a chunk completes; on bad input it calls fail instead. */
export function decodeFrames(
  decoder: FrameDecoder,
  chunk: Uint8Array,
  fail: (reason: string) => void,
): Frame[] {
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

/**
 * tlsFailure says why a finished TLS handshake is not good enough, or null. Without a CA
 * nothing is verified. With one, the certificate must chain to it; the dialler accepts a
 * certificate that does not name the dialled address (a peer is identified by the name
 * in its authenticated Hello, and hosts change addresses).
 */
export function tlsFailure(
  options: TcpTransportOptions,
  success: boolean,
  authorizationError: Error | null,
  side: "dialler" | "acceptor",
): string | null {
  // Without a CA nothing is checked; a broken TLS session closes the socket anyway.
  if (options.tls?.ca === undefined) return null;
  const code = (authorizationError as { code?: unknown } | null)?.code;
  // Bun reports the address check only once the chain verified.
  if (side === "dialler" && code === "ERR_TLS_CERT_ALTNAME_INVALID") return null;
  if (authorizationError !== null) return `TLS handshake failed: ${authorizationError.message}`;
  return success ? null : "TLS handshake failed";
}

export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
