import { describe, expect, test } from "bun:test";
import type { Hono } from "hono";
import type {
  LeaderInfo,
  NodeApi,
  NodeStatusView,
  ReadBarrierResult,
  SessionKey,
  SubmitResult,
} from "../../src/http/api.ts";
import { type AppDeps, createApp } from "../../src/http/app.ts";
import type { FetchLike } from "../../src/http/client_api.ts";
import { decodeKvResult, encodePut, KvService } from "../../src/service/kv.ts";
import { encodeEnvelope, SessionService, unwrapResult } from "../../src/service/sessions.ts";
import { statusView } from "../support/status_view.ts";

const leaderInfo: LeaderInfo = { name: "node-b", httpUrl: "http://127.0.0.12:7080" };

/**
 * FakeNode applies commands directly, wrapped and unwrapped by service/sessions.ts as a real
 * node does, through the same sessions table, when it plays the leader; as a follower it
 * answers not-leader.
 */
class FakeNode implements NodeApi {
  readonly kv = new KvService();
  readonly sessions = new SessionService(this.kv);
  index = 0;
  isLeader = true;
  knownLeader: LeaderInfo | null = leaderInfo;
  barrier: ReadBarrierResult = { ok: true };
  barriers = 0;
  submitted: { command: Uint8Array; session: SessionKey | undefined }[] = [];
  /** When set, submit answers this instead of applying. */
  failure: SubmitResult | undefined;

  constructor(readonly name: string) {}

  submit(command: Uint8Array, session: SessionKey | undefined): Promise<SubmitResult> {
    this.submitted.push({ command, session });
    if (this.failure !== undefined) return Promise.resolve(this.failure);
    if (!this.isLeader) {
      return Promise.resolve({
        ok: false,
        code: "not-leader",
        leader: this.knownLeader,
        message: `${this.name} is a follower`,
      });
    }
    this.index++;
    const result = this.sessions.apply(encodeEnvelope(session, command), {
      index: this.index,
      term: 1,
    });
    return Promise.resolve(unwrapResult(result, this.index));
  }

  readBarrier(): Promise<ReadBarrierResult> {
    this.barriers++;
    return Promise.resolve(this.barrier);
  }

  leader(): LeaderInfo | null {
    return this.isLeader ? { name: this.name, httpUrl: "http://self" } : this.knownLeader;
  }

  status(): NodeStatusView {
    return statusView({
      name: this.name,
      role: this.isLeader ? "leader" : "follower",
      commitIndex: this.index,
    });
  }
}

interface Setup {
  node: FakeNode;
  app: Hono;
  errors: unknown[];
}

function setup(
  options: {
    bodyBytesMax?: number;
    fetchLeader?: FetchLike;
    name?: string;
    logInfo?: AppDeps["logInfo"];
    clock?: () => number;
  } = {},
): Setup {
  const node = new FakeNode(options.name ?? "node-a");
  const errors: unknown[] = [];
  const app = createApp({
    node,
    kv: node.kv,
    bodyBytesMax: options.bodyBytesMax ?? 1024,
    ...(options.fetchLeader === undefined ? {} : { fetchLeader: options.fetchLeader }),
    ...(options.logInfo === undefined ? {} : { logInfo: options.logInfo }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    logError: (_message, error) => errors.push(error),
  });
  return { node, app, errors };
}

/** rawExchange writes `request` on a fresh TCP connection and returns all it gets back. */
async function rawExchange(port: number, request: string): Promise<string> {
  let answer = "";
  await new Promise<void>((resolve, reject) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (socket) => void socket.write(request),
        data: (_socket, data) => void (answer += new TextDecoder().decode(data)),
        close: () => resolve(),
        error: (_socket, error) => reject(error),
      },
    }).catch(reject);
  });
  return answer;
}

const base = "http://127.0.0.11:7080";
const text = new TextEncoder();

