// Talking to a running node over its HTTP API: finding the node (--url, --config + --name,
// KEEL_URL), the admin and client tokens, the CA of an https node, requests with a bound,
// errors for people; and the commands `status` and `kv`. The other client commands (members, admin, drill) build on this file.

import { readFileSync } from "node:fs";
import type { Config, MemberConfig } from "../config/types.ts";
import { formatProblems, loadConfig, memberByName } from "../config/parse.ts";
import type { MemberStatusView, NodeStatusView } from "../http/api.ts";
import { parseDuration } from "../lib/duration.ts";
import { CliError, Flags } from "./flags.ts";
import { bytes, dash, fields, type Io, ms, table, writeJson, yesNo } from "./output.ts";

/** defaultUrl is where the client commands look when told nothing else. */
export const defaultUrl = "http://127.0.0.1:7080";
/** requestTimeoutMsDefault bounds one request of status, kv and the admin commands. */
export const requestTimeoutMsDefault = 10_000;

type OptionSpec = Record<string, { type: "string" | "boolean"; short?: string }>;

/** connectionOptions are the flags every client command takes. */
export const connectionOptions = {
  url: { type: "string" },
  config: { type: "string", short: "c" },
  name: { type: "string", short: "n" },
  token: { type: "string" },
  timeout: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionSpec;

/**
 * CommandError is an operation that failed (node unreachable, request refused): printed
 * as "keel: MESSAGE", exit code 1.
 */
export class CommandError extends Error {
  override name = "CommandError";
}

/** UnreachableError is a request that got no HTTP answer at all. */
export class UnreachableError extends CommandError {
  override name = "UnreachableError";
}

/** Target is the node a command talks to and what it needs to talk to it. */
export interface Target {
  /** Base URL without a trailing slash, e.g. "http://127.0.0.11:7080". */
  url: string;
  /** Admin bearer token: --token, KEEL_ADMIN_TOKEN, or the config's security.admin_token. */
  token: string | undefined;
  /** Where the token came from, for error hints. */
  tokenSource: "--token" | "KEEL_ADMIN_TOKEN" | "config" | undefined;
  /**
   * Client API bearer token (kv commands): --token, KEEL_CLIENT_TOKEN, or the config's
   * security.client_token.
   */
  clientToken: string | undefined;
  clientTokenSource: "--token" | "KEEL_CLIENT_TOKEN" | "config" | undefined;
  /** The --config file, when given: its members are a fallback list of addresses. */
  config: Config | undefined;
  /** Bound on each request (or on the whole command, where it says so). */
  timeoutMs: number;
}

/**
 * resolveTarget finds the node: --url, else --config + --name (that member's http
 * address), else KEEL_URL, else the default. --config also supplies the tokens, and with
 * security.tls the https scheme and the CA (ca_file) that requests trust.
 */
export function resolveTarget(flags: Flags, io: Io, timeoutMsDefault: number): Target {
  const file = flags.string("config");
  const name = flags.string("name");
  let config: Config | undefined;
  if (file !== undefined) {
    const loaded = loadConfig(file);
    if (loaded.config === undefined) throw new CliError(formatProblems(loaded.problems, file));
    config = loaded.config;
  } else if (name !== undefined) {
    throw new CliError("--name picks a member of the --config FILE; give --config too");
  }

  let url: string;
  const urlFlag = flags.string("url");
  if (urlFlag !== undefined) {
    url = normalizeUrl(urlFlag, "--url");
  } else if (config !== undefined) {
    if (name === undefined) {
      const names = config.members.map((m) => m.name).join(", ");
      throw new CliError(`--config needs --name to pick a member (one of ${names})`);
    }
    const member = memberByName(config, name);
    if (member === undefined) throw new CliError(`${file}: no member named "${name}"`);
    url = memberHttpUrl(member, config.security.tls !== undefined);
  } else if (io.env.KEEL_URL) {
    url = normalizeUrl(io.env.KEEL_URL, "KEEL_URL");
  } else {
    url = defaultUrl;
  }

  let token: string | undefined;
  let tokenSource: Target["tokenSource"];
  const tokenFlag = flags.string("token");
  if (tokenFlag !== undefined) {
    [token, tokenSource] = [tokenFlag, "--token"];
  } else if (io.env.KEEL_ADMIN_TOKEN) {
    [token, tokenSource] = [io.env.KEEL_ADMIN_TOKEN, "KEEL_ADMIN_TOKEN"];
  } else if (config?.security.adminToken !== undefined) {
    [token, tokenSource] = [config.security.adminToken, "config"];
  }
  let clientToken: string | undefined;
  let clientTokenSource: Target["clientTokenSource"];
  if (tokenFlag !== undefined) {
    [clientToken, clientTokenSource] = [tokenFlag, "--token"];
  } else if (io.env.KEEL_CLIENT_TOKEN) {
    [clientToken, clientTokenSource] = [io.env.KEEL_CLIENT_TOKEN, "KEEL_CLIENT_TOKEN"];
  } else if (config?.security.clientToken !== undefined) {
    [clientToken, clientTokenSource] = [config.security.clientToken, "config"];
  }
  const caFile = config?.security.tls?.caFile;
  if (caFile !== undefined) {
    try {
      requestCa = readFileSync(caFile, "utf8");
    } catch (error: unknown) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new CliError(`Cannot read security.tls.ca_file "${caFile}": ${reason}`);
    }
  }

  return {
    url,
    token,
    tokenSource,
    clientToken,
    clientTokenSource,
    config,
    timeoutMs: timeoutFlag(flags) ?? timeoutMsDefault,
  };
}

