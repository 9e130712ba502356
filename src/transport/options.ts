// TcpTransportOptions and the types of what the transport reports (tcp.ts re-exports
// them). A leaf: the facade, inbound.ts, outbound.ts and judge_hello.ts import it.

import type { NodeId } from "../consensus/types.ts";
import type { Hello, ProtocolRange } from "./handshake_types.ts";

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
  /** The peer protocol versions spoken; handshake.ts's protocolVersions when unset. */
  protocolVersions?: ProtocolRange | undefined;
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

/** RefusedHandler hears that a peer refused our handshake; kind: fenced or rolled back. */
export type RefusedHandler = (
  name: NodeId,
  reason: string,
  kind: PeerRefusal["kind"] | null,
) => void;