async function put(app: Hono, key: string, value: string | Uint8Array, headers = {}) {
  return await app.request(`/v1/kv/${encodeURIComponent(key)}`, {
    method: "PUT",
    body: typeof value === "string" ? value : value as Uint8Array<ArrayBuffer>,
    headers,
  });
}

async function expectError(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toContain("application/json");
  const body = await response.json() as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe("string");
  return body;
}

describe("kv routes", () => {
  test("PUT then GET returns the value and its modification index", async () => {
    const { app, node } = setup();
    const written = await put(app, "greeting", "hello");
    expect(written.status).toBe(200);
    expect(await written.json()).toEqual({ index: 1 });

    const read = await app.request("/v1/kv/greeting");
    expect(read.status).toBe(200);
    expect(read.headers.get("content-type")).toBe("application/octet-stream");
    expect(read.headers.get("keel-mod-index")).toBe("1");
    expect(await read.text()).toBe("hello");
    expect(node.barriers).toBe(1);
  });

  test("binary values round-trip byte for byte", async () => {
    const { app } = setup();
    const value = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
    expect((await put(app, "bin", value)).status).toBe(200);
    const read = await app.request("/v1/kv/bin");
    expect(new Uint8Array(await read.arrayBuffer())).toEqual(value);
  });

  test("an empty body stores an empty value", async () => {
    const { app } = setup();
    expect((await app.request("/v1/kv/empty", { method: "PUT" })).status).toBe(200);
    const read = await app.request("/v1/kv/empty");
    expect(read.status).toBe(200);
    expect((await read.arrayBuffer()).byteLength).toBe(0);
  });

  test("keys are percent-decoded path segments, so %2F carries a slash", async () => {
    const { app, node } = setup();
    expect((await app.request("/v1/kv/a%2Fb%20c", { method: "PUT", body: "x" })).status).toBe(200);
    expect(node.kv.get("a/b c")?.value).toEqual(text.encode("x"));
    expect(await (await app.request("/v1/kv/a%2Fb%20c")).text()).toBe("x");
    expect((await put(app, "50%/x", "pct")).status).toBe(200);
    expect(node.kv.get("50%/x")?.value).toEqual(text.encode("pct"));
    // Not valid percent-encoding: kept as it is.
    expect((await app.request("/v1/kv/%zz", { method: "PUT", body: "z" })).status).toBe(200);
    expect(node.kv.get("%zz")?.value).toEqual(text.encode("z"));
  });

  test("keys with slashes work as written, leading slash too, and %2F names the same key", async () => {
    const { app, node } = setup();
    expect((await app.request("/v1/kv/app/k1", { method: "PUT", body: "one" })).status).toBe(200);
    expect(node.kv.get("app/k1")?.value).toEqual(text.encode("one"));
    expect(await (await app.request("/v1/kv/app%2Fk1")).text()).toBe("one");

    const written = await app.request("/v1/kv//app/config/db", { method: "PUT", body: "pg" });
    expect(written.status).toBe(200);
    expect(node.kv.get("/app/config/db")?.value).toEqual(text.encode("pg"));
    for (
      const path of [
        "/v1/kv//app/config/db",
        "/v1/kv/%2Fapp%2Fconfig%2Fdb",
        "/v1/kv/%2Fapp/config%2Fdb",
      ]
    ) {
      expect(await (await app.request(path)).text()).toBe("pg");
    }
    const listed = await (await app.request("/v1/kv?prefix=/app/")).json() as {
      items: { key: string }[];
    };
    expect(listed.items.map((item) => item.key)).toEqual(["/app/config/db"]);

    const deleted = await app.request("/v1/kv//app/config/db", { method: "DELETE" });
    expect(await deleted.json()).toMatchObject({ deleted: true });
    expect(node.kv.get("/app/config/db")).toBeUndefined();
    // A trailing slash is part of the key.
    expect((await app.request("/v1/kv/dir/", { method: "PUT", body: "d" })).status).toBe(200);
    expect(node.kv.get("dir/")?.value).toEqual(text.encode("d"));
    expect(node.kv.get("dir")).toBeUndefined();
  });

  test("GET of an absent key is 404 not_found", async () => {
    const { app } = setup();
    const body = await expectError(await app.request("/v1/kv/missing"), 404, "not_found");
    expect(body.error.message).toContain('"missing"');
  });

  test("a key over 4096 bytes is 400 bad_request", async () => {
    const { app, node } = setup({ bodyBytesMax: 10_000 });
    await expectError(await put(app, "k".repeat(4097), "x"), 400, "bad_request");
    expect(node.submitted).toEqual([]);
  });

  test("consistency=stale reads locally without a barrier", async () => {
    const { app, node } = setup();
    await put(app, "k", "v");
    node.barrier = { ok: false, code: "no-leader", leader: null, message: "No leader" };
    const read = await app.request("/v1/kv/k?consistency=stale");
    expect(await read.text()).toBe("v");
    expect(node.barriers).toBe(0);
    await expectError(await app.request("/v1/kv/k?consistency=eventual"), 400, "bad_request");
  });

  test("linearizable read failures map to 503 and 504 with the leader when known", async () => {
    const { app, node } = setup();
    node.barrier = { ok: false, code: "no-leader", leader: null, message: "No leader" };
    await expectError(await app.request("/v1/kv/k"), 503, "no_leader");
    node.barrier = { ok: false, code: "not-leader", leader: leaderInfo, message: "Not leader" };
    const notLeader = await expectError(await app.request("/v1/kv/k"), 503, "not_leader");
    expect(notLeader).toMatchObject({
      error: { leader: { name: "node-b", url: "http://127.0.0.12:7080" } },
    });
    node.barrier = { ok: false, code: "timeout", leader: null, message: "Read barrier timed out" };
    await expectError(await app.request("/v1/kv?prefix=a"), 504, "timeout");
  });

  test("DELETE reports whether the key existed and the log index", async () => {
    const { app, node } = setup();
    await put(app, "k", "v");
    const deleted = await app.request("/v1/kv/k", { method: "DELETE" });
    expect(await deleted.json()).toEqual({ deleted: true, index: 2 });
    const again = await app.request("/v1/kv/k", { method: "DELETE" });
    expect(await again.json()).toEqual({ deleted: false, index: 3 });
    expect(node.kv.get("k")).toBeUndefined();
  });

  test("GET /v1/kv lists by prefix with paging", async () => {
    const { app } = setup();
    for (const key of ["p/3", "p/1", "q", "p/2"]) await put(app, key, `v${key}`);
    await put(app, "p/bin", Uint8Array.of(0xff, 0xfe));
    const first = await app.request("/v1/kv?prefix=p%2F&limit=2");
    expect(await first.json()).toEqual({
      items: [
        { key: "p/1", value: "vp/1", mod_index: 2 },
        { key: "p/2", value: "vp/2", mod_index: 4 },
      ],
      more: true,
    });
    const second = await app.request("/v1/kv?prefix=p/&limit=2&after=p/2");
    expect(await second.json()).toEqual({
      items: [
        { key: "p/3", value: "vp/3", mod_index: 1 },
        { key: "p/bin", value_base64: "//4=", mod_index: 5 },
      ],
      more: false,
    });
    const all = await app.request("/v1/kv");
    expect((await all.json() as { items: unknown[] }).items).toHaveLength(5);
  });

  test("list limits are checked and capped at 1000", async () => {
    const { app, node } = setup();
    for (let i = 0; i < 1005; i++) {
      node.kv.apply(encodePut(`k${i}`, new Uint8Array(0)), { index: i + 1, term: 1 });
    }
    const capped = await app.request("/v1/kv?limit=5000&consistency=stale");
    const body = await capped.json() as { items: unknown[]; more: boolean };
    expect(body.items).toHaveLength(1000);
    expect(body.more).toBe(true);
    for (const limit of ["0", "-1", "abc", "1.5", ""]) {
      await expectError(await app.request(`/v1/kv?limit=${limit}`), 400, "bad_request");
    }
  });
});

