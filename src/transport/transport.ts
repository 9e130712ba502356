import type { Message, NodeId, Sender } from "../consensus/types.ts";

/** PeerLinkState is what /status shows about one peer connection. */
export interface PeerLinkState {
  name: NodeId;
  address: string;
  connected: boolean;
  /** Incarnation the peer presented in its last handshake, if any. */
  incarnation: string | null;
  lastError: string | null;
  queuedMessages: number;
  droppedMessages: number;
  /** The protocol version our link to the peer negotiated, while it is established. */
  protocolVersion?: number | null;
}

/** Transport moves consensus messages between members over authenticated TCP links. */
export interface Transport {
  start(): Promise<void>;
  /** send queues a message for its `to` member; it drops it when that queue is full. */
  send(message: Message): void;
  /** onMessage receives every decoded message from a handshaken peer, with its sender. */
  onMessage(handler: (message: Message, sender: Sender) => void): void;
  /** onPeerDown fires when an established link to a member is lost. */
  onPeerDown(handler: (name: NodeId) => void): void;
  links(): PeerLinkState[];
  close(): Promise<void>;
}
