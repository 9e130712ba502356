// The typed readers of the config file. Every reader takes the problems list, appends to
// it, and returns undefined when the value is unusable, so validation carries on to the
// next setting. A YAML null (a key with nothing after the colon) counts as absent.

import { formatBytes, parseBytes } from "../lib/bytes.ts";
import { formatDuration, parseDuration } from "../lib/duration.ts";
import { parseEndpointText } from "./endpoint.ts";
import { bodyBytesMax, durationMsMax } from "./limits.ts";
import { fileProblemPath, quote, quotedLengthMax, show, typeName } from "./messages.ts";
import { closestKey } from "./suggest.ts";
import type { ConfigProblem, Endpoint } from "./types.ts";

/** Mapping is a YAML mapping, keys as written in the file. */
export type Mapping = Record<string, unknown>;

/** childPath is the dotted path of key under parent ("" is the top level). */
export function childPath(parent: string, key: string): string {
  return parent === "" ? key : `${parent}.${key}`;
}

/** hasValue is true when the mapping holds key with a value other than null. */
export function hasValue(mapping: Mapping | undefined, key: string): boolean {
  return mapping !== undefined && Object.hasOwn(mapping, key) && mapping[key] !== null;
}

/** isMapping is true for a YAML mapping (not null, not a list). */
export function isMapping(value: unknown): value is Mapping {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** readMapping checks that value is a mapping and reports every key it does not know. */
export function readMapping(
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
export function readSection(
  root: Mapping,
  key: string,
  known: readonly string[],
  problems: ConfigProblem[],
): Mapping {
  if (!hasValue(root, key)) return {};
  return readMapping(root[key], key, known, problems) ?? {};
}

/** ReadOptions: required makes an absent value a problem ("is required"). */
export interface ReadOptions {
  required?: boolean;
}

/** readValue returns the raw value, or undefined (reporting it if required) when absent. */
export function readValue(
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

/** readString reads a non-empty string; a secret is never echoed in a message. */
export function readString(
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

/** readList reads a YAML list (its entries unchecked). */
export function readList(
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

/** readChoice reads one of a fixed set of strings. */
export function readChoice<T extends string>(
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

/** readDuration reads a duration with a unit ("100ms", "5s") within limits, in ms. */
export function readDuration(
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

/** readBytes reads a size, a number of bytes or a string such as "1MiB". */
export function readBytes(
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

/** readInteger reads a whole number within limits. */
export function readInteger(
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

/** readEndpoint reads a "host:port" endpoint (endpoint.ts). */
export function readEndpoint(
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
