// The optional client API token (security.client_token): /v1/* needs it as a bearer token,
// the operator routes stay open, and a write forwarded to the leader carries it.

import { describe, expect, test } from "bun:test";
import type { NodeApi, ReadBarrierResult, SubmitResult } from "../../src/http/api.ts";
import { createApp } from "../../src/http/app.ts";
import { authorizeClient } from "../../src/http/client_api.ts";
import { KvService } from "../../src/service/kv.ts";
import { statusView } from "../support/status_view.ts";

const token = "client-s3cret";

/** A follower: reads pass the barrier, writes answer not-leader (the leader is node-b). */
const follower: NodeApi = {
  name: "node-a",
  submit: (): Promise<SubmitResult> =>
    Promise.resolve({
      ok: false,
      code: "not-leader",
      leader: { name: "node-b", httpUrl: "http://127.0.0.12:7080" },
      message: "node-a is a follower",
    }),
  readBarrier: (): Promise<ReadBarrierResult> => Promise.resolve({ ok: true }),
  leader: () => ({ name: "node-b", httpUrl: "http://127.0.0.12:7080" }),
  status: () => statusView({ name: "node-a", role: "follower", leader: "node-b" }),
};

function setup(clientToken: string | undefined) {
  const forwarded: { url: string; headers: Record<string, string> }[] = [];
  const app = createApp({
    node: follower,
    kv: new KvService(),
    bodyBytesMax: 1024,
    clientToken,
    fetchLeader: (url, init) => {
      forwarded.push({ url, headers: init.headers as Record<string, string> });
      return Promise.resolve(Response.json({ index: 7 }));
    },
  });
  return { app, forwarded };
}

async function errorCode(response: Response): Promise<string> {
  const body = await response.json() as { error: { code: string } };
  return body.error.code;
}

describe("client token", () => {
  test("without a token configured, the client API is open", async () => {
    const { app } = setup(undefined);
    expect((await app.request("/v1/kv/missing")).status).toBe(404);
  });

  test("no Authorization header is 401 with WWW-Authenticate", async () => {
    const { app } = setup(token);
    for (const path of ["/v1/kv/key", "/v1/kv?prefix=a", "/v1/nothing-here"]) {
      const response = await app.request(path);
      expect(response.status).toBe(401);
      expect(response.headers.get("www-authenticate")).toBe('Bearer realm="keel"');
      expect(await errorCode(response)).toBe("unauthorized");
    }
    const put = await app.request("/v1/kv/key", { method: "PUT", body: "v" });
    expect(put.status).toBe(401);
  });

  test("a wrong token is 403, the right one passes", async () => {
    const { app } = setup(token);
    const wrong = await app.request("/v1/kv/key", {
      headers: { authorization: "Bearer not-it" },
    });
    expect(wrong.status).toBe(403);
    expect(await errorCode(wrong)).toBe("forbidden");
    const right = await app.request("/v1/kv/key", {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(right.status).toBe(404); // past the check: the key does not exist
    expect(await errorCode(right)).toBe("not_found");
  });

  test("/status stays open", async () => {
    const { app } = setup(token);
    expect((await app.request("/status")).status).toBe(200);
  });

  test("a write forwarded to the leader carries the client's Authorization header", async () => {
    const { app, forwarded } = setup(token);
    const response = await app.request("/v1/kv/key", {
      method: "PUT",
      body: "value",
      headers: { authorization: `Bearer ${token}`, "idempotency-key": "c1:1" },
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ index: 7 });
    expect(forwarded).toEqual([{
      url: "http://127.0.0.12:7080/v1/kv/key",
      headers: {
        "keel-forwarded": "1",
        "idempotency-key": "c1:1",
        authorization: `Bearer ${token}`,
      },
    }]);
  });

  test("authorizeClient accepts any case of Bearer and refuses other schemes", () => {
    expect(authorizeClient(token, `bearer ${token}`)).toBeUndefined();
    expect(authorizeClient(token, `Basic ${token}`)?.status).toBe(401);
    expect(authorizeClient(token, "Bearer")?.status).toBe(401);
    expect(authorizeClient(token, `Bearer ${token}x`)?.status).toBe(403);
  });
});
