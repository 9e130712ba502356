// HTTP errors are JSON with a stable code, the same shape on every route:
//   { "error": { "code": "not_leader", "message": "...", "leader": { "name", "url" } } }
// `leader` is present when the error concerns the leader and one is known. Clients branch on
// `code`; the message is for people and may change.

import type { LeaderInfo } from "./api.ts";

/** ErrorCode is the stable, machine-readable part of an error response. */
export type ErrorCode =
  | "not_found"
  | "bad_request"
  | "payload_too_large"
  | "not_leader"
  | "no_leader"
  | "timeout"
  | "unavailable"
  | "internal"
  /** A compare-and-set found a different current value (409; the body has `current`). */
  | "cas_failed"
  /**
   * The write was committed but refused by the sessions table, e.g. an Idempotency-Key seq
   * older than the client's last applied one (409; the message says why).
   */
  | "rejected"
  /**
   * An Idempotency-Key (client id and seq) already used for a different write: another key,
   * value or kind of write (409). Nothing was applied; a new write needs a new seq.
   */
  | "idempotency_key_reused"
  /**
   * The service threw applying the command (or answering the query): every member rolled
   * it back and answers the same message (422). A retry fails the same way.
   */
  | "service_error"
  /** A method keel serves on no route (CONNECT, TRACE, PATCH, ...): 501, with Allow. */
  | "not_implemented";

/** errorStatus is the HTTP status of each code. */
export const errorStatus: Record<
  ErrorCode,
  400 | 404 | 409 | 413 | 422 | 500 | 501 | 503 | 504
> = {
  not_found: 404,
  bad_request: 400,
  payload_too_large: 413,
  not_leader: 503,
  no_leader: 503,
  timeout: 504,
  unavailable: 503,
  internal: 500,
  cas_failed: 409,
  rejected: 409,
  idempotency_key_reused: 409,
  service_error: 422,
  not_implemented: 501,
};

/** ErrorBody is the JSON of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; leader?: { name: string; url: string } };
}

/** errorBody builds the JSON of an error; leader is included when known. */
export function errorBody(
  code: ErrorCode,
  message: string,
  leader: LeaderInfo | null = null,
): ErrorBody {
  const body: ErrorBody = { error: { code, message } };
  if (leader !== null) body.error.leader = { name: leader.name, url: leader.httpUrl };
  return body;
}

/** ErrorResponseOptions adjust errorResponse. */
export interface ErrorResponseOptions {
  leader?: LeaderInfo | null;
  /** Overrides the code's status (a redirect carries a not_leader body with 307). */
  status?: number;
  headers?: Record<string, string>;
  /** Extra top-level fields beside `error`, e.g. a failed CAS's `current`. */
  extra?: Record<string, unknown>;
}

/** errorResponse makes a JSON error Response. */
export function errorResponse(
  code: ErrorCode,
  message: string,
  options: ErrorResponseOptions = {},
): Response {
  const body = { ...options.extra, ...errorBody(code, message, options.leader ?? null) };
  return new Response(JSON.stringify(body), {
    status: options.status ?? errorStatus[code],
    headers: { "content-type": "application/json", ...options.headers },
  });
}

/**
 * HttpError is an expected request failure thrown from deep in a handler (a bad header, a
 * body too large); the app's error handler turns it into its JSON response.
 */
export class HttpError extends Error {
  override name = "HttpError";
  readonly code: ErrorCode;
  readonly leader: LeaderInfo | null;

  constructor(code: ErrorCode, message: string, leader: LeaderInfo | null = null) {
    super(message);
    this.code = code;
    this.leader = leader;
  }

  toResponse(): Response {
    return errorResponse(this.code, this.message, { leader: this.leader });
  }
}
