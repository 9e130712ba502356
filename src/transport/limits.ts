// Limits of the peer transport: every frame, queue, batch, string, retry and timeout has
// its maximum here, with its unit in the name. The codec rejects input beyond them, so a
// broken or hostile peer cannot make this process allocate without bound.

const kib = 1024;
const mib = 1024 * kib;

/** frameBytesMax bounds one frame's payload (the length prefix excluded). */
export const frameBytesMax = 8 * mib;

/**
 * handshakeFrameBytesMax bounds frames before a peer has proven itself (challenge, hello,
 * reply), so 4 bytes of a length prefix cannot make us allocate a full-size frame.
 */
export const handshakeFrameBytesMax = 64 * kib;

/**
 * batchBytesTarget is where the sender stops adding messages to a batch frame. One
 * message larger than this still goes alone, up to frameBytesMax.
 */
export const batchBytesTarget = 1 * mib;

/** batchMessagesMax bounds the messages in one batch frame. */
export const batchMessagesMax = 1024;

/** entriesPerMessageMax bounds the entries in one appendEntries message. */
export const entriesPerMessageMax = 65536;

/** nameBytesMax bounds member names, cluster names, incarnations and fingerprint strings. */
export const nameBytesMax = 255;

/** reasonBytesMax bounds the refusal reason in a handshake reply. */
export const reasonBytesMax = 4 * kib;

/** fingerprintFieldsMax bounds the config fields a handshake lists, and so differingFields. */
export const fingerprintFieldsMax = 256;

/** nonceBytesMax bounds the handshake nonces and auth (an HMAC-SHA256, 32 bytes). */
export const nonceBytesMax = 64;

/** nonceBytes is the size of the nonces this transport sends (Hello) and demands (Challenge). */
export const nonceBytes = 16;

/** outboundQueueMessagesMax bounds each peer's outbound queue; newer messages are dropped. */
export const outboundQueueMessagesMax = 4096;

/**
 * outboundQueueBytesMax bounds each peer's outbound queue by the encoded size of its
 * messages (an upper bound computed without encoding them).
 */
export const outboundQueueBytesMax = 64 * mib;

/**
 * handshakeTimeoutMs bounds the dialler's connect plus handshake, and an inbound TLS
 * handshake (before our Challenge can be sent).
 */
export const handshakeTimeoutMs = 5000;

/**
 * helloTimeoutMs: an inbound connection must send its Hello this soon after our
 * Challenge. A member answers within a round trip and an HMAC; a stranger must not hold
 * a pending slot for long.
 */
export const helloTimeoutMs = 1000;

/**
 * writeStallMsMax: a link whose unwritten bytes have not drained for this long is torn
 * down and redialled. Without it a peer host that vanished (no FIN, no RST) would hold
 * the link "connected" for the kernel's retransmission timeout, many minutes.
 */
export const writeStallMsMax = 10_000;

/**
 * keepAliveIdleMs: TCP keepalive probes start after this much silence (then 10 probes 1 s
 * apart), so an idle connection to a vanished host is noticed in about 20 s.
 */
export const keepAliveIdleMs = 10_000;

/** reconnectBackoffMinMs and reconnectBackoffMaxMs bound the jittered exponential redial delay. */
export const reconnectBackoffMinMs = 50;
export const reconnectBackoffMaxMs = 2000;

/**
 * inboundPendingMax bounds accepted connections that have not completed a handshake,
 * from addresses that are not a configured member's. A member's resolved address has
 * slots of its own (inboundPendingPerHostMax), so strangers cannot crowd members out.
 */
export const inboundPendingMax = 64;

/** inboundPendingPerHostMax bounds the pending handshakes from one source address. */
export const inboundPendingPerHostMax = 8;

/**
 * logRepeatIntervalMs: a log line that repeats (the same refusal of the same peer on
 * every redial, junk connections, a handshake flood) is written once, then with a count
 * at most once in this interval; the events in between are logged at debug level.
 */
export const logRepeatIntervalMs = 30_000;

/** logRepeatKeysMax bounds the kinds of repeating lines remembered for that. */
export const logRepeatKeysMax = 256;