describe("POST /v1/command to the kv service", () => {
  const kvSetup = () => {
    const node = new FakeNode("node-a");
    const errors: unknown[] = [];
    const app = createApp({
      node,
      kv: node.kv,
      service: node.kv,
      bodyBytesMax: 1024,
      logError: (_message, error) => errors.push(error),
    });
    const command = (body: string | Uint8Array) =>
      app.request("/v1/command", {
        method: "POST",
        body: typeof body === "string" ? body : body as Uint8Array<ArrayBuffer>,
      });
    return { node, app, errors, command };
  };

  test("a malformed command is 400 and never proposed", async () => {
    const { node, errors, command } = kvSetup();
    for (
      const body of ['{"op":"put"}', "", Uint8Array.of(1, 0, 1, 0x6b), Uint8Array.of(9, 0, 1, 0x6b)]
    ) {
      const refused = await expectError(await command(body), 400, "bad_request");
      expect(refused.error.message).toContain("Malformed kv command");
    }
    expect(node.submitted).toEqual([]);
    expect(node.index).toBe(0);
    expect(errors).toEqual([]);
  });

  test("a well-formed binary command is applied and answered in the binary result layout", async () => {
    const { node, command } = kvSetup();
    const response = await command(encodePut("k", text.encode("v")));
    expect(response.status).toBe(200);
    expect(response.headers.get("keel-index")).toBe("1");
    expect(decodeKvResult(new Uint8Array(await response.arrayBuffer()))).toEqual({
      type: "put",
      ok: true,
      index: 1,
    });
    expect(node.kv.get("k")?.value).toEqual(text.encode("v"));
  });
});

