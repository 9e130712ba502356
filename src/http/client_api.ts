// The client API of the kv service.
//
//   PUT    /v1/kv/:key          body = raw value bytes           -> 200 { index }
//   GET    /v1/kv/:key          raw value, header keel-mod-index -> 200 | 404 not_found
//   DELETE /v1/kv/:key                                           -> 200 { deleted, index }
//   POST   /v1/kv/:key/cas      { expected, value }              -> 200 { ok: true, index }
//                                                                 | 409 cas_failed
//   GET    /v1/kv?prefix=&limit=&after=                          -> 200 { items, more }
//
// A key is the rest of the path after /v1/kv/, slashes included, percent-decoded:
// PUT /v1/kv/app/config/db and PUT /v1/kv/app%2Fconfig%2Fdb name the same key
// "app/config/db", and /v1/kv//app/config/db the key "/app/config/db" (a trailing slash is
// part of the key too). "%" itself is sent as %25; a sequence that is not valid
// percent-encoding (e.g. "%zz") is kept literally. Keys are 1 to 4096 UTF-8 bytes.
//
// POST only ever means compare-and-set: POST /v1/kv/{key}/cas swaps the key before the last
// "/cas" of the path. So PUT and GET /v1/kv/jobs/cas are the key "jobs/cas", and its
// compare-and-set is POST /v1/kv/jobs/cas/cas (or /v1/kv/jobs%2Fcas/cas); an encoded
// %2Fcas is part of the key, never the suffix.
//
// Writes (PUT, DELETE, cas) may carry `Idempotency-Key: <client-id>:<seq>` (client id of 1 to
// 128 characters from [A-Za-z0-9._-], seq a positive integer the client increases per
// write). A retry with the same key and the same write returns the first attempt's result
// (its index too), even through a new leader; the same key with another write (another key,
// value or kind of write) is 409 idempotency_key_reused and nothing is applied; a seq below
// the client's last applied one is 409 rejected. Only the client's latest seq is remembered.
//
// A write reaching a follower is forwarded to the leader (header keel-forwarded: 1; a
// forwarded request is never forwarded again) and the leader's answer relayed; with
// `?redirect=true` the follower answers 307 with the leader's URL in Location instead.
//
// Reads take `?consistency=linearizable` (the default: a ReadIndex barrier, served by any
// member) or `?consistency=stale` (local state, possibly behind).
//
// With security.client_token set, every /v1/* request needs `Authorization: Bearer TOKEN`:
// 401 unauthorized without the header (with WWW-Authenticate), 403 forbidden with another
// token; the token is compared in constant time. A forwarded write carries the client's
// header to the leader. /status, /healthz, /readyz and /metrics stay open.
//
// A failed compare-and-set is 409 with code cas_failed and the current value beside the
// error, so clients can retry from it without another read:
//   { "error": {...}, "ok": false, "index": N, "current": "v" | null }  (null: key absent)
// with `current_base64` instead of `current` when the value is not valid UTF-8.

import { Buffer } from "node:buffer";
import type { Context, Hono } from "hono";
import type { LeaderInfo, NodeApi, SessionKey } from "./api.ts";
import { bearerToken, tokensEqual } from "./auth.ts";
import { readBody } from "./body.ts";
import { errorResponse, HttpError } from "./errors.ts";
import {
  decodeKvResult,
  encodeCas,
  encodeDelete,
  encodePut,
  kvListLimitMax,
  type KvResult,
  type KvService,
  kvValueBytesMax,
  validateKey,
} from "../service/kv.ts";

/** listLimitDefault is the number of items a list returns when no limit is given. */
export const listLimitDefault = 100;
/** forwardTimeoutMsDefault bounds a write forwarded to the leader, response included. */
export const forwardTimeoutMsDefault = 10_000;

