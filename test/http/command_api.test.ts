// The generic client API (src/http/command_api.ts) through app.request(), with a fake node
// that applies commands to a real service through the sessions table, as node.ts does.

import { describe, expect, test } from "bun:test";
import type {
  LeaderInfo,
  NodeApi,
  NodeStatusView,
  ReadBarrierResult,
  SessionKey,
  SubmitResult,
} from "../../src/http/api.ts";
import { createApp } from "../../src/http/app.ts";
import type { FetchLike } from "../../src/http/client_api.ts";
import {
  type ApplyContext,
  jsonService,
  type Service,
  type ServiceCodec,
  standaloneContext,
} from "../../src/service/service.ts";
import { encodeEnvelope, SessionService, unwrapResult } from "../../src/service/sessions.ts";
import { statusView } from "../support/status_view.ts";

/** A counter service over JSON: {"add": n} adds, {"fail": true} throws. */
function counterService(): Service & { total(): number } {
  let total = 0;
  const service = jsonService<{ add?: number; fail?: boolean }, unknown, unknown, unknown>({
    validate: (command) =>
      typeof command !== "object" || command === null || Array.isArray(command)
        ? "A counter command is a JSON object"
        : "add" in command && typeof command.add !== "number"
        ? 'Field "add" must be a number'
        : undefined,
    apply(command, context: ApplyContext) {
      if (command.fail) throw new Error("the counter refuses");
      total += command.add ?? 0;
      return { total, index: context.index };
    },
    query: () => ({ total }),
    snapshot: () => total,
    restore: (state) => void (total = state as number),
  });
  return Object.assign(service, { total: () => total });
}

class FakeNode implements NodeApi {
  readonly service = counterService();
  readonly sessions = new SessionService(this.service);
  index = 0;
  isLeader = true;
  barriers = 0;
  submitted: Array<{ command: Uint8Array; session: SessionKey | undefined }> = [];

  constructor(readonly name: string) {}

  submit(command: Uint8Array, session: SessionKey | undefined): Promise<SubmitResult> {
    this.submitted.push({ command, session });
    if (!this.isLeader) {
      return Promise.resolve({
        ok: false,
        code: "not-leader",
        leader: { name: "node-b", httpUrl: "http://127.0.0.12:7080" },
        message: `${this.name} is a follower`,
      });
    }
    this.index++;
    let bytes: Uint8Array;
    try {
      bytes = this.sessions.apply(
        encodeEnvelope(session, command),
        standaloneContext({ index: this.index, term: 1 }),
      );
    } catch (error: unknown) {
      return Promise.resolve({
        ok: false,
        code: "service-error",
        message: `Service failed at index ${this.index}: ${(error as Error).message}`,
      });
    }
    return Promise.resolve(unwrapResult(bytes, this.index));
  }

  readBarrier(): Promise<ReadBarrierResult> {
    this.barriers++;
    return Promise.resolve({ ok: true });
  }

  leader(): LeaderInfo | null {
    return { name: this.name, httpUrl: "http://self" };
  }

  status(): NodeStatusView {
    return statusView({ name: this.name });
  }
}

function setup(options: { codec?: ServiceCodec; fetchLeader?: FetchLike } = {}) {
  const node = new FakeNode("node-a");
  const service: Pick<Service, "codec" | "query"> = options.codec === undefined
    ? node.service
    : { codec: options.codec, query: node.service.query! };
  const app = createApp({
    node,
    service,
    bodyBytesMax: 1024,
    ...(options.fetchLeader === undefined ? {} : { fetchLeader: options.fetchLeader }),
    logError: () => {},
  });
  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    app.request(path, { method: "POST", body, headers });
  return { node, app, post };
}