describe("compare-and-set", () => {
  async function cas(app: Hono, key: string, body: unknown, headers = {}) {
    return await app.request(`/v1/kv/${key}/cas`, {
      method: "POST",
      body: typeof body === "string" ? body : JSON.stringify(body),
      headers: { "content-type": "application/json", ...headers },
    });
  }

  test("expected null creates an absent key, and then fails with the current value", async () => {
    const { app } = setup();
    const created = await cas(app, "k", { expected: null, value: "v1" });
    expect(created.status).toBe(200);
    expect(await created.json()).toEqual({ ok: true, index: 1 });

    const failed = await cas(app, "k", { expected: null, value: "v2" });
    expect(failed.status).toBe(409);
    expect(await failed.json()).toMatchObject({
      ok: false,
      index: 2,
      current: "v1",
      error: { code: "cas_failed" },
    });
  });

  test("a matching expected value swaps, and value null deletes", async () => {
    const { app, node } = setup();
    await put(app, "k", "v1");
    expect((await cas(app, "k", { expected: "v1", value: "v2" })).status).toBe(200);
    expect(node.kv.get("k")?.value).toEqual(text.encode("v2"));
    expect((await cas(app, "k", { expected: "v2", value: null })).status).toBe(200);
    expect(node.kv.get("k")).toBeUndefined();
    const absent = await cas(app, "k", { expected: "v2", value: "v3" });
    expect(absent.status).toBe(409);
    expect(await absent.json()).toMatchObject({ current: null });
  });

  test("base64 fields carry binary values both ways", async () => {
    const { app, node } = setup();
    expect((await cas(app, "b", { expected_base64: null, value_base64: "AP8=" })).status).toBe(200);
    expect(node.kv.get("b")?.value).toEqual(Uint8Array.of(0, 255));
    const failed = await cas(app, "b", { expected_base64: "AAA=", value: "x" });
    expect(await failed.json()).toMatchObject({ current_base64: "AP8=" });
    expect((await cas(app, "b", { expected_base64: "AP8=", value: "x" })).status).toBe(200);
  });

  test("a key with slashes is swapped at {key}/cas; a key ending in /cas needs its own /cas", async () => {
    const { app, node } = setup();
    const swap = (path: string, expected: string | null, value: string) =>
      app.request(path, { method: "POST", body: JSON.stringify({ expected, value }) });
    expect((await swap("/v1/kv//app/config/db/cas", null, "v1")).status).toBe(200);
    expect(node.kv.get("/app/config/db")?.value).toEqual(text.encode("v1"));
    expect((await swap("/v1/kv/%2Fapp%2Fconfig%2Fdb/cas", "v1", "v2")).status).toBe(200);
    expect(node.kv.get("/app/config/db")?.value).toEqual(text.encode("v2"));

    // PUT and GET never mean cas: this is the key "jobs/cas".
    expect((await app.request("/v1/kv/jobs/cas", { method: "PUT", body: "x" })).status).toBe(200);
    expect(node.kv.get("jobs/cas")?.value).toEqual(text.encode("x"));
    expect(await (await app.request("/v1/kv/jobs/cas")).text()).toBe("x");
    // POST .../cas swaps the key before the last /cas: "jobs/cas" itself is .../cas/cas.
    expect((await swap("/v1/kv/jobs/cas/cas", "x", "y")).status).toBe(200);
    expect(node.kv.get("jobs/cas")?.value).toEqual(text.encode("y"));
    expect(node.kv.get("jobs")).toBeUndefined();
    // An encoded slash is part of the key, never the /cas suffix.
    await expectError(await swap("/v1/kv/jobs%2Fcas", "y", "z"), 404, "not_found");
    expect(node.kv.get("jobs/cas")?.value).toEqual(text.encode("y"));
  });

  test("bad JSON is 400 with the parse message", async () => {
    const { app, node } = setup();
    const body = await expectError(await cas(app, "k", "{not json"), 400, "bad_request");
    expect(body.error.message).toStartWith("Request body is not valid JSON: ");
    expect(body.error.message.length).toBeGreaterThan("Request body is not valid JSON: ".length);
    expect(node.submitted).toEqual([]);
  });

  test("malformed CAS requests are 400", async () => {
    const { app } = setup();
    for (
      const body of [
        [1, 2],
        "null",
        { value: "v" },
        { expected: null },
        { expected: 1, value: "v" },
        { expected: "a", expected_base64: "YQ==", value: "v" },
        { expected_base64: "not base64!", value: "v" },
      ]
    ) {
      await expectError(await cas(app, "k", body), 400, "bad_request");
    }
  });
});

