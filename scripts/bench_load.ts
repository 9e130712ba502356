// The benchmark's clients: one PUT or GET of the key-value API, and closed loops of them.

import { countInto, maxGapMs } from "./bench_lib.ts";

/** Bound on one load request; above the server's 5 s request timeout, so its answer wins. */
export const requestTimeoutMs = 10_000;
/** Pause after a failed request, so an erroring cluster is not hammered in a tight loop. */
const errorBackoffMs = 10;

/** Outcome is one request: acknowledged (2xx), or the kind of failure. */
export type Outcome = { ok: true } | { ok: false; error: string };

async function outcomeOf(
  response: Response,
  check?: (body: ArrayBuffer) => string | undefined,
): Promise<Outcome> {
  const body = await response.arrayBuffer();
  if (response.status >= 200 && response.status < 300) {
    const problem = check?.(body);
    return problem === undefined ? { ok: true } : { ok: false, error: problem };
  }
  let code = "";
  try {
    const json = JSON.parse(new TextDecoder().decode(body)) as { error?: { code?: string } };
    code = json.error?.code ?? "";
  } catch {
    code = "non-json";
  }
  return { ok: false, error: `${response.status} ${code}`.trim() };
}

function thrownError(error: unknown): string {
  if (error instanceof Error) {
    if (error.name === "TimeoutError" || error.name === "AbortError") return "client timeout";
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" ? code : error.name;
  }
  return String(error);
}

/** put writes body to key through the member at base (an HTTP base URL). */
export async function put(
  base: string,
  key: string,
  body: Uint8Array,
  timeoutMs = requestTimeoutMs,
): Promise<Outcome> {
  try {
    const response = await fetch(`${base}/v1/kv/${encodeURIComponent(key)}`, {
      method: "PUT",
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    return await outcomeOf(response);
  } catch (error: unknown) {
    return { ok: false, error: thrownError(error) };
  }
}

/**
 * get reads key through the member at base; a value of another length than valueBytes
 * counts as a failure. stale asks for ?consistency=stale (the member's own state).
 */
export async function get(
  base: string,
  key: string,
  valueBytes: number,
  stale = false,
): Promise<Outcome> {
  try {
    const query = stale ? "?consistency=stale" : "";
    const response = await fetch(`${base}/v1/kv/${encodeURIComponent(key)}${query}`, {
      signal: AbortSignal.timeout(requestTimeoutMs),
    });
    return await outcomeOf(
      response,
      (body) =>
        body.byteLength === valueBytes ? undefined : `wrong value (${body.byteLength} bytes)`,
    );
  } catch (error: unknown) {
    return { ok: false, error: thrownError(error) };
  }
}

/** Request is one client's next operation in a phase. */
export type Request = (client: number) => Promise<Outcome>;

/** Driven is what a closed-loop run saw. */
export interface Driven {
  /** Latencies of the acknowledged requests, ms. */
  latenciesMs: number[];
  errorKinds: Record<string, number>;
  elapsedMs: number;
  /** Longest time with no request acknowledged, ms. */
  maxGapMs: number;
}

/**
 * drive runs `clients` closed loops: each sends a request, waits for the answer, and
 * sends the next. They stop after `until` ms, or when the promise `until` settles.
 */
export async function drive(
  clients: number,
  until: number | Promise<unknown>,
  request: Request,
): Promise<Driven> {
  const latenciesMs: number[] = [];
  const acknowledgedAt: number[] = [];
  const errorKinds: Record<string, number> = {};
  const started = performance.now();
  let end = typeof until === "number" ? started + until : Infinity;
  if (typeof until !== "number") {
    const stop = (): void => {
      end = performance.now();
    };
    void until.then(stop, stop);
  }
  const loop = async (client: number): Promise<void> => {
    while (performance.now() < end) {
      const sent = performance.now();
      const outcome = await request(client);
      const took = performance.now() - sent;
      if (outcome.ok) {
        latenciesMs.push(took);
        acknowledgedAt.push(sent + took);
      } else {
        countInto(errorKinds, outcome.error);
        await Bun.sleep(errorBackoffMs);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)));
  const ended = performance.now();
  return {
    latenciesMs,
    errorKinds,
    elapsedMs: ended - started,
    maxGapMs: maxGapMs(started, acknowledgedAt, Math.min(ended, end)),
  };
}