/** FetchLike is the part of fetch used to forward writes; tests inject a fake leader. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** ClientApiDeps is what the client routes need. */
export interface ClientApiDeps {
  node: NodeApi;
  /** The kv service; undefined when the node runs another service (no /v1/kv routes). */
  kv: KvService | undefined;
  bodyBytesMax: number;
  fetchLeader: FetchLike;
  forwardTimeoutMs: number;
  /** security.client_token: when set, /v1/* needs it as a bearer token. */
  clientToken?: string | undefined;
}

/** Headers relayed from the leader's answer to a forwarded write. */
const relayedHeaders = ["content-type", "keel-mod-index", "keel-index"];
/**
 * keyRoute is the path of one key: the rest of the path after /v1/kv/, slashes included.
 * Its metrics label reads "/v1/kv/:key" (metrics_http.ts drops the pattern).
 */
const keyRoute = "/v1/kv/:key{.+}";
const forwardedHeader = "keel-forwarded";

/** registerClientApi adds the /v1/kv routes to app. */
export function registerClientApi(app: Hono, deps: ClientApiDeps): void {
  const clientToken = deps.clientToken;
  if (clientToken !== undefined) {
    // Before the routes, so it answers for every /v1 path, known or not. A refused
    // request's route label in the metrics is "/v1/*".
    app.use("/v1/*", async (c, next) => {
      const refusal = authorizeClient(clientToken, c.req.header("authorization"));
      if (refusal !== undefined) return refusal;
      await next();
    });
  }
  // Another service than kv: no kv routes (POST /v1/command serves it, command_api.ts).
  const kv = deps.kv;
  if (kv === undefined) return;
  app.put(keyRoute, async (c) => {
    const key = keyParam(c);
    const write = parseWrite(c);
    const value = await readBody(c.req.raw, deps.bodyBytesMax);
    if (value.length > kvValueBytesMax) {
      throw new HttpError(
        "payload_too_large",
        `Value of ${value.length} bytes exceeds the maximum of ${kvValueBytesMax} bytes`,
      );
    }
    const outcome = await submitWrite(c, deps, encodePut(key, value), write, value);
    if (outcome instanceof Response) return outcome;
    const result = expectResult(outcome, "put");
    return c.json({ index: result.index });
  });

  app.get(keyRoute, async (c) => {
    const key = keyParam(c);
    await readBarrier(c, deps.node);
    const entry = kv.get(key);
    if (entry === undefined) {
      return errorResponse("not_found", `Key ${JSON.stringify(key)} not found`);
    }
    return new Response(entry.value as Uint8Array<ArrayBuffer>, {
      status: 200,
      headers: {
        "content-type": "application/octet-stream",
        "keel-mod-index": String(entry.modIndex),
      },
    });
  });

  app.delete(keyRoute, async (c) => {
    const key = keyParam(c);
    const write = parseWrite(c);
    const outcome = await submitWrite(c, deps, encodeDelete(key), write, null);
    if (outcome instanceof Response) return outcome;
    const result = expectResult(outcome, "delete");
    return c.json({ deleted: result.deleted, index: result.index });
  });

  app.post(`${keyRoute}/cas`, async (c) => {
    const key = keyParam(c);
    const write = parseWrite(c);
    const body = await readBody(c.req.raw, deps.bodyBytesMax);
    const request = parseCasRequest(body);
    const command = encodeCas(key, request.expected, request.value);
    const outcome = await submitWrite(c, deps, command, write, body);
    if (outcome instanceof Response) return outcome;
    const result = expectResult(outcome, "cas");
    if (result.ok) return c.json({ ok: true, index: result.index });
    const current = result.current === null
      ? { current: null }
      : valueJson("current", result.current);
    return errorResponse(
      "cas_failed",
      `Compare-and-set of key ${JSON.stringify(key)} failed: the current value differs`,
      { extra: { ok: false, index: result.index, ...current } },
    );
  });

  app.get("/v1/kv", async (c) => {
    const prefix = c.req.query("prefix") ?? "";
    const after = c.req.query("after");
    const limit = parseLimit(c.req.query("limit"));
    await readBarrier(c, deps.node);
    const { items, more } = kv.list(prefix, limit, after);
    return c.json({
      items: items.map((item) => ({
        key: item.key,
        ...valueJson("value", item.value),
        mod_index: item.modIndex,
      })),
      more,
    });
  });
}

