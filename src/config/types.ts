/** Endpoint is a host (DNS name or IP) and a port. */
export interface Endpoint {
  host: string;
  port: number;
}

export interface MemberConfig {
  name: string;
  /** Peer (Raft) TCP endpoint. */
  peer: Endpoint;
  /** HTTP endpoint: client API, health, admin, metrics, dashboard. */
  http: Endpoint;
}

export interface RaftTiming {
  tickMs: number;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  /** Take a snapshot and compact the log after this many applied entries. */
  snapshotEntries: number;
}

/** Config is the shared cluster file, parsed and validated (config/parse.ts). */
export interface Config {
  clusterName: string;
  members: MemberConfig[];
  storage: { dir: string };
  raft: RaftTiming;
  resolver: { refreshMs: number; servers: string[] };
  http: { bodyBytesMax: number; requestTimeoutMs: number };
  security: {
    secretFile: string | undefined;
    /** From security.admin_token, or read from security.admin_token_file at load. */
    adminToken: string | undefined;
  };
  log: { level: "debug" | "info" | "warn" | "error"; format: "json" | "text" };
}

/** ConfigProblem is one validation failure with the path it concerns. */
export interface ConfigProblem {
  path: string;
  message: string;
}
