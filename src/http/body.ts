// Request bodies, bounded: what the client, command and admin routes read before they act.

import { HttpError } from "./errors.ts";

/**
 * BodyAbortedError is a request body the client stopped sending (it closed the connection
 * or reset it mid-body). It is the client's doing, not a fault of the node: the app logs it
 * at info level at most, rate-limited, and nobody is left to read the answer.
 */
export class BodyAbortedError extends HttpError {
  override name = "BodyAbortedError";

  constructor(cause: unknown) {
    super(
      "bad_request",
      "The client closed the connection before the whole request body arrived",
    );
    this.cause = cause;
  }
}

/**
 * readBody reads a request body of at most bodyBytesMax bytes. Content-Length is checked
 * first, but the bytes actually streamed are counted too: the header may be absent (chunked)
 * or wrong. A body the client abandons halfway is a BodyAbortedError.
 */
export async function readBody(request: Request, bodyBytesMax: number): Promise<Uint8Array> {
  try {
    return await readBounded(request, bodyBytesMax);
  } catch (error: unknown) {
    if (isAbort(error, request)) throw new BodyAbortedError(error);
    throw error;
  }
}

async function readBounded(request: Request, bodyBytesMax: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  if (declared !== null) {
    const bytes = /^[0-9]{1,16}$/.test(declared) ? Number(declared) : NaN;
    if (Number.isNaN(bytes)) {
      throw new HttpError("bad_request", `Invalid Content-Length ${JSON.stringify(declared)}`);
    }
    if (bytes > bodyBytesMax) throw bodyTooLarge(bytes, bodyBytesMax);
    // Bun's server reads exactly the declared length, so the body is bounded already: take
    // it in one piece (streaming it costs more than the rest of a small write). A Request
    // made in process is not held to its header: check what came.
    const body = new Uint8Array(await request.arrayBuffer());
    if (body.length > bodyBytesMax) throw bodyTooLarge(body.length, bodyBytesMax);
    return body;
  }
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > bodyBytesMax) {
      await reader.cancel();
      throw bodyTooLarge(total, bodyBytesMax, "at least ");
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const body = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return body;
}

/** isAbort tells a body cut off by the client from any other failure to read it. */
function isAbort(error: unknown, request: Request): boolean {
  if (error instanceof HttpError) return false;
  if (request.signal.aborted) return true;
  // Bun rejects the read with an AbortError ("The connection was closed.") or, for a reset
  // socket, an ECONNRESET.
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return error.name === "AbortError" || code === "ECONNRESET" ||
    code === "ERR_STREAM_PREMATURE_CLOSE";
}

function bodyTooLarge(bytes: number, bodyBytesMax: number, qualifier = ""): HttpError {
  return new HttpError(
    "payload_too_large",
    `Request body of ${qualifier}${bytes} bytes exceeds the maximum of ${bodyBytesMax} bytes`,
  );
}
