// The schema of the cluster file: the keys each mapping may hold (in the file's
// snake_case), and the shapes of names and choices.

export const logLevels = ["debug", "info", "warn", "error"] as const;
export const logFormats = ["json", "text"] as const;

export const clusterNamePattern = /^[a-z0-9-]{1,63}$/;
export const memberNamePattern = /^[A-Za-z0-9._-]{1,63}$/;
/** envNamePattern is what security.secret_env may name: a portable variable name. */
export const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** keys lists the keys each mapping of the file may hold; any other is reported unknown. */
export const keys = {
  root: [
    "cluster_name",
    "members",
    "storage",
    "raft",
    "resolver",
    "gossip",
    "http",
    "security",
    "log",
  ],
  member: ["name", "peer", "http"],
  storage: ["dir", "scrub_interval", "scrub_rate"],
  raft: ["tick", "heartbeat_interval", "election_timeout", "snapshot_entries", "catchup_rate"],
  resolver: ["refresh", "servers", "replacement_delay_max"],
  gossip: ["neighbours", "port", "interval", "full_interval", "expiry"],
  http: ["body_bytes_max", "request_timeout"],
  security: [
    "secret_file",
    "secret_env",
    "admin_token",
    "admin_token_file",
    "client_token",
    "client_token_file",
    "tls",
  ],
  tls: ["cert_file", "key_file", "ca_file"],
  log: ["level", "format"],
} as const;