/**
 * requestCa is the CA (PEM) that request() trusts for https besides the system's: the
 * --config file's security.tls.ca_file. One command runs per process, so one is enough.
 */
let requestCa: string | undefined;

/**
 * memberHttpUrl is the base URL of a configured member's HTTP API, https when the cluster
 * serves TLS. A member listed by name alone (found by gossip) has none in the file: the
 * caller must pass --url.
 */
export function memberHttpUrl(member: MemberConfig, tls = false): string {
  const http = member.http;
  if (http === undefined) {
    throw new CliError(
      `member "${member.name}" has no http address in the config (it is found by gossip); ` +
        "pass --url",
    );
  }
  const host = http.host.includes(":") ? `[${http.host}]` : http.host;
  return `${tls ? "https" : "http"}://${host}:${http.port}`;
}

/** normalizeUrl accepts "http://host:port", "https://..." or a bare "host:port". */
export function normalizeUrl(text: string, what: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let parsed: URL;
  try {
    parsed = new URL(withScheme);
  } catch {
    throw new CliError(`${what} must be a URL such as http://127.0.0.1:7080; got "${text}"`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new CliError(`${what} must be an http:// or https:// URL; got "${text}"`);
  }
  return withScheme.replace(/\/+$/, "");
}

/** timeoutFlag reads --timeout as a duration ("500ms", "5s"), or undefined if not given. */
export function timeoutFlag(flags: Flags): number | undefined {
  const text = flags.string("timeout");
  if (text === undefined) return undefined;
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(text);
  } catch {
    throw new CliError(`--timeout must be a duration such as "500ms" or "5s"; got "${text}"`);
  }
  if (timeoutMs <= 0) throw new CliError(`--timeout must be more than 0; got "${text}"`);
  return timeoutMs;
}

/**
 * trustingConfigCa adds the --config file's CA (security.tls.ca_file) to fetch options,
 * for commands that call fetch themselves (drill, members); request() does it already.
 */
export function trustingConfigCa(init: RequestInit): RequestInit {
  return requestCa === undefined ? init : { ...init, tls: { ca: requestCa } } as RequestInit;
}

/** clientHeaders carries the target's client token (security.client_token), if any. */
export function clientHeaders(target: Target): Record<string, string> {
  return target.clientToken === undefined ? {} : { authorization: `Bearer ${target.clientToken}` };
}

/** request fetches with a time bound; no answer at all is an UnreachableError. */
export async function request(
  url: string,
  timeoutMs: number,
  init: RequestInit = {},
): Promise<Response> {
  try {
    return await fetch(url, {
      ...init,
      signal: AbortSignal.timeout(timeoutMs),
      ...(requestCa === undefined ? {} : { tls: { ca: requestCa } }),
    });
  } catch (error: unknown) {
    throw new UnreachableError(
      `Cannot reach ${new URL(url).origin}: ${fetchFailure(error, timeoutMs)}`,
    );
  }
}

