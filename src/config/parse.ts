import { readFileSync, statSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { assert } from "../lib/assert.ts";
import { formatBytes, parseBytes } from "../lib/bytes.ts";
import { formatDuration, parseDuration } from "../lib/duration.ts";
import type {
  Config,
  ConfigProblem,
  Endpoint,
  GossipConfig,
  MemberConfig,
  TlsConfig,
} from "./types.ts";

// Limits. A cluster file is small and written by hand; anything far outside these is a
// mistake, and the bounds keep validation itself bounded.
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
/** envNamePattern is what security.secret_env may name: a portable variable name. */
const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A security.admin_token_file (or client_token_file) holds one token; more is the wrong file. */
export const adminTokenFileBytesMax = 4096;
// The syntax-error line search reparses every prefix of the file; skip it for big files.
const syntaxLineSearchLinesMax = 500;
const syntaxLineSearchBytesMax = 64 * 1024;

/** configDefaults holds the value of every optional setting. */
export const configDefaults = {
  storageDir: "./keel-data",
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

const logLevels = ["debug", "info", "warn", "error"] as const;
const logFormats = ["json", "text"] as const;

const clusterNamePattern = /^[a-z0-9-]{1,63}$/;
const memberNamePattern = /^[A-Za-z0-9._-]{1,63}$/;
const dnsLabelPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const portPattern = /^[0-9]{1,5}$/;

// The keys each mapping may hold, in the file's snake_case.
const keys = {
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
  storage: ["dir"],
  raft: ["tick", "heartbeat_interval", "election_timeout", "snapshot_entries", "catchup_rate"],
  resolver: ["refresh", "servers"],
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

/** ConfigError carries every problem found in a cluster file; the process exits 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly problems: readonly ConfigProblem[];
  readonly source: string;

  constructor(problems: readonly ConfigProblem[], source: string) {
    super(formatProblems(problems, source));
    this.problems = problems;
    this.source = source;
  }
}

/**
 * formatProblems renders one problem per line, prefixed by the file:
 * `cluster.yaml: members[2].peer: port must be 1-65535`. Problems with the file as a
 * whole (path "(file)") read `cluster.yaml: <message>`.
 */
export function formatProblems(problems: readonly ConfigProblem[], source: string): string {
  return problems
    .map((problem) =>
      problem.path === fileProblemPath
        ? `${source}: ${problem.message}`
        : `${source}: ${problem.path}: ${problem.message}`
    )
    .join("\n");
}

/** fileProblemPath names problems with the file as a whole: unreadable, not YAML. */
export const fileProblemPath = "(file)";

/**
 * loadConfig reads and validates a cluster file. A missing, unreadable or oversized file
 * is reported as a problem like any other; it never throws for a bad file.
 */
export function loadConfig(path: string): ConfigResult {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > configFileBytesMax) {
      return fileProblem(
        path,
        `file is ${size} bytes, more than the maximum of ${configFileBytesMax} bytes`,
      );
    }
    text = readFileSync(path, "utf8");
  } catch (error: unknown) {
    return fileProblem(path, `cannot read file: ${describeFileError(error)}`);
  }
  return parseConfigText(text, path);
}

/** describeFileError says in a few words why a file could not be read. */
export function describeFileError(error: unknown): string {
  const code = error instanceof Error && "code" in error ? error.code : undefined;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return error instanceof Error ? error.message : String(error);
  }
}

function fileProblem(source: string, message: string): ConfigResult {
  return {
    source,
    config: undefined,
    problems: [{ path: fileProblemPath, message }],
    warnings: [],
  };
}

/**
 * parseConfigText parses and validates the YAML text of a cluster file. It collects every
 * problem it can find, each with the path of the setting it concerns, rather than
 * stopping at the first.
 */
export function parseConfigText(text: string, source: string): ConfigResult {
  if (text.length > configFileBytesMax) {
    return fileProblem(
      source,
      `file is more than the maximum of ${configFileBytesMax} bytes`,
    );
  }
  let document: unknown;
  try {
    document = Bun.YAML.parse(text);
  } catch (error: unknown) {
    return fileProblem(source, describeSyntaxError(text, error));
  }
  return { source, ...validateConfig(document) };
}

