// The client API of any service (DESIGN §7): commands and queries in the service's own
// encoding (its codec, JSON by default).
//
//   POST /v1/command     body = an encoded command      -> 200 the encoded result,
//                                                           header keel-index: log index
//   POST /v1/query       body = an encoded query        -> 200 the encoded answer
//        ?consistency=linearizable (default) | stale
//
// Commands are writes: they take `Idempotency-Key: <client-id>:<seq>` and `?redirect=true`
// and are forwarded to the leader exactly like the kv writes (client_api.ts). A command
// whose apply threw is 422 service_error with the service's message, the same on every
// member. A body the codec refuses (its `command` step for commands, where it has one, else
// `request`) is 400 bad_request with the codec's message, and nothing is proposed; a service
// without a query method answers 404 to /v1/query.

import type { Hono } from "hono";
import { AssertionError } from "../lib/assert.ts";
import { jsonCodec, type Service, type ServiceCodec } from "../service/service.ts";
import { type ClientApiDeps, parseWrite, readBarrier, submitCommand } from "./client_api.ts";
import { readBody } from "./body.ts";
import { errorResponse, HttpError } from "./errors.ts";

/** CommandApiDeps is what the generic routes need: the client API's, and the service. */
export interface CommandApiDeps extends ClientApiDeps {
  /** The user's service (not the sessions wrapper): its codec and query. */
  service: Pick<Service, "codec" | "query">;
}

/** registerCommandApi adds POST /v1/command and POST /v1/query to app. */
export function registerCommandApi(app: Hono, deps: CommandApiDeps): void {
  const codec: ServiceCodec = deps.service.codec ?? jsonCodec;

  app.post("/v1/command", async (c) => {
    const write = parseWrite(c);
    const body = await readBody(c.req.raw, deps.bodyBytesMax);
    // The codec's command step, where it has one, decides what may be proposed.
    const read = codec.command?.bind(codec) ?? codec.request.bind(codec);
    const command = decodeRequest(read, body, c.req.header("content-type"));
    const outcome = await submitCommand(c, deps, command, write, body);
    if (outcome instanceof Response) return outcome;
    return answer(codec, outcome.result, { "keel-index": String(outcome.index) });
  });

  app.post("/v1/query", async (c) => {
    const query = deps.service.query?.bind(deps.service);
    if (query === undefined) {
      return errorResponse("not_found", "This node's service answers no queries");
    }
    const body = await readBody(c.req.raw, deps.bodyBytesMax);
    const request = decodeRequest(codec.request.bind(codec), body, c.req.header("content-type"));
    await readBarrier(c, deps.node);
    let result: Uint8Array;
    try {
      result = query(request);
    } catch (error: unknown) {
      if (error instanceof AssertionError) throw error;
      return errorResponse(
        "service_error",
        `Service query failed: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    return answer(codec, result, {});
  });
}

function decodeRequest(
  read: (body: Uint8Array, contentType: string | undefined) => Uint8Array,
  body: Uint8Array,
  contentType: string | undefined,
): Uint8Array {
  try {
    return read(body, contentType);
  } catch (error: unknown) {
    if (error instanceof AssertionError) throw error;
    throw new HttpError("bad_request", error instanceof Error ? error.message : String(error));
  }
}

function answer(
  codec: ServiceCodec,
  result: Uint8Array,
  headers: Record<string, string>,
): Response {
  const { body, contentType } = codec.response(result);
  return new Response(body as Uint8Array<ArrayBuffer>, {
    status: 200,
    headers: { "content-type": contentType, ...headers },
  });
}