/** fetchFailure says in a few words why a fetch got no answer. */
export function fetchFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof DOMException && error.name === "TimeoutError") {
    return `no answer within ${ms(timeoutMs)}`;
  }
  const code = typeof error === "object" && error !== null && "code" in error
    ? String((error as { code: unknown }).code)
    : "";
  switch (code) {
    case "ECONNREFUSED":
    case "ConnectionRefused":
      return "connection refused";
    case "ENOTFOUND":
      return "host not found";
    case "ECONNRESET":
    case "ConnectionClosed":
      return "connection closed before an answer";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "no route to host";
  }
  return error instanceof Error ? error.message : String(error);
}

/** ApiError is an HTTP error answer, decoded from keel's JSON error shape when it is one. */
export interface ApiError {
  status: number;
  code: string | undefined;
  message: string;
  leader: { name: string; url: string } | undefined;
}

/** readApiError reads an error answer: `{"error":{"code","message","leader"?}}` or text. */
export async function readApiError(response: Response): Promise<ApiError> {
  const text = await response.text();
  const failure: ApiError = {
    status: response.status,
    code: undefined,
    message: text.trim().slice(0, 500) || response.statusText,
    leader: undefined,
  };
  try {
    const body = JSON.parse(text) as {
      error?: { code?: unknown; message?: unknown; leader?: { name?: unknown; url?: unknown } };
    };
    const error = body.error;
    if (typeof error === "object" && error !== null) {
      if (typeof error.code === "string") failure.code = error.code;
      if (typeof error.message === "string") failure.message = error.message;
      const leader = error.leader;
      if (typeof leader?.name === "string" && typeof leader.url === "string") {
        failure.leader = { name: leader.name, url: leader.url };
      }
    }
  } catch {
    // Not JSON (a proxy's page, say): the text as is.
  }
  return failure;
}

/** describeApiError renders an error answer for people, naming who answered. */
export function describeApiError(url: string, error: ApiError): string {
  const code = error.code === undefined ? "" : ` ${error.code}`;
  const leader = error.leader === undefined
    ? ""
    : ` (leader: ${error.leader.name} at ${error.leader.url})`;
  return `${new URL(url).origin} answered ${error.status}${code}: ${error.message}${leader}`;
}

/** failWith turns an error answer into a CommandError (exit code 1). */
export async function failWith(url: string, response: Response): Promise<never> {
  throw new CommandError(describeApiError(url, await readApiError(response)));
}

/** readJson reads a successful answer's JSON body. */
export async function readJson<T>(url: string, response: Response): Promise<T> {
  const text = await response.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new CommandError(
      `${new URL(url).origin} answered ${response.status} with a body that is not JSON: ${
        text.slice(0, 200)
      }`,
    );
  }
}

/** getJson GETs a path and returns its JSON, or throws CommandError on any failure. */
export async function getJson<T>(base: string, path: string, timeoutMs: number): Promise<T> {
  const url = `${base}${path}`;
  const response = await request(url, timeoutMs);
  if (!response.ok) return await failWith(url, response);
  return await readJson<T>(url, response);
}

/** StatusBody is GET /status: the node's NodeStatusView. */
export type StatusBody = NodeStatusView;

/** memberRole is a member's role as the answering node knows it. */
export function memberRole(status: StatusBody, member: MemberStatusView): string {
  if (member.self === true || member.name === status.name) return status.role;
  if (member.name === status.leader) return "leader";
  return status.leader === null ? "-" : "follower";
}

/**
 * formatStatus renders GET /status for people: a summary, then one row per member. A node
 * of an older version may lack the later fields; a line is shown only when its field is.
 */
