// The config reader's front door: YAML text -> a validated Config, or every problem with
// its path. What the rest of keel imports from config/ is exported here; the work is done
// in rooms of their own:
//
//   load.ts              file I/O (bounded), YAML parsing, locating a syntax error
//   validate.ts          validateConfig: the document walked section by section
//   schema.ts            the keys each mapping may hold; name patterns and choices
//   sections.ts          members, raft timing, gossip, resolver servers
//   security_section.ts  secret source, admin and client tokens, TLS files
//   readers.ts           typed readers: strings, lists, durations, sizes, integers...
//   endpoint.ts          the "host:port" grammar
//   suggest.ts           did-you-mean for unknown keys
//   messages.ts          how problems are worded and rendered
//   limits.ts            limits and the defaults of every optional setting
//   members.ts           helpers over a Config's members (memberByName, gossipAddressed)

export { ConfigError, loadConfig, parseConfigText } from "./load.ts";
export { validateConfig } from "./validate.ts";
export { formatEndpoint } from "./endpoint.ts";
export { describeFileError, fileProblemPath, formatProblems } from "./messages.ts";
export { gossipAddressed, memberByName } from "./members.ts";
export {
  adminTokenFileBytesMax,
  bodyBytesMax,
  configDefaults,
  configFileBytesMax,
  durationMsMax,
  electionTimeoutHeartbeatsMin,
  gossipIntervalMsMin,
  gossipNeighboursMax,
  membersMax,
  resolverRefreshMsMin,
  resolverServersMax,
  snapshotEntriesMax,
  snapshotEntriesMin,
  tickMsMax,
} from "./limits.ts";
export type { ConfigResult } from "./types.ts";
