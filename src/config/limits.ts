// The config's limits and defaults. A cluster file is small and written by hand; anything
// far outside these limits is a mistake, and the bounds keep validation itself bounded.

export const configFileBytesMax = 1024 * 1024;
export const membersMax = 9;
export const resolverServersMax = 8;
/** gossip.neighbours lists some members' gossip endpoints: never more than this. */
export const gossipNeighboursMax = 16;
export const gossipIntervalMsMin = 100;
export const tickMsMax = 1000;
export const durationMsMax = 60 * 60 * 1000;
export const resolverRefreshMsMin = 100;
export const electionTimeoutHeartbeatsMin = 5;
export const snapshotEntriesMin = 10;
export const snapshotEntriesMax = 100_000_000;
export const bodyBytesMax = 64 * 1024 * 1024;

/** A security.admin_token_file (or client_token_file) holds one token; more is the wrong file. */
export const adminTokenFileBytesMax = 4096;
// The syntax-error line search reparses every prefix of the file; skip it for big files.
export const syntaxLineSearchLinesMax = 500;
export const syntaxLineSearchBytesMax = 64 * 1024;

/** configDefaults holds the value of every optional setting. */
export const configDefaults = {
  storageDir: "./keel-data",
  /** A full scrub pass every hour, at most 8 MiB/s: 100 MB verified in about 12 s. */
  scrubIntervalMs: 60 * 60 * 1000,
  scrubBytesPerSecond: 8 * 1024 * 1024,
  tickMs: 10,
  heartbeatIntervalMs: 100,
  electionTimeoutMs: 1000,
  snapshotEntries: 50_000,
  /** A replacement's catch-up is bounded so the cluster's own traffic stays serviceable. */
  catchupBytesPerSecond: 128 * 1024 * 1024,
  resolverRefreshMs: 5000,
  gossipPort: 7071,
  gossipIntervalMs: 1000,
  gossipFullIntervalMs: 5000,
  gossipExpiryMs: 15_000,
  httpBodyBytesMax: 1024 * 1024,
  httpRequestTimeoutMs: 5000,
  logLevel: "info",
  logFormat: "json",
} as const;

/** storage.scrub_interval at most: a week between full passes. */
export const scrubIntervalMsMax = 7 * 24 * 60 * 60 * 1000;