export function formatStatus(status: StatusBody): string {
  const heading = [status.role, `term ${status.term}`];
  if (status.clusterName !== undefined) heading.push(`cluster ${status.clusterName}`);
  if (status.version !== undefined) heading.push(`keel ${status.version}`);
  if (status.uptimeMs !== undefined) {
    heading.push(`up ${ms(Math.round(status.uptimeMs / 1000) * 1000)}`);
  }
  const leader = status.leader === null ? "none known" : status.leader +
    (status.leaderHeardMsAgo !== undefined && status.leaderHeardMsAgo !== null &&
        status.leader !== status.name
      ? ` (heard ${ms(status.leaderHeardMsAgo)} ago)`
      : "");
  const summary: [string, string][] = [
    ["leader", leader],
    [
      "indexes",
      `commit ${status.commitIndex}  applied ${status.appliedIndex}  last ${status.lastIndex}` +
      (status.firstIndex === undefined ? "" : `  first ${status.firstIndex}`),
    ],
    [
      "snapshot",
      `index ${status.snapshotIndex}` +
      (status.snapshotBytes === undefined ? "" : `, ${bytes(status.snapshotBytes)}`),
    ],
  ];
  if (status.storageBytes !== undefined) summary.push(["storage", bytes(status.storageBytes)]);
  if (status.security !== undefined) {
    const security = status.security;
    const on = (value: boolean) => (value ? "on" : "off");
    summary.push([
      "security",
      `peer auth ${security.peerAuth}, admin token ${on(security.adminToken)}, ` +
      `client token ${on(security.clientToken)}, tls ${on(security.tls)}`,
    ]);
  }
  if (status.incarnation !== undefined) {
    summary.push([
      "incarnation",
      status.incarnation + (status.status === undefined ? "" : ` (${status.status})`),
    ]);
  }

  const rows = [["MEMBER", "ROLE", "ADDRESS", "PEER", "CONNECTED", "MATCH", "LAG", "NOTE"]];
  for (const member of status.members) {
    const self = member.self === true || member.name === status.name;
    const note = self
      ? "this node"
      : !member.connected && member.lastError
      ? member.lastError
      : member.replication ?? "";
    rows.push([
      member.name,
      memberRole(status, member),
      dash(member.http),
      member.peer,
      yesNo(member.connected),
      dash(member.matchIndex),
      dash(member.lag),
      note,
    ]);
  }
  return `${status.name}: ${heading.join(", ")}\n` + fields(summary) + "\n" + table(rows);
}

/** statusCommand is `keel status`: one node's view of the cluster. */
export async function statusCommand(args: string[], io: Io): Promise<number> {
  const flags = new Flags(args, connectionOptions);
  if (flags.positionals.length > 0) {
    throw new CliError(`keel status takes no arguments; got "${flags.positionals[0]}"`);
  }
  const target = resolveTarget(flags, io, requestTimeoutMsDefault);
  const status = await getJson<StatusBody>(target.url, "/status", target.timeoutMs);
  if (flags.boolean("json")) writeJson(io, status);
  else io.out(formatStatus(status));
  return 0;
}

export const kvOptions = {
  ...connectionOptions,
  stale: { type: "boolean" },
  limit: { type: "string" },
  after: { type: "string" },
} as const satisfies OptionSpec;

/** kvListLimitMax is the most keys one `kv list` asks for (the server may cap it lower). */
const kvListLimitMax = 10_000;