describe("limits and headers", () => {
  test("a Content-Length over bodyBytesMax is 413 before reading", async () => {
    const { app, node } = setup({ bodyBytesMax: 8 });
    const response = await app.request("/v1/kv/k", {
      method: "PUT",
      body: "small",
      headers: { "content-length": "9" },
    });
    await expectError(response, 413, "payload_too_large");
    expect(node.submitted).toEqual([]);
  });

  test("a body larger than bodyBytesMax is 413 even without or with a lying Content-Length", async () => {
    const { app, node } = setup({ bodyBytesMax: 8 });
    await expectError(await put(app, "k", "123456789"), 413, "payload_too_large");
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(5));
        controller.enqueue(new Uint8Array(5));
        controller.close();
      },
    });
    await expectError(
      await app.request("/v1/kv/k", { method: "PUT", body: stream }),
      413,
      "payload_too_large",
    );
    await expectError(
      await app.request("/v1/kv/k/cas", {
        method: "POST",
        body: JSON.stringify({ expected: null, value: "long enough" }),
        headers: { "content-length": "2" },
      }),
      413,
      "payload_too_large",
    );
    expect(node.submitted).toEqual([]);
    expect((await put(app, "k", "12345678")).status).toBe(200);
  });

  test("an invalid Content-Length is 400", async () => {
    const { app } = setup();
    const response = await app.request("/v1/kv/k", {
      method: "PUT",
      body: "x",
      headers: { "content-length": "abc" },
    });
    await expectError(response, 400, "bad_request");
  });

  test("a malformed Idempotency-Key is 400 and nothing is submitted", async () => {
    const { app, node } = setup();
    for (
      const header of [
        "nocolon",
        "client:0",
        "client:-1",
        "client:1.5",
        ":1",
        "cli ent:1",
        "client:9007199254740992",
        `${"c".repeat(129)}:1`,
        "a:b:1",
      ]
    ) {
      await expectError(
        await put(app, "k", "v", { "idempotency-key": header }),
        400,
        "bad_request",
      );
    }
    expect(node.submitted).toEqual([]);
  });

  test("a retry with the same Idempotency-Key is applied once", async () => {
    const { app, node } = setup();
    const headers = { "idempotency-key": "client-7.a_b:1" };
    expect(await (await put(app, "k", "v1", headers)).json()).toEqual({ index: 1 });
    await put(app, "other", "x");
    const retry = await put(app, "k", "v1", headers);
    expect(retry.status).toBe(200);
    // The first attempt's answer, index included, though the retry was logged at index 3.
    expect(await retry.json()).toEqual({ index: 1 });
    expect(node.kv.get("k")).toEqual({ value: text.encode("v1"), modIndex: 1 });
    expect(node.submitted[0]?.session).toEqual({ clientId: "client-7.a_b", seq: 1 });

    await put(app, "k", "v2", { "idempotency-key": "client-7.a_b:2" });
    const stale = await expectError(
      await put(app, "k", "v0", { "idempotency-key": "client-7.a_b:1" }),
      409,
      "rejected",
    );
    expect(stale.error.message).toContain("older than its last applied sequence 2");
    expect(node.kv.get("k")?.value).toEqual(text.encode("v2"));
  });

  test("an Idempotency-Key reused for another write is 409 idempotency_key_reused", async () => {
    const { app, node } = setup();
    const headers = { "idempotency-key": "cli1:5" };
    expect(await (await put(app, "idem-a", "v", headers)).json()).toEqual({ index: 1 });
    // Another key, another value, another kind of write: each refused, none applied.
    for (
      const response of [
        await put(app, "idem-b", "v", headers),
        await put(app, "idem-a", "w", headers),
        await app.request("/v1/kv/idem-a", { method: "DELETE", headers }),
      ]
    ) {
      const body = await expectError(response, 409, "idempotency_key_reused");
      expect(body.error.message).toContain("already used for a different write");
    }
    await expectError(await app.request("/v1/kv/idem-b"), 404, "not_found");
    expect(node.kv.get("idem-a")).toEqual({ value: text.encode("v"), modIndex: 1 });
    // The write itself, retried, is still answered as the first attempt.
    expect(await (await put(app, "idem-a", "v", headers)).json()).toEqual({ index: 1 });
  });

  test("submit timeout is 504 and unavailable is 503", async () => {
    const { app, node } = setup();
    node.failure = { ok: false, code: "timeout", message: "Write timed out" };
    const timeout = await expectError(await put(app, "k", "v"), 504, "timeout");
    expect(timeout.error.message).toContain("Idempotency-Key");
    node.failure = { ok: false, code: "unavailable", message: "Node is recovering" };
    await expectError(
      await app.request("/v1/kv/k", { method: "DELETE" }),
      503,
      "unavailable",
    );
  });
});