/**
 * validateConfig checks an already-parsed document (the value of a YAML or JSON file,
 * snake_case keys) and builds the Config, collecting every problem.
 */
export function validateConfig(document: unknown): Omit<ConfigResult, "source"> {
  const problems: ConfigProblem[] = [];
  const warnings: ConfigProblem[] = [];
  const config = validate(document, problems, warnings);
  assert(problems.length > 0 || config !== undefined, "a config without problems must be built");
  return { config: problems.length === 0 ? config : undefined, problems, warnings };
}

// Bun.YAML reports no line, so find the first line at which a prefix of the text stops
// being YAML. Cutting block YAML at a line end leaves valid YAML, or an "Unexpected EOF"
// inside a flow collection or a quoted string, so EOF errors are skipped. It is a guess,
// hence "near line".
function describeSyntaxError(text: string, error: unknown): string {
  const message = (error instanceof Error ? error.message : String(error))
    .replace(/^YAML Parse error: /, "");
  const lines = text.split("\n");
  if (lines.length <= syntaxLineSearchLinesMax && text.length <= syntaxLineSearchBytesMax) {
    for (let count = 1; count <= lines.length; count++) {
      try {
        Bun.YAML.parse(lines.slice(0, count).join("\n"));
      } catch (prefixError: unknown) {
        const prefixMessage = prefixError instanceof Error ? prefixError.message : "";
        if (!prefixMessage.includes("EOF")) {
          return `YAML syntax error near line ${count}: ${message}`;
        }
      }
    }
  }
  return `YAML syntax error: ${message}`;
}

/** memberByName finds a member by its exact name. */
export function memberByName(config: Config, name: string): MemberConfig | undefined {
  return config.members.find((member) => member.name === name);
}

/**
 * gossipAddressed is true for a member listed by name alone: its peer and http addresses
 * are learned by gossip (the name scheme), not configured.
 */
export function gossipAddressed(member: MemberConfig): boolean {
  return member.peer === undefined;
}

/** formatEndpoint renders an endpoint as "host:port", with IPv6 hosts in brackets. */
export function formatEndpoint(endpoint: Endpoint): string {
  return endpoint.host.includes(":")
    ? `[${endpoint.host}]:${endpoint.port}`
    : `${endpoint.host}:${endpoint.port}`;
}

// --- Validation ---------------------------------------------------------------------
//
// Every reader takes the problems list, appends to it, and returns undefined when the
// value is unusable, so validation carries on to the next setting. A YAML null (a key
// with nothing after the colon) counts as absent.

type Mapping = Record<string, unknown>;