/** kvCommand is `keel kv get|put|delete|list`: the built-in key-value service. */
export async function kvCommand(args: string[], io: Io): Promise<number> {
  const flags = new Flags(args, kvOptions);
  const [verb, key, value, ...extra] = flags.positionals;
  const arity = (count: number, usage: string): void => {
    const given = flags.positionals.length - 1;
    if (given < count) throw new CliError(`keel kv ${verb} needs ${usage}`);
    if (given > count) {
      throw new CliError(
        `keel kv ${verb} takes ${usage}; got an extra argument "${flags.positionals[count + 1]}"`,
      );
    }
  };
  switch (verb) {
    case "get":
      arity(1, "a KEY");
      break;
    case "put":
      arity(2, "a KEY and a VALUE (- reads the value from stdin)");
      break;
    case "delete":
      arity(1, "a KEY");
      break;
    case "list":
      if (extra.length > 0 || value !== undefined) {
        throw new CliError(`keel kv list takes at most a PREFIX; got an extra argument "${value}"`);
      }
      break;
    default:
      throw new CliError(
        `keel kv needs get, put, delete or list; got ${
          verb === undefined ? "nothing" : `"${verb}"`
        }`,
      );
  }
  if (key === "" && verb !== "list") throw new CliError("KEY must not be empty");
  const target = resolveTarget(flags, io, requestTimeoutMsDefault);
  const json = flags.boolean("json");
  const keyUrl = (k: string) => `${target.url}/v1/kv/${encodeURIComponent(k)}`;
  const headers = clientHeaders(target);
  const failKv = async (url: string, response: Response): Promise<never> => {
    const error = await readApiError(response);
    const described = describeApiError(url, error);
    if (error.status === 401 && target.clientToken === undefined) {
      throw new CommandError(
        `${described}\nThe client API needs a token: pass --token TOKEN, set KEEL_CLIENT_TOKEN, or use --config with security.client_token`,
      );
    }
    if (error.status === 401 || error.status === 403) {
      throw new CommandError(
        `${described}\nThe client token (from ${target.clientTokenSource}) was not accepted`,
      );
    }
    throw new CommandError(described);
  };

  switch (verb) {
    case "get": {
      const url = keyUrl(key!) + (flags.boolean("stale") ? "?consistency=stale" : "");
      const response = await request(url, target.timeoutMs, { headers });
      if (response.status === 404) {
        const error = await readApiError(response);
        if (error.code === "not_found") throw new CommandError(`Key "${key}" not found`);
        throw new CommandError(describeApiError(url, error));
      }
      if (!response.ok) return await failKv(url, response);
      const body = new Uint8Array(await response.arrayBuffer());
      if (json) {
        const text = new TextDecoder("utf-8", { fatal: false }).decode(body);
        const index = response.headers.get("keel-mod-index");
        writeJson(io, { key, value: text, mod_index: index === null ? null : Number(index) });
      } else {
        io.out(body);
        if (io.isTTY) io.out("\n");
      }
      return 0;
    }
    case "put": {
      const body = value === "-" ? await io.readStdin() : value!;
      const url = keyUrl(key!);
      const response = await request(url, target.timeoutMs, { method: "PUT", body, headers });
      if (!response.ok) return await failKv(url, response);
      const result = await readJson<{ index?: number }>(url, response);
      if (json) writeJson(io, result);
      else io.out(`ok, index ${dash(result.index)}\n`);
      return 0;
    }
    case "delete": {
      const url = keyUrl(key!);
      const response = await request(url, target.timeoutMs, { method: "DELETE", headers });
      if (!response.ok) return await failKv(url, response);
      const result = await readJson<{ deleted?: boolean; index?: number }>(url, response);
      if (json) writeJson(io, result);
      else {
        io.out(
          `${result.deleted === false ? "no such key" : "deleted"}, index ${dash(result.index)}\n`,
        );
      }
      return 0;
    }
    case "list": {
      const query = new URLSearchParams({ prefix: key ?? "" });
      const limit = flags.string("limit");
      if (limit !== undefined) {
        const count = Number(limit);
        if (!Number.isInteger(count) || count < 1 || count > kvListLimitMax) {
          throw new CliError(
            `--limit must be a whole number from 1 to ${kvListLimitMax}; got "${limit}"`,
          );
        }
        query.set("limit", String(count));
      }
      const after = flags.string("after");
      if (after !== undefined) query.set("after", after);
      const url = `${target.url}/v1/kv?${query}`;
      const response = await request(url, target.timeoutMs, { headers });
      if (!response.ok) return await failKv(url, response);
      const result = await readJson<{
        items: { key: string; value?: string; value_base64?: string }[];
        more?: boolean;
      }>(url, response);
      if (json) {
        writeJson(io, result);
        return 0;
      }
      const rows = [["KEY", "VALUE"]];
      for (const item of result.items) {
        rows.push([item.key, oneLine(item.value ?? `base64:${item.value_base64 ?? ""}`)]);
      }
      if (result.items.length > 0) io.out(table(rows));
      const last = result.items.at(-1);
      if (result.more === true && last !== undefined) {
        io.err(`(more keys follow: --after ${JSON.stringify(last.key)})\n`);
      }
      return 0;
    }
  }
  return 0;
}

// A value shown in a table stays on one line and within reason.
function oneLine(text: string): string {
  const flat = text.replace(/[\r\n\t]/g, " ");
  return flat.length > 80 ? flat.slice(0, 79) + "…" : flat;
}
