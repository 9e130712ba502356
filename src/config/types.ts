/** Endpoint is a host (DNS name or IP) and a port. */
export interface Endpoint {
  host: string;
  port: number;
}

/**
 * MemberConfig is one member. peer and http are both set (the member is at those
 * endpoints, DNS names re-resolved) or both undefined: a gossip-addressed member, whose
 * addresses are learned from the gossip of the name scheme (resolver/gossip.ts).
 */
export interface MemberConfig {
  name: string;
  /** Peer (Raft) TCP endpoint; undefined when the member is gossip-addressed. */
  peer: Endpoint | undefined;
  /** HTTP endpoint (client API, health, admin, metrics, dashboard); undefined with peer. */
  http: Endpoint | undefined;
}

/** GossipConfig is the `gossip:` section: how gossip-addressed members are found. */
export interface GossipConfig {
  /** Bootstrap neighbours: gossip endpoints (DNS names re-resolved, or IPs) of some members. */
  neighbours: Endpoint[];
  /** Default gossip port: a node listens on its peer-listen host at this port (UDP). */
  port: number;
  /** A node sends its own claim and recent changes this often. */
  intervalMs: number;
  /** A node sends its whole table this often. */
  fullIntervalMs: number;
  /** An entry not refreshed for this long is no longer gossiped (its address is kept). */
  expiryMs: number;
}

export interface RaftTiming {
  tickMs: number;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  /** Take a snapshot and compact the log after this many applied entries. */
  snapshotEntries: number;
  /** Catch-up bound: snapshot bytes per second a leader sends one follower (0: none). */
  catchupBytesPerSecond?: number;
}

/**
 * ConfigResult is the outcome of reading a cluster file. config is set only when there
 * are no problems; warnings never stop a node from starting.
 */
export interface ConfigResult {
  /** Where the text came from, for formatProblems. */
  source: string;
  config: Config | undefined;
  problems: ConfigProblem[];
  warnings: ConfigProblem[];
}

/** Config is the shared cluster file, parsed and validated (config/parse.ts). */
export interface Config {
  clusterName: string;
  members: MemberConfig[];
  storage: {
    dir: string;
    /** A full scrub pass starts this long after the last one ended (0: never scrub). */
    scrubIntervalMs: number;
    /** Bytes the scrubber re-reads and verifies per second, at most. */
    scrubBytesPerSecond: number;
  };
  raft: RaftTiming;
  resolver: {
    refreshMs: number;
    servers: string[];
    /**
     * resolver.replacement_delay_max: the longest the operator accepts between a member's
     * DNS record being repointed and peers reaching the new host (resolver.refresh plus
     * the record's TTL); a longer one is warned of. Unset: no bound but detection's.
     */
    replacementDelayMaxMs?: number;
  };
  /** Present when the file has a `gossip:` section or gossip-addressed members. */
  gossip?: GossipConfig;
  http: { bodyBytesMax: number; requestTimeoutMs: number };
  security: {
    secretFile: string | undefined;
    /** security.secret_env: the environment variable that holds the secret instead. */
    secretEnv?: string | undefined;
    /** From security.admin_token, or read from security.admin_token_file at load. */
    adminToken: string | undefined;
    /**
     * From security.client_token, or read from security.client_token_file at load: when
     * set, the client API (/v1/*) needs "Authorization: Bearer TOKEN".
     */
    clientToken?: string | undefined;
    /** security.tls: serve HTTP and peer links over TLS. */
    tls?: TlsConfig | undefined;
  };
  log: { level: "debug" | "info" | "warn" | "error"; format: "json" | "text" };
}

/** TlsConfig is the `security.tls:` section: PEM files, paths as written in the file. */
export interface TlsConfig {
  certFile: string;
  keyFile: string;
  /**
   * CA bundle that peers' certificates must chain to. Set: peer links are verified both
   * ways (mutual TLS) and forwarded HTTP requests verify the leader. Unset: encrypted but
   * unverified (the handshake HMAC still authenticates peers).
   */
  caFile: string | undefined;
}

/** ConfigProblem is one validation failure with the path it concerns. */
export interface ConfigProblem {
  path: string;
  message: string;
}