function validate(
  document: unknown,
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): Config | undefined {
  if (document === null || document === undefined) {
    problems.push({ path: fileProblemPath, message: "file is empty: it holds no settings" });
    return undefined;
  }
  const root = readMapping(document, "", keys.root, problems);
  if (root === undefined) return undefined;

  const clusterName = readString(root, "cluster_name", "", problems, { required: true });
  if (clusterName !== undefined && !clusterNamePattern.test(clusterName)) {
    problems.push({
      path: "cluster_name",
      message: `must be 1-63 lowercase letters, digits or "-", got ${quote(clusterName)}`,
    });
  }

  const members = readMembers(root, problems, warnings);

  const storage = readSection(root, "storage", keys.storage, problems);
  const dir = readString(storage, "dir", "storage", problems) ?? configDefaults.storageDir;

  const raft = readRaft(root, problems);

  const resolver = readSection(root, "resolver", keys.resolver, problems);
  const refreshMs = readDuration(resolver, "refresh", "resolver", problems, {
    minMs: resolverRefreshMsMin,
  }) ?? configDefaults.resolverRefreshMs;
  const servers = readServers(resolver, problems);

  const gossip = readGossip(root, members, problems);

  const http = readSection(root, "http", keys.http, problems);
  const bodyBytes = readBytes(http, "body_bytes_max", "http", problems) ??
    configDefaults.httpBodyBytesMax;
  const requestTimeoutMs = readDuration(http, "request_timeout", "http", problems) ??
    configDefaults.httpRequestTimeoutMs;

  const security = readSection(root, "security", keys.security, problems);
  const secretFile = readString(security, "secret_file", "security", problems);
  const secretEnv = readString(security, "secret_env", "security", problems);
  if (secretEnv !== undefined && !envNamePattern.test(secretEnv)) {
    problems.push({
      path: "security.secret_env",
      message: `${JSON.stringify(secretEnv)} is not an environment variable name ` +
        "(letters, digits and _, not starting with a digit)",
    });
  }
  if (hasValue(security, "secret_file") && hasValue(security, "secret_env")) {
    problems.push({
      path: "security.secret_env",
      message: "set together with security.secret_file: the secret comes from one of them",
    });
  }
  const adminToken = readToken(security, "admin_token", problems, warnings);
  const clientToken = readToken(security, "client_token", problems, warnings);
  const tls = readTls(security, problems);
  if (!hasValue(security, "secret_file") && !hasValue(security, "secret_env")) {
    warnings.push({
      path: "security.secret_file",
      message: "not set (nor security.secret_env): peers are not authenticated (dev mode)",
    });
  }

  const log = readSection(root, "log", keys.log, problems);
  const level = readChoice(log, "level", "log", logLevels, problems) ?? configDefaults.logLevel;
  const format = readChoice(log, "format", "log", logFormats, problems) ??
    configDefaults.logFormat;

  if (clusterName === undefined || members === undefined || raft === undefined) {
    return undefined;
  }
  return {
    clusterName,
    members,
    storage: { dir },
    raft,
    resolver: { refreshMs, servers },
    ...(gossip === undefined ? {} : { gossip }),
    http: { bodyBytesMax: bodyBytes, requestTimeoutMs },
    security: {
      secretFile,
      ...(secretEnv === undefined ? {} : { secretEnv }),
      adminToken,
      ...(clientToken === undefined ? {} : { clientToken }),
      ...(tls === undefined ? {} : { tls }),
    },
    log: { level, format },
  };
}

function readMembers(
  root: Mapping,
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): MemberConfig[] | undefined {
  const list = readList(root, "members", "", problems, { required: true });
  if (list === undefined) return undefined;
  if (list.length === 0 || list.length > membersMax) {
    problems.push({
      path: "members",
      message: `must list 1 to ${membersMax} members, got ${list.length}`,
    });
  } else if (list.length % 2 === 0) {
    warnings.push({
      path: "members",
      message: `${list.length} members tolerate no more failures than ${
        list.length - 1
      }; use an odd number`,
    });
  }

  const members: MemberConfig[] = [];
  const nameOwners = new Map<string, string>();
  const endpointOwners = new Map<string, string>();
  let complete = true;
  // Past the maximum the count is already a problem; checking more entries adds nothing.
  for (const [index, entry] of list.slice(0, membersMax).entries()) {
    const path = `members[${index}]`;
    const fields = readMapping(entry, path, keys.member, problems);
    const name = readString(fields, "name", path, problems, { required: true });
    if (name !== undefined) {
      if (!memberNamePattern.test(name)) {
        problems.push({
          path: `${path}.name`,
          message: `must be 1-63 letters, digits, ".", "_" or "-", got ${quote(name)}`,
        });
      } else if (nameOwners.has(name)) {
        problems.push({ path: `${path}.name`, message: `duplicate name ${quote(name)}` });
      } else {
        nameOwners.set(name, `${path}.name`);
      }
    }
    // Both endpoints, or neither: a member listed by name alone is found by gossip.
    const peer = readEndpoint(fields, "peer", path, problems, {});
    const http = readEndpoint(fields, "http", path, problems, {});
    const hasPeer = hasValue(fields, "peer");
    const hasHttp = hasValue(fields, "http");
    if (fields !== undefined && hasPeer !== hasHttp) {
      problems.push({
        path: `${path}.${hasPeer ? "http" : "peer"}`,
        message: `is required with "${hasPeer ? "peer" : "http"}" ` +
          "(give both, or neither for a member found by gossip)",
      });
      complete = false;
      continue;
    }
    // Every endpoint is a listening socket; no two may be the same, whatever their kind.
    for (const [kind, endpoint] of [["peer", peer], ["http", http]] as const) {
      if (endpoint === undefined) continue;
      const key = formatEndpoint(endpoint);
      const owner = endpointOwners.get(key);
      if (owner === undefined) {
        endpointOwners.set(key, `${path}.${kind}`);
      } else {
        problems.push({
          path: `${path}.${kind}`,
          message: `endpoint ${quote(key)} is already used by ${owner}`,
        });
      }
    }
    if (name === undefined || (hasPeer && (peer === undefined || http === undefined))) {
      complete = false;
      continue;
    }
    members.push({ name, peer, http });
  }
  return complete ? members : undefined;
}

