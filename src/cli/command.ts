// `keel command BODY|-` and `keel query BODY|-`: the generic client API of any service
// (POST /v1/command and POST /v1/query, http/command_api.ts). BODY is sent as it is, in
// the service's encoding (JSON by default); the answer's body is printed as it is.

import {
  CommandError,
  connectionOptions,
  describeApiError,
  readApiError,
  request,
  requestTimeoutMsDefault,
  resolveTarget,
} from "./client.ts";
import { CliError, Flags } from "./flags.ts";
import type { Io } from "./output.ts";

export const commandOptions = {
  ...connectionOptions,
  stale: { type: "boolean" },
  "idempotency-key": { type: "string" },
  "content-type": { type: "string" },
} as const;

/** serviceCommand runs `keel command` (verb "command") or `keel query` (verb "query"). */
export async function serviceCommand(
  verb: "command" | "query",
  args: string[],
  io: Io,
): Promise<number> {
  const flags = new Flags(args, commandOptions);
  const [body, ...extra] = flags.positionals;
  if (body === undefined) throw new CliError(`keel ${verb} needs a BODY (- reads it from stdin)`);
  if (extra.length > 0) {
    throw new CliError(`keel ${verb} takes one BODY; got an extra argument "${extra[0]}"`);
  }
  if (verb === "command" && flags.boolean("stale")) {
    throw new CliError("--stale is for keel query: a command is always a write");
  }
  const idempotencyKey = flags.string("idempotency-key");
  if (verb === "query" && idempotencyKey !== undefined) {
    throw new CliError("--idempotency-key is for keel command: a query writes nothing");
  }
  const target = resolveTarget(flags, io, requestTimeoutMsDefault);
  const payload = body === "-" ? await io.readStdin() : new TextEncoder().encode(body);
  const headers: Record<string, string> = {
    "content-type": flags.string("content-type") ?? "application/json",
  };
  if (target.clientToken !== undefined) headers.authorization = `Bearer ${target.clientToken}`;
  if (idempotencyKey !== undefined) headers["idempotency-key"] = idempotencyKey;
  const url = `${target.url}/v1/${verb}` + (flags.boolean("stale") ? "?consistency=stale" : "");
  const response = await request(url, target.timeoutMs, {
    method: "POST",
    headers,
    body: payload as Uint8Array<ArrayBuffer>,
  });
  if (!response.ok) throw new CommandError(describeApiError(url, await readApiError(response)));
  const answer = new Uint8Array(await response.arrayBuffer());
  io.out(answer);
  if (answer.length > 0 && answer[answer.length - 1] !== 0x0a) io.out("\n");
  return 0;
}