// ---- Requests -------------------------------------------------------------------------

export interface WriteOptions {
  session: SessionKey | undefined;
  redirect: boolean;
}

function keyParam(c: Context): string {
  const key = c.req.param("key");
  if (key === undefined) throw new HttpError("bad_request", "Key is missing from the path");
  const problem = validateKey(key);
  if (problem !== undefined) throw new HttpError("bad_request", problem);
  return key;
}

export function parseWrite(c: Context): WriteOptions {
  const redirect = c.req.query("redirect");
  if (redirect !== undefined && redirect !== "true" && redirect !== "false") {
    throw new HttpError(
      "bad_request",
      `Query parameter redirect must be "true" or "false", not ${JSON.stringify(redirect)}`,
    );
  }
  return {
    session: parseIdempotencyKey(c.req.header("idempotency-key")),
    redirect: redirect === "true",
  };
}

const idempotencyKeyPattern = /^([A-Za-z0-9._-]{1,128}):([0-9]{1,16})$/;

/** parseIdempotencyKey reads `<client-id>:<seq>`; undefined header means no session. */
export function parseIdempotencyKey(header: string | undefined): SessionKey | undefined {
  if (header === undefined) return undefined;
  const match = idempotencyKeyPattern.exec(header);
  const seq = match === null ? NaN : Number(match[2]);
  if (match === null || !Number.isSafeInteger(seq) || seq < 1) {
    throw new HttpError(
      "bad_request",
      `Idempotency-Key ${
        JSON.stringify(header)
      } must be <client-id>:<seq>, the client id 1 to 128 characters of [A-Za-z0-9._-] and seq a positive integer`,
    );
  }
  return { clientId: match[1] as string, seq };
}

function parseConsistency(c: Context): "linearizable" | "stale" {
  const consistency = c.req.query("consistency") ?? "linearizable";
  if (consistency !== "linearizable" && consistency !== "stale") {
    throw new HttpError(
      "bad_request",
      `Query parameter consistency must be "linearizable" or "stale", not ${
        JSON.stringify(consistency)
      }`,
    );
  }
  return consistency;
}

/** parseLimit reads a list limit; values above kvListLimitMax are lowered to it. */
function parseLimit(text: string | undefined): number {
  if (text === undefined) return listLimitDefault;
  const limit = /^[0-9]{1,16}$/.test(text) ? Number(text) : NaN;
  if (!(limit >= 1)) {
    throw new HttpError(
      "bad_request",
      `Query parameter limit must be a positive integer, not ${JSON.stringify(text)}`,
    );
  }
  return Math.min(limit, kvListLimitMax);
}

/**
 * parseCasRequest reads `{ expected, value }`. Each is a UTF-8 string or null (expected
 * null: the key must be absent; value null: delete the key), or given as `expected_base64`
 * / `value_base64` for binary values. Each must be given exactly once, so that a missing
 * field is never mistaken for null.
 */