function readRaft(
  root: Mapping,
  problems: ConfigProblem[],
): Config["raft"] | undefined {
  const raft = readSection(root, "raft", keys.raft, problems);
  const tickMs = readDuration(raft, "tick", "raft", problems, { maxMs: tickMsMax }) ??
    (hasValue(raft, "tick") ? undefined : configDefaults.tickMs);
  const heartbeatIntervalMs = readDuration(raft, "heartbeat_interval", "raft", problems) ??
    (hasValue(raft, "heartbeat_interval") ? undefined : configDefaults.heartbeatIntervalMs);
  const electionTimeoutMs = readDuration(raft, "election_timeout", "raft", problems) ??
    (hasValue(raft, "election_timeout") ? undefined : configDefaults.electionTimeoutMs);
  const snapshotEntries = readInteger(raft, "snapshot_entries", "raft", problems, {
    min: snapshotEntriesMin,
    max: snapshotEntriesMax,
  }) ?? configDefaults.snapshotEntries;
  const catchupBytesPerSecond = readBytes(raft, "catchup_rate", "raft", problems) ??
    configDefaults.catchupBytesPerSecond;

  // The core counts time in ticks, so the other timings must be whole numbers of ticks.
  // The relations are checked only between values that are themselves valid.
  let valid = true;
  if (tickMs !== undefined && heartbeatIntervalMs !== undefined) {
    if (heartbeatIntervalMs < tickMs) {
      problems.push({
        path: "raft.heartbeat_interval",
        message: `must be at least raft.tick (${formatDuration(tickMs)})`,
      });
      valid = false;
    } else if (heartbeatIntervalMs % tickMs !== 0) {
      problems.push({
        path: "raft.heartbeat_interval",
        message: `must be a multiple of raft.tick (${formatDuration(tickMs)})`,
      });
      valid = false;
    }
  }
  if (heartbeatIntervalMs !== undefined && electionTimeoutMs !== undefined) {
    const minimumMs = electionTimeoutHeartbeatsMin * heartbeatIntervalMs;
    if (electionTimeoutMs < minimumMs) {
      problems.push({
        path: "raft.election_timeout",
        message: `must be at least ${electionTimeoutHeartbeatsMin} times ` +
          `raft.heartbeat_interval (${formatDuration(minimumMs)})`,
      });
      valid = false;
    }
  }
  if (
    tickMs !== undefined && electionTimeoutMs !== undefined && electionTimeoutMs % tickMs !== 0
  ) {
    problems.push({
      path: "raft.election_timeout",
      message: `must be a multiple of raft.tick (${formatDuration(tickMs)})`,
    });
    valid = false;
  }
  if (
    !valid || tickMs === undefined || heartbeatIntervalMs === undefined ||
    electionTimeoutMs === undefined
  ) {
    return undefined;
  }
  return { tickMs, heartbeatIntervalMs, electionTimeoutMs, snapshotEntries, catchupBytesPerSecond };
}

/**
 * readGossip reads the `gossip:` section. It is needed (with at least one neighbour) when
 * any member is listed by name alone; otherwise it is optional and unused by the node.
 */