describe("writes on a follower", () => {
  function cluster() {
    const leader = setup({ name: "node-b" });
    const calls: { url: string; init: RequestInit }[] = [];
    const fetchLeader: FetchLike = async (url, init) => {
      calls.push({ url, init });
      return await leader.app.request(url, init);
    };
    const follower = setup({ name: "node-a", fetchLeader });
    follower.node.isLeader = false;
    return { leader, follower, calls };
  }

  test("a write is forwarded to the leader and its answer relayed", async () => {
    const { leader, follower, calls } = cluster();
    const response = await follower.app.request(`${base}/v1/kv/a%2Fb?x=1`, {
      method: "PUT",
      body: "forwarded",
      headers: { "idempotency-key": "c:1" },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("application/json");
    expect(await response.json()).toEqual({ index: 1 });
    expect(leader.node.kv.get("a/b")?.value).toEqual(text.encode("forwarded"));
    expect(calls).toHaveLength(1);
    expect(calls[0]?.url).toBe("http://127.0.0.12:7080/v1/kv/a%2Fb?x=1");
    const headers = new Headers(calls[0]?.init.headers);
    expect(headers.get("keel-forwarded")).toBe("1");
    expect(headers.get("idempotency-key")).toBe("c:1");
    expect(calls[0]?.init.signal).toBeInstanceOf(AbortSignal);

    // The retry through the follower is deduplicated by the leader.
    const retry = await follower.app.request(`${base}/v1/kv/a%2Fb`, {
      method: "PUT",
      body: "forwarded",
      headers: { "idempotency-key": "c:1" },
    });
    expect(await retry.json()).toEqual({ index: 1 });
    expect(leader.node.index).toBe(2);
    expect(leader.node.kv.get("a/b")?.value).toEqual(text.encode("forwarded"));
  });

  test("CAS and DELETE forward with their bodies and relay error statuses", async () => {
    const { leader, follower } = cluster();
    const created = await follower.app.request(`${base}/v1/kv/k/cas`, {
      method: "POST",
      body: JSON.stringify({ expected: null, value: "v" }),
      headers: { "content-type": "application/json" },
    });
    expect(created.status).toBe(200);
    const failed = await follower.app.request(`${base}/v1/kv/k/cas`, {
      method: "POST",
      body: JSON.stringify({ expected: null, value: "w" }),
    });
    expect(failed.status).toBe(409);
    expect(await failed.json()).toMatchObject({ current: "v", error: { code: "cas_failed" } });
    const deleted = await follower.app.request(`${base}/v1/kv/k`, { method: "DELETE" });
    expect(await deleted.json()).toEqual({ deleted: true, index: 3 });
    expect(leader.node.kv.get("k")).toBeUndefined();
  });

  test("a forwarded request is not forwarded again", async () => {
    const { follower, calls } = cluster();
    const response = await follower.app.request(`${base}/v1/kv/k`, {
      method: "PUT",
      body: "v",
      headers: { "keel-forwarded": "1" },
    });
    const body = await expectError(response, 503, "not_leader");
    expect(body).toMatchObject({ error: { leader: { name: "node-b" } } });
    expect(calls).toEqual([]);
  });

  test("redirect=true answers 307 to the same path and query on the leader", async () => {
    const { follower, calls } = cluster();
    const response = await follower.app.request(`${base}/v1/kv/a%2Fb?redirect=true&x=1`, {
      method: "PUT",
      body: "v",
    });
    expect(response.status).toBe(307);
    expect(response.headers.get("location")).toBe("http://127.0.0.12:7080/v1/kv/a%2Fb?x=1");
    expect(await response.json()).toMatchObject({ error: { code: "not_leader" } });
    expect(calls).toEqual([]);
    await expectError(
      await follower.app.request(`${base}/v1/kv/k?redirect=yes`, { method: "PUT", body: "v" }),
      400,
      "bad_request",
    );
  });

  test("no known leader is 503 no_leader", async () => {
    const { follower, calls } = cluster();
    follower.node.knownLeader = null;
    await expectError(await put(follower.app, "k", "v"), 503, "no_leader");
    expect(calls).toEqual([]);
  });

  test("no known leader says so once, in the node's words", async () => {
    const { app, node } = setup();
    // What node.ts answers when no leader is known.
    node.failure = { ok: false, code: "not-leader", leader: null, message: "No leader is known" };
    for (const request of [put(app, "k", "v"), app.request("/v1/kv/k", { method: "DELETE" })]) {
      const body = await expectError(await request, 503, "no_leader");
      expect(body.error.message).toBe("No leader is known");
    }
  });

  test("a leader that cannot be reached is 503, one that times out 504", async () => {
    const unreachable = setup({
      fetchLeader: () => Promise.reject(new TypeError("Unable to connect")),
    });
    unreachable.node.isLeader = false;
    const down = await expectError(await put(unreachable.app, "k", "v"), 503, "unavailable");
    expect(down.error.message).toContain("Unable to connect");

    const slow = setup({
      fetchLeader: () =>
        Promise.reject(new DOMException("The operation timed out.", "TimeoutError")),
    });
    slow.node.isLeader = false;
    await expectError(await put(slow.app, "k", "v"), 504, "timeout");
  });
});

describe("status, unknown routes and failures", () => {
  test("GET /status shows node.status() as JSON", async () => {
    const { app } = setup();
    const response = await app.request("/status");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual(
      statusView({ name: "node-a", role: "leader", commitIndex: 0 }),
    );
  });

  test("unknown routes are 404 JSON, methods keel serves nowhere 501", async () => {
    const { app, errors } = setup();
    await expectError(await app.request("/nope"), 404, "not_found");
    await expectError(await app.request("/v1/kv/"), 404, "not_found");
    for (const method of ["PATCH", "TRACE", "PROPFIND"]) {
      const response = await app.request("/v1/kv/k", { method });
      const body = await expectError(response, 501, "not_implemented");
      expect(body.error.message).toContain(method);
      expect(response.headers.get("allow")).toBe("GET, HEAD, POST, PUT, DELETE");
    }
    expect(errors).toEqual([]);
  });

  test("a CONNECT on a real socket is 501 and logs no error", async () => {
    // Bun gives a CONNECT's authority ("127.0.0.1:7080") as the request URL, which no
    // in-process Request can carry: this needs a socket.
    const { app, errors } = setup();
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: app.fetch });
    try {
      for (const target of ["127.0.0.1:7080", "keel.example:443"]) {
        const answer = await rawExchange(
          server.port as number,
          `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`,
        );
        expect(answer).toStartWith("HTTP/1.1 501 ");
        expect(answer).toContain('"code":"not_implemented"');
      }
    } finally {
      await server.stop(true);
    }
    expect(errors).toEqual([]);
  });

  test("a request body the client abandons logs no error, and info at most once a minute", async () => {
    let now = 0;
    const infos: { message: string; fields: Record<string, unknown> }[] = [];
    const { app, node, errors } = setup({
      logInfo: (message, fields) => infos.push({ message, fields }),
      clock: () => now,
    });
    const abandoned = () =>
      put(
        app,
        "k",
        new ReadableStream({
          pull(controller) {
            // What Bun's server gives a handler reading the body of a closed connection.
            controller.error(new DOMException("The connection was closed.", "AbortError"));
          },
        }) as unknown as Uint8Array,
      );
    for (let i = 0; i < 5; i++) expect((await abandoned()).status).toBe(400);
    expect(errors).toEqual([]);
    expect(node.submitted).toEqual([]);
    expect(infos).toHaveLength(1);
    expect(infos[0]?.message).toContain("closed the connection");
    now += 60_001;
    await abandoned();
    expect(infos).toHaveLength(2);
    // The four left out in the minute before are counted in the next line.
    expect(infos[1]?.fields.suppressed).toBe(4);
  });

  test("an unexpected exception is logged and answered 500 without a stack", async () => {
    const { app, node, errors } = setup();
    node.status = () => {
      throw new Error("secret detail");
    };
    const response = await app.request("/status");
    const body = await expectError(response, 500, "internal");
    expect(JSON.stringify(body)).not.toContain("secret detail");
    expect(JSON.stringify(body)).not.toContain("at ");
    expect(errors).toHaveLength(1);
  });
});
