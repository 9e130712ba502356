// validateConfig: an already-parsed document (YAML or JSON value, snake_case keys) in, a
// Config or every problem found out. It walks the sections in the file's order, so the
// problems come out in that order.

import { assert } from "../lib/assert.ts";
import { configDefaults, scrubIntervalMsMax } from "./limits.ts";
import { fileProblemPath, quote } from "./messages.ts";
import {
  readBytes,
  readChoice,
  readDuration,
  readMapping,
  readSection,
  readString,
} from "./readers.ts";
import { clusterNamePattern, keys, logFormats, logLevels } from "./schema.ts";
import { readGossip, readMembers, readRaft, readResolver } from "./sections.ts";
import { readSecurity } from "./security_section.ts";
import type { Config, ConfigProblem, ConfigResult } from "./types.ts";

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
  const scrubIntervalMs = readDuration(storage, "scrub_interval", "storage", problems, {
    minMs: 0,
    maxMs: scrubIntervalMsMax,
  }) ?? configDefaults.scrubIntervalMs;
  const scrubBytesPerSecond = readBytes(storage, "scrub_rate", "storage", problems) ??
    configDefaults.scrubBytesPerSecond;

  const raft = readRaft(root, problems);

  const resolver = readResolver(root, problems);

  const gossip = readGossip(root, members, problems);

  const http = readSection(root, "http", keys.http, problems);
  const bodyBytes = readBytes(http, "body_bytes_max", "http", problems) ??
    configDefaults.httpBodyBytesMax;
  const requestTimeoutMs = readDuration(http, "request_timeout", "http", problems) ??
    configDefaults.httpRequestTimeoutMs;

  const security = readSecurity(root, problems, warnings);

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
    storage: { dir, scrubIntervalMs, scrubBytesPerSecond },
    raft,
    resolver,
    ...(gossip === undefined ? {} : { gossip }),
    http: { bodyBytesMax: bodyBytes, requestTimeoutMs },
    security,
    log: { level, format },
  };
}