function readGossip(
  root: Mapping,
  members: MemberConfig[] | undefined,
  problems: ConfigProblem[],
): GossipConfig | undefined {
  const needed = members?.some(gossipAddressed) ?? false;
  if (!hasValue(root, "gossip") && !needed) return undefined;
  const gossip = readSection(root, "gossip", keys.gossip, problems);
  const list = readList(gossip, "neighbours", "gossip", problems) ?? [];
  if (list.length > gossipNeighboursMax) {
    problems.push({
      path: "gossip.neighbours",
      message: `must list at most ${gossipNeighboursMax} endpoints, got ${list.length}`,
    });
  }
  const neighbours: Endpoint[] = [];
  for (const [index, entry] of list.slice(0, gossipNeighboursMax).entries()) {
    const path = `gossip.neighbours[${index}]`;
    if (typeof entry !== "string") {
      problems.push({ path, message: `must be a string "host:port", got ${typeName(entry)}` });
      continue;
    }
    const parsed = parseEndpointText(entry);
    if (typeof parsed === "string") {
      problems.push({ path, message: parsed });
    } else {
      neighbours.push(parsed);
    }
  }
  if (needed && list.length === 0) {
    problems.push({
      path: "gossip.neighbours",
      message: 'must list at least one member\'s gossip endpoint "host:port": ' +
        "members listed by name alone are found by gossip",
    });
  }
  const port = readInteger(gossip, "port", "gossip", problems, { min: 1, max: 65535 }) ??
    configDefaults.gossipPort;
  const intervalMs = readDuration(gossip, "interval", "gossip", problems, {
    minMs: gossipIntervalMsMin,
  }) ?? configDefaults.gossipIntervalMs;
  const fullIntervalMs = readDuration(gossip, "full_interval", "gossip", problems, {
    minMs: gossipIntervalMsMin,
  }) ?? configDefaults.gossipFullIntervalMs;
  const expiryMs = readDuration(gossip, "expiry", "gossip", problems) ??
    configDefaults.gossipExpiryMs;
  if (fullIntervalMs < intervalMs) {
    problems.push({
      path: "gossip.full_interval",
      message: `must be at least gossip.interval (${formatDuration(intervalMs)})`,
    });
  }
  // An entry that only reaches a node through full syncs (no direct link to its owner)
  // must outlive a lost sync, or it would expire between two of them.
  if (expiryMs < 2 * fullIntervalMs) {
    problems.push({
      path: "gossip.expiry",
      message: `must be at least twice gossip.full_interval (${
        formatDuration(2 * fullIntervalMs)
      })`,
    });
  }
  return { neighbours, port, intervalMs, fullIntervalMs, expiryMs };
}

function readServers(resolver: Mapping, problems: ConfigProblem[]): string[] {
  const list = readList(resolver, "servers", "resolver", problems) ?? [];
  if (list.length > resolverServersMax) {
    problems.push({
      path: "resolver.servers",
      message: `must list at most ${resolverServersMax} servers, got ${list.length}`,
    });
  }
  const servers: string[] = [];
  for (const [index, entry] of list.slice(0, resolverServersMax).entries()) {
    const path = `resolver.servers[${index}]`;
    if (typeof entry !== "string") {
      problems.push({ path, message: `must be a string "ip:port", got ${typeName(entry)}` });
      continue;
    }
    const parsed = parseEndpointText(entry);
    if (typeof parsed === "string") {
      problems.push({ path, message: parsed });
    } else if (!isIPv4(parsed.host) && !isIPv6(parsed.host)) {
      problems.push({ path, message: `must be an IP address and port, got ${quote(entry)}` });
    } else {
      servers.push(formatEndpoint(parsed));
    }
  }
  return servers;
}

/**
 * readToken reads a bearer token given inline (security.KEY) or in a file
 * (security.KEY_file), one of the two at most.
 */
