// The handshake's frames as values (handshake.ts says what they mean and how they are
// checked). A leaf: the handshake codec and the handshake's checks both import it.

import type { NodeId } from "../consensus/types.ts";

/** ProtocolRange is the peer protocol versions a binary speaks, lowest and highest. */
export interface ProtocolRange {
  readonly min: number;
  readonly max: number;
}

/** Challenge is the acceptor's first frame: the nonce the dialler's Hello must sign. */
export interface Challenge {
  nonce: Uint8Array;
}

/** Hello is the first frame on every connection, sent by the side that dialled. */
export interface Hello {
  protocolVersion: number;
  clusterName: string;
  /** A hash of the whole shared config; equal fingerprints mean equal configs. */
  fingerprint: string;
  /** Config field path -> hash of its value, so a refusal can name the fields that differ. */
  fingerprintFields: Record<string, string>;
  name: NodeId;
  incarnation: string;
  /** Random bytes, fresh for each connection: the challenge the reply's auth signs. */
  nonce: Uint8Array;
  /** HMAC-SHA256 over the acceptor's challenge and this Hello (helloAuth); empty in dev mode. */
  auth: Uint8Array;
  /** The sender has cluster state (a term, an entry or a snapshot): not a blank node. */
  hasState: boolean;
  /** The sender is a replacement still catching up (R2). */
  recovering: boolean;
  /** The sender's durable term and last log index: peers use them to spot a rolled-back disk. */
  term: number;
  lastIndex: number;
}

/** HelloReply answers a Hello. The connection carries messages only after accepted: true. */
export interface HelloReply {
  accepted: boolean;
  reason?: string;
  /** Config fields whose hashes differ (or exist on one side only), sorted. */
  differingFields?: string[];
  /** The replying member's own name and incarnation. */
  name: NodeId;
  incarnation: string;
  /** The replying member's state, as in Hello. */
  hasState: boolean;
  recovering: boolean;
  /** Set on a refusal because the dialler's incarnation was replaced (R7). */
  fenced: boolean;
  /** Set on a refusal because the dialler's disk went back in time (restored from a backup). */
  rolledBack: boolean;
  /** HMAC-SHA256 over the Hello's nonce and this reply (replyAuth); empty in dev mode. */
  auth: Uint8Array;
}
