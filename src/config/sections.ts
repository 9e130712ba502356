// The sections of the cluster file with more than plain settings: the member list, Raft
// timing, gossip and the resolver (refresh, servers, replacement_delay_max). Each reader
// reports every problem it finds.

import { isIPv4, isIPv6 } from "node:net";
import { formatDuration } from "../lib/duration.ts";
import { formatEndpoint, parseEndpointText } from "./endpoint.ts";
import {
  configDefaults,
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
import { gossipAddressed } from "./members.ts";
import { quote, typeName } from "./messages.ts";
import {
  hasValue,
  type Mapping,
  readBytes,
  readDuration,
  readEndpoint,
  readInteger,
  readList,
  readMapping,
  readSection,
  readString,
} from "./readers.ts";
import { keys, memberNamePattern } from "./schema.ts";
import type { Config, ConfigProblem, Endpoint, GossipConfig, MemberConfig } from "./types.ts";

export function readMembers(
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

export function readRaft(
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
export function readGossip(
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

/**
 * readResolver reads the `resolver:` section. replacement_delay_max, when set, must be at
 * least resolver.refresh: a replaced host is found within one refresh plus the TTL.
 */
export function readResolver(root: Mapping, problems: ConfigProblem[]): Config["resolver"] {
  const resolver = readSection(root, "resolver", keys.resolver, problems);
  const refreshMs = readDuration(resolver, "refresh", "resolver", problems, {
    minMs: resolverRefreshMsMin,
  });
  const servers = readServers(resolver, problems);
  const delayMaxMs = readDuration(resolver, "replacement_delay_max", "resolver", problems);
  // Compared only with a refresh that is valid (or absent, hence the default).
  const refreshValid = refreshMs !== undefined || !hasValue(resolver, "refresh");
  const refreshOrDefaultMs = refreshMs ?? configDefaults.resolverRefreshMs;
  if (delayMaxMs !== undefined && refreshValid && delayMaxMs < refreshOrDefaultMs) {
    problems.push({
      path: "resolver.replacement_delay_max",
      message: `must be at least resolver.refresh (${formatDuration(refreshOrDefaultMs)}): ` +
        "a replaced host is found within one refresh plus the record's TTL",
    });
  }
  return {
    refreshMs: refreshOrDefaultMs,
    servers,
    ...(delayMaxMs === undefined ? {} : { replacementDelayMaxMs: delayMaxMs }),
  };
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