function readToken(
  security: Mapping,
  key: "admin_token" | "client_token",
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): string | undefined {
  const token = readString(security, key, "security", problems, { secret: true });
  const file = readString(security, `${key}_file`, "security", problems);
  if (file === undefined) return token;
  if (hasValue(security, key)) {
    problems.push({
      path: `security.${key}_file`,
      message: `give only one of "${key}" and "${key}_file"`,
    });
    return undefined;
  }
  return readTokenFile(file, `security.${key}_file`, problems, warnings);
}

/**
 * readTokenFile reads a token from a file (a path relative to the working directory), so
 * it need not sit in the shared cluster file. Surrounding whitespace and the final
 * newline are ignored; the token itself must not contain whitespace.
 */
function readTokenFile(
  path: string,
  at: string,
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): string | undefined {
  const file = quote(path);
  let text: string;
  try {
    const stat = statSync(path);
    if (stat.size > adminTokenFileBytesMax) {
      const limit = `the maximum of ${adminTokenFileBytesMax} bytes for a token`;
      problems.push({ path: at, message: `${file} is ${stat.size} bytes, more than ${limit}` });
      return undefined;
    }
    // Bits 0o077: the group or others may read or write the token.
    if (process.platform !== "win32" && (stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8);
      warnings.push({
        path: at,
        message: `${file} is accessible to other users (mode ${mode}); chmod 600 it`,
      });
    }
    text = readFileSync(path, "utf8");
  } catch (error: unknown) {
    problems.push({ path: at, message: `cannot read ${file}: ${describeFileError(error)}` });
    return undefined;
  }
  const token = text.trim();
  if (token === "") {
    problems.push({ path: at, message: `${file} is empty: it must hold the token` });
    return undefined;
  }
  if (/\s/.test(token)) {
    problems.push({
      path: at,
      message: `${file} must hold one token without spaces or line breaks`,
    });
    return undefined;
  }
  return token;
}

/**
 * readTls reads security.tls: cert_file and key_file (PEM) are required, ca_file is
 * optional. Each must be a readable file now, so a typo stops the node at start.
 */
function readTls(security: Mapping, problems: ConfigProblem[]): TlsConfig | undefined {
  if (!hasValue(security, "tls")) return undefined;
  const tls = readMapping(security["tls"], "security.tls", keys.tls, problems);
  if (tls === undefined) return undefined;
  const file = (key: string, required: boolean): string | undefined => {
    const path = readString(tls, key, "security.tls", problems, { required });
    if (path === undefined) return undefined;
    try {
      if (!statSync(path).isFile()) {
        problems.push({ path: `security.tls.${key}`, message: `${quote(path)} is not a file` });
        return undefined;
      }
    } catch (error: unknown) {
      problems.push({
        path: `security.tls.${key}`,
        message: `cannot read ${quote(path)}: ${describeFileError(error)}`,
      });
      return undefined;
    }
    return path;
  };
  const certFile = file("cert_file", true);
  const keyFile = file("key_file", true);
  const caFile = file("ca_file", false);
  if (certFile === undefined || keyFile === undefined) return undefined;
  return { certFile, keyFile, caFile };
}

// --- Readers --------------------------------------------------------------------------

function childPath(parent: string, key: string): string {
  return parent === "" ? key : `${parent}.${key}`;
}

function hasValue(mapping: Mapping | undefined, key: string): boolean {
  return mapping !== undefined && Object.hasOwn(mapping, key) && mapping[key] !== null;
}

function isMapping(value: unknown): value is Mapping {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** readMapping checks that value is a mapping and reports every key it does not know. */
function readMapping(
  value: unknown,
  path: string,
  known: readonly string[],
  problems: ConfigProblem[],
): Mapping | undefined {
  if (!isMapping(value)) {
    problems.push(
      path === ""
        ? {
          path: fileProblemPath,
          message: `the top level must be a mapping of settings, got ${typeName(value)}`,
        }
        : { path, message: `must be a mapping, got ${typeName(value)}` },
    );
    return undefined;
  }
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue;
    const suggestion = closestKey(key, known);
    const shownKey = key.length > quotedLengthMax ? `${key.slice(0, quotedLengthMax)}...` : key;
    problems.push({
      path: childPath(path, shownKey),
      message: suggestion === undefined
        ? "unknown key"
        : `unknown key (did you mean ${quote(suggestion)}?)`,
    });
  }
  return value;
}