describe("POST /v1/command", () => {
  test("applies a JSON command and answers the service's result with its index", async () => {
    const { post } = setup();
    const response = await post("/v1/command", '{ "add": 5 }');
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(response.headers.get("keel-index")).toBe("1");
    expect(await response.json()).toEqual({ total: 5, index: 1 });
  });

  test("a body that is not JSON is 400 and is not proposed", async () => {
    const { node, post } = setup();
    const response = await post("/v1/command", "{add: 5");
    expect(response.status).toBe(400);
    const body = await response.json() as { error: { code: string; message: string } };
    expect(body.error.code).toBe("bad_request");
    expect(body.error.message).toContain("not valid JSON");
    expect(node.submitted).toEqual([]);
  });

  test("a command the service's validate refuses is 400 and is not proposed", async () => {
    const { node, post } = setup();
    for (const [body, message] of [['{"add":"5"}', "must be a number"], ["[1]", "JSON object"]]) {
      const response = await post("/v1/command", body as string);
      expect(response.status).toBe(400);
      const refused = await response.json() as { error: { code: string; message: string } };
      expect(refused.error).toEqual({
        code: "bad_request",
        message: expect.stringContaining(message as string),
      });
    }
    expect(node.submitted).toEqual([]);
    // Queries are not commands: validate does not see them.
    expect((await post("/v1/query", "[1]")).status).toBe(200);
  });

  test("an Idempotency-Key makes a retry return the first result", async () => {
    const { node, post } = setup();
    const first = await post("/v1/command", '{"add":2}', { "idempotency-key": "c:1" });
    const retry = await post("/v1/command", '{"add":2}', { "idempotency-key": "c:1" });
    expect(await retry.json()).toEqual(await first.json());
    expect(node.service.total()).toBe(2);
    expect(node.submitted[1]!.session).toEqual({ clientId: "c", seq: 1 });
    const invalid = await post("/v1/command", '{"add":2}', { "idempotency-key": "c:0" });
    expect(invalid.status).toBe(400);
  });

  test("a throwing apply is 422 service_error with the service's message", async () => {
    const { post } = setup();
    const response = await post("/v1/command", '{"fail":true}');
    expect(response.status).toBe(422);
    expect(await response.json()).toEqual({
      error: { code: "service_error", message: "Service failed at index 1: the counter refuses" },
    });
  });

  test("a follower forwards the command to the leader and relays its answer", async () => {
    const calls: Array<{ url: string; init: RequestInit }> = [];
    const { node, post } = setup({
      fetchLeader: (url, init) => {
        calls.push({ url, init });
        return Promise.resolve(
          new Response('{"total":9}', {
            headers: { "content-type": "application/json", "keel-index": "7" },
          }),
        );
      },
    });
    node.isLeader = false;
    const response = await post("/v1/command", '{"add":9}', { "idempotency-key": "c:3" });
    expect(response.status).toBe(200);
    expect(response.headers.get("keel-index")).toBe("7");
    expect(await response.json()).toEqual({ total: 9 });
    expect(calls[0]!.url).toBe("http://127.0.0.12:7080/v1/command");
    expect((calls[0]!.init.headers as Record<string, string>)["idempotency-key"]).toBe("c:3");
  });

  test("a service codec decides what a body means and how a result looks", async () => {
    const codec: ServiceCodec = {
      request(body) {
        const text = new TextDecoder().decode(body);
        if (!/^add \d+$/.test(text)) throw new Error("expected: add N");
        return new TextEncoder().encode(JSON.stringify({ add: Number(text.slice(4)) }));
      },
      response: (result) => ({
        body: new TextEncoder().encode(
          `total=${JSON.parse(new TextDecoder().decode(result)).total}`,
        ),
        contentType: "text/plain",
      }),
    };
    const { post } = setup({ codec });
    const response = await post("/v1/command", "add 4");
    expect(response.headers.get("content-type")).toBe("text/plain");
    expect(await response.text()).toBe("total=4");
    const refused = await post("/v1/command", "subtract 1");
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain("expected: add N");
  });
});

describe("POST /v1/query", () => {
  test("is linearizable by default and local with consistency=stale", async () => {
    const { node, post } = setup();
    await post("/v1/command", '{"add":3}');
    expect(await (await post("/v1/query", "{}")).json()).toEqual({ total: 3 });
    expect(node.barriers).toBe(1);
    expect(await (await post("/v1/query?consistency=stale", "{}")).json()).toEqual({ total: 3 });
    expect(node.barriers).toBe(1);
  });

  test("a service without query answers 404, and there are no kv routes", async () => {
    const node = new FakeNode("node-a");
    const app = createApp({
      node,
      service: { codec: node.service.codec! },
      bodyBytesMax: 1024,
    });
    expect((await app.request("/v1/query", { method: "POST", body: "{}" })).status).toBe(404);
    expect((await app.request("/v1/kv/a", { method: "PUT", body: "x" })).status).toBe(404);
  });
});