function parseCasRequest(
  body: Uint8Array,
): { expected: Uint8Array | null; value: Uint8Array | null } {
  let text: string;
  try {
    text = strictUtf8.decode(body);
  } catch {
    throw new HttpError("bad_request", "Request body is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error: unknown) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new HttpError("bad_request", `Request body is not valid JSON: ${reason}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new HttpError("bad_request", "Request body must be a JSON object");
  }
  const fields = json as Record<string, unknown>;
  return { expected: casField(fields, "expected"), value: casField(fields, "value") };
}

function casField(fields: Record<string, unknown>, name: string): Uint8Array | null {
  const base64Name = `${name}_base64`;
  const hasText = Object.hasOwn(fields, name);
  const hasBase64 = Object.hasOwn(fields, base64Name);
  if (hasText && hasBase64) {
    throw new HttpError("bad_request", `Give only one of "${name}" and "${base64Name}"`);
  }
  if (!hasText && !hasBase64) {
    throw new HttpError(
      "bad_request",
      `Field "${name}" is required: a string, or null for ${
        name === "expected" ? "an absent key" : "deletion"
      }`,
    );
  }
  const field = hasText ? fields[name] : fields[base64Name];
  if (field === null) return null;
  if (typeof field !== "string") {
    throw new HttpError(
      "bad_request",
      `Field "${hasText ? name : base64Name}" must be a string or null`,
    );
  }
  let value: Uint8Array;
  if (hasText) {
    value = textEncoder.encode(field);
  } else {
    if (!base64Pattern.test(field)) {
      throw new HttpError("bad_request", `Field "${base64Name}" is not valid base64`);
    }
    value = new Uint8Array(Buffer.from(field, "base64"));
  }
  if (value.length > kvValueBytesMax) {
    throw new HttpError(
      "payload_too_large",
      `Field "${name}" of ${value.length} bytes exceeds the maximum of ${kvValueBytesMax} bytes`,
    );
  }
  return value;
}

const base64Pattern = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// ---- Replication ----------------------------------------------------------------------

/** readBarrier waits for a linearizable read unless the request asked for a stale one. */
export async function readBarrier(c: Context, node: NodeApi): Promise<void> {
  if (parseConsistency(c) === "stale") return;
  const barrier = await node.readBarrier();
  if (barrier.ok) return;
  const code = barrier.code === "not-leader"
    ? "not_leader"
    : barrier.code === "no-leader"
    ? "no_leader"
    : "timeout";
  throw new HttpError(code, barrier.message, barrier.leader);
}

/**
 * submitWrite replicates a kv command. It answers with the decoded result once applied, or
 * with the Response to send when this node could not apply it: forwarded, redirected or an
 * error. `body` is the request body to forward (null: none).
 */
async function submitWrite(
  c: Context,
  deps: ClientApiDeps,
  command: Uint8Array,
  write: WriteOptions,
  body: Uint8Array | null,
): Promise<KvResult | Response> {
  const outcome = await submitCommand(c, deps, command, write, body);
  if (outcome instanceof Response) return outcome;
  // A retry deduplicated by the sessions table carries the first attempt's result, whose
  // index is the first attempt's.
  const result = decodeKvResult(outcome.result);
  if (result.type === "error") return errorResponse("bad_request", result.message);
  return result;
}

/**
 * submitCommand replicates a command of any service: the result bytes and the entry's
 * index once applied here, or the Response to send (forwarded, redirected or an error).
 */
export async function submitCommand(
  c: Context,
  deps: ClientApiDeps,
  command: Uint8Array,
  write: WriteOptions,
  body: Uint8Array | null,
): Promise<{ result: Uint8Array; index: number } | Response> {
  const outcome = await deps.node.submit(command, write.session);
  if (outcome.ok) return { result: outcome.result, index: outcome.index };
  switch (outcome.code) {
    case "timeout":
      return errorResponse(
        "timeout",
        `${outcome.message}; the write may still be applied: retry with the same Idempotency-Key`,
      );
    case "unavailable":
      return errorResponse("unavailable", outcome.message);
    case "rejected":
      return errorResponse(
        outcome.reason === "idempotency-key-reused" ? "idempotency_key_reused" : "rejected",
        outcome.message,
      );
    case "service-error":
      return errorResponse("service_error", outcome.message);
    case "not-leader":
      break;
  }
  const leader = outcome.leader;
  // The node's message says that no leader is known (and why, when it knows): as it is.
  if (leader === null) return errorResponse("no_leader", outcome.message);
  if (write.redirect) {
    return errorResponse("not_leader", `The leader is ${JSON.stringify(leader.name)}`, {
      leader,
      status: 307,
      headers: { location: leaderUrl(c, leader) },
    });
  }
  if (c.req.header(forwardedHeader) !== undefined) {
    return errorResponse(
      "not_leader",
      `This request was forwarded here as to the leader, but ${
        JSON.stringify(deps.node.name)
      } is not the leader: ${outcome.message}`,
      { leader },
    );
  }
  return await forward(c, deps, leader, body);
}

/** leaderUrl is this request's URL on the leader, without the redirect parameter. */
function leaderUrl(c: Context, leader: LeaderInfo): string {
  const url = new URL(c.req.url);
  url.searchParams.delete("redirect");
  return `${leader.httpUrl.replace(/\/+$/, "")}${url.pathname}${url.search}`;
}

async function forward(
  c: Context,
  deps: ClientApiDeps,
  leader: LeaderInfo,
  body: Uint8Array | null,
): Promise<Response> {
  const headers: Record<string, string> = { [forwardedHeader]: "1" };
  for (const name of ["content-type", "idempotency-key", "authorization"]) {
    const value = c.req.header(name);
    if (value !== undefined) headers[name] = value;
  }
  const target = leaderUrl(c, leader);
  try {
    const response = await deps.fetchLeader(target, {
      method: c.req.method,
      headers,
      body: body === null ? null : body as Uint8Array<ArrayBuffer>,
      redirect: "manual",
      signal: AbortSignal.timeout(deps.forwardTimeoutMs),
    });
    // Read the whole answer inside the timeout; answers to writes are small JSON.
    const answer = await response.arrayBuffer();
    const relayed: Record<string, string> = {};
    for (const name of relayedHeaders) {
      const value = response.headers.get(name);
      if (value !== null) relayed[name] = value;
    }
    return new Response(answer, { status: response.status, headers: relayed });
  } catch (error: unknown) {
    const reason = error instanceof Error ? error.message : String(error);
    if (error instanceof Error && error.name === "TimeoutError") {
      return errorResponse(
        "timeout",
        `Forwarding to leader ${
          JSON.stringify(leader.name)
        } at ${target} timed out after ${deps.forwardTimeoutMs} ms; the write may still be applied: retry with the same Idempotency-Key`,
        { leader },
      );
    }
    return errorResponse(
      "unavailable",
      `Forwarding to leader ${JSON.stringify(leader.name)} at ${target} failed: ${reason}`,
      { leader },
    );
  }
}

/**
 * authorizeClient answers the refusal for a client API request, or undefined when its
 * bearer token is the client token.
 */
export function authorizeClient(
  clientToken: string,
  authorization: string | undefined,
): Response | undefined {
  const token = bearerToken(authorization);
  if (token === undefined) {
    return authError(
      "unauthorized",
      401,
      'The client API needs the header "Authorization: Bearer TOKEN" (security.client_token)',
      { "www-authenticate": 'Bearer realm="keel"' },
    );
  }
  if (!tokensEqual(token, clientToken)) {
    return authError("forbidden", 403, "The bearer token is not the client token");
  }
  return undefined;
}

function authError(
  code: "unauthorized" | "forbidden",
  status: 401 | 403,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

// ---- Results --------------------------------------------------------------------------

function expectResult<T extends KvResult["type"]>(
  result: KvResult,
  type: T,
): Extract<KvResult, { type: T }> {
  if (result.type !== type) {
    // The sessions table answered a retry with the cached result of another kind of
    // write: the client reused an Idempotency-Key for a different request. (The table
    // refuses that itself now; a write it cached from a snapshot without digests can still
    // come this way.)
    if (result.type === "error") {
      throw new HttpError("rejected", `The write was refused: ${result.message}`);
    }
    throw new HttpError(
      "idempotency_key_reused",
      `This Idempotency-Key was already used for a different write (a ${result.type}, not a ${type})`,
    );
  }
  return result as Extract<KvResult, { type: T }>;
}

/** valueJson shows a value as UTF-8 text under `name`, or as base64 under `name_base64`. */
function valueJson(name: string, value: Uint8Array): Record<string, string> {
  try {
    return { [name]: strictUtf8.decode(value) };
  } catch {
    return { [`${name}_base64`]: Buffer.from(value).toString("base64") };
  }
}

const textEncoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