/** readSection reads an optional section; absent or empty reads as an empty mapping. */
function readSection(
  root: Mapping,
  key: string,
  known: readonly string[],
  problems: ConfigProblem[],
): Mapping {
  if (!hasValue(root, key)) return {};
  return readMapping(root[key], key, known, problems) ?? {};
}

interface ReadOptions {
  required?: boolean;
}

/** readValue returns the raw value, or undefined (reporting it if required) when absent. */
function readValue(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
  options: ReadOptions,
): unknown {
  if (mapping === undefined) return undefined;
  if (!hasValue(mapping, key)) {
    if (options.required === true) {
      problems.push({ path: childPath(parent, key), message: "is required" });
    }
    return undefined;
  }
  return mapping[key];
}

function readString(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
  options: ReadOptions & { secret?: boolean } = {},
): string | undefined {
  const value = readValue(mapping, key, parent, problems, options);
  if (value === undefined) return undefined;
  const path = childPath(parent, key);
  if (typeof value !== "string") {
    // A secret is never echoed, even when it is the wrong type.
    const hint = typeof value === "number" && options.secret !== true
      ? ` (quote it: "${String(value)}")`
      : "";
    problems.push({ path, message: `must be a string, got ${typeName(value)}${hint}` });
    return undefined;
  }
  if (value.length === 0) {
    problems.push({ path, message: "must not be empty" });
    return undefined;
  }
  return value;
}

function readList(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
  options: ReadOptions = {},
): unknown[] | undefined {
  const value = readValue(mapping, key, parent, problems, options);
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) {
    problems.push({
      path: childPath(parent, key),
      message: `must be a list, got ${typeName(value)}`,
    });
    return undefined;
  }
  return value;
}

function readChoice<T extends string>(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  choices: readonly T[],
  problems: ConfigProblem[],
): T | undefined {
  const value = readValue(mapping, key, parent, problems, {});
  if (value === undefined) return undefined;
  const choice = choices.find((candidate) => candidate === value);
  if (choice === undefined) {
    problems.push({
      path: childPath(parent, key),
      message: `must be one of ${choices.map(quote).join(", ")}, got ${show(value)}`,
    });
  }
  return choice;
}

function readDuration(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
  limits: { minMs?: number; maxMs?: number } = {},
): number | undefined {
  const value = readValue(mapping, key, parent, problems, {});
  if (value === undefined) return undefined;
  const path = childPath(parent, key);
  if (typeof value !== "string") {
    problems.push({
      path,
      message: `must be a duration with a unit such as "100ms" or "5s", got ${show(value)}`,
    });
    return undefined;
  }
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch (error: unknown) {
    if (!(error instanceof RangeError)) throw error;
    problems.push({
      path,
      message: `must be a duration such as "100ms" or "5s", got ${quote(value)}`,
    });
    return undefined;
  }
  const minMs = limits.minMs ?? 1;
  const maxMs = limits.maxMs ?? durationMsMax;
  if (ms < minMs || ms > maxMs) {
    problems.push({
      path,
      message: `must be from ${formatDuration(minMs)} to ${formatDuration(maxMs)}, got ${
        quote(value)
      }`,
    });
    return undefined;
  }
  return ms;
}

function readBytes(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
): number | undefined {
  const value = readValue(mapping, key, parent, problems, {});
  if (value === undefined) return undefined;
  const path = childPath(parent, key);
  let bytes: number | undefined;
  if (typeof value === "number" && Number.isSafeInteger(value)) {
    bytes = value;
  } else if (typeof value === "string") {
    try {
      bytes = parseBytes(value);
    } catch (error: unknown) {
      if (!(error instanceof RangeError)) throw error;
    }
  }
  if (bytes === undefined) {
    problems.push({
      path,
      message: `must be a size such as "1MiB" or "65536", got ${show(value)}`,
    });
    return undefined;
  }
  if (bytes < 1 || bytes > bodyBytesMax) {
    problems.push({
      path,
      message: `must be from 1 byte to ${formatBytes(bodyBytesMax)}, got ${show(value)}`,
    });
    return undefined;
  }
  return bytes;
}

function readInteger(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
  limits: { min: number; max: number },
): number | undefined {
  const value = readValue(mapping, key, parent, problems, {});
  if (value === undefined) return undefined;
  const path = childPath(parent, key);
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    problems.push({ path, message: `must be a whole number, got ${show(value)}` });
    return undefined;
  }
  if (value < limits.min || value > limits.max) {
    problems.push({
      path,
      message: `must be from ${limits.min} to ${limits.max}, got ${value}`,
    });
    return undefined;
  }
  return value;
}

function readEndpoint(
  mapping: Mapping | undefined,
  key: string,
  parent: string,
  problems: ConfigProblem[],
  options: ReadOptions = { required: true },
): Endpoint | undefined {
  const value = readValue(mapping, key, parent, problems, options);
  if (value === undefined) return undefined;
  const path = childPath(parent, key);
  if (typeof value !== "string") {
    problems.push({ path, message: `must be a string "host:port", got ${typeName(value)}` });
    return undefined;
  }
  const parsed = parseEndpointText(value);
  if (typeof parsed === "string") {
    problems.push({ path, message: parsed });
    return undefined;
  }
  return parsed;
}

/**
 * parseEndpointText reads "host:port", "1.2.3.4:port" or "[::1]:port" and returns the
 * endpoint, or a problem message. DNS names are lowercased (DNS is case-insensitive, and
 * the fingerprint must not depend on spelling); IPv6 hosts are kept without brackets.
 */
function parseEndpointText(text: string): Endpoint | string {
  const expected = `must be "host:port", got ${quote(text)}`;
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const match = /^\[([^\]]*)\]:(.*)$/.exec(text);
    if (match === null) return expected;
    // Lowercase the address but not a zone ("%eth0"): interface names keep their case.
    const [address = "", zone] = (match[1] ?? "").split("%");
    host = zone === undefined ? address.toLowerCase() : `${address.toLowerCase()}%${zone}`;
    portText = match[2] ?? "";
    if (!isIPv6(host)) return `host ${quote(host)} is not a valid IPv6 address`;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) return expected;
    host = text.slice(0, colon).toLowerCase();
    portText = text.slice(colon + 1);
    if (host.includes(":")) {
      return `an IPv6 address must be in brackets, such as "[::1]:7070", got ${quote(text)}`;
    }
    const problem = hostProblem(host);
    if (problem !== undefined) return problem;
  }
  const port = Number(portText);
  if (!portPattern.test(portText) || port < 1 || port > 65535) {
    return "port must be 1-65535";
  }
  return { host, port };
}

function hostProblem(host: string): string | undefined {
  if (/^[0-9.]+$/.test(host)) {
    return isIPv4(host) ? undefined : `host ${quote(host)} is not a valid IPv4 address`;
  }
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  const labels = name.split(".");
  if (name.length > 253 || !labels.every((label) => dnsLabelPattern.test(label))) {
    return `host ${quote(host)} is not a valid DNS name or IP address`;
  }
  return undefined;
}

// --- Messages -------------------------------------------------------------------------

const quotedLengthMax = 64;

/** quote renders a string for a message, cut short so a huge value cannot flood the log. */
function quote(value: string): string {
  return JSON.stringify(
    value.length > quotedLengthMax ? `${value.slice(0, quotedLengthMax)}...` : value,
  );
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "number") return "a number";
  if (typeof value === "string") return "a string";
  return typeof value;
}

/** show renders a scalar for a message, and only the type of anything bigger. */
function show(value: unknown): string {
  if (typeof value === "string") return quote(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return typeName(value);
}

/** closestKey suggests a known key within two edits of a mistyped one. */
function closestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2 || a.length > 64) return Infinity;
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? Infinity;
}
