// The HTTP edges of the compiled binary, on real sockets: pipelined requests each get their
// answer, CONNECT and abandoned bodies put no ERROR in the log, keys with slashes work as
// written, a malformed command never reaches the log, and a reused Idempotency-Key is refused.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { TestCluster } from "../support/cluster.ts";

let cluster: TestCluster;
let leader: string;
let follower: string;

beforeAll(async () => {
  cluster = new TestCluster({ ipBase: 211, name: "http-edges" });
  cluster.startAll();
  leader = await cluster.waitForLeader();
  follower = cluster.members.find((m) => m.name !== leader)!.name;
}, 30_000);

afterAll(async () => {
  await cluster.stop();
});

/** hostPort is a member's HTTP address. */
function hostPort(name: string): { hostname: string; port: number } {
  const url = new URL(cluster.member(name).url);
  return { hostname: url.hostname, port: Number(url.port) };
}

/**
 * exchange writes `request` on one fresh TCP connection, then reads until the server closes
 * it or `responses` whole responses have arrived (bounded by a deadline).
 */
async function exchange(
  name: string,
  request: string,
  options: { abortAfterWrite?: boolean } = {},
) {
  let answer = "";
  await new Promise<void>((resolve, reject) => {
    const deadline = setTimeout(resolve, 10_000);
    Bun.connect({
      ...hostPort(name),
      socket: {
        open: (socket) => {
          socket.write(request);
          if (options.abortAfterWrite) setTimeout(() => socket.end(), 200);
        },
        data: (_socket, data) => void (answer += new TextDecoder().decode(data)),
        close: () => {
          clearTimeout(deadline);
          resolve();
        },
        error: (_socket, error) => reject(error),
      },
    }).catch(reject);
  });
  return answer;
}

/** statusLines are the status lines of every response in a raw answer, in order. */
function statusLines(answer: string): string[] {
  return answer.match(/HTTP\/1\.1 \d{3} [^\r]*/g) ?? [];
}

function errorLines(name: string): string[] {
  return cluster.member(name).log.filter((line) => /"level":"error"|\bERROR\b/.test(line));
}

async function lastIndex(name: string): Promise<number> {
  const status = await cluster.status(name);
  if (status === undefined) throw new Error(`no /status from ${name}`);
  return status.lastIndex;
}

test("two pipelined PUTs on one connection get two answers, in order, and both apply", async () => {
  for (const [name, prefix] of [[leader, "pp-l"], [follower, "pp-f"]] as const) {
    const answer = await exchange(
      name,
      `PUT /v1/kv/${prefix}-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na` +
        `PUT /v1/kv/${prefix}-2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb`,
    );
    expect(statusLines(answer)).toEqual(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
    const bodies = answer.match(/\{"index":\d+\}/g) ?? [];
    expect(bodies).toHaveLength(2);
    const [first, second] = bodies.map((body) => JSON.parse(body).index as number);
    expect(first!).toBeLessThan(second!);
    for (const [key, value] of [[`${prefix}-1`, "a"], [`${prefix}-2`, "b"]]) {
      expect(await (await cluster.get(leader, key!)).text()).toBe(value!);
    }
  }
}, 30_000);

test("pipelined GETs behind a linearizable read are answered too", async () => {
  await cluster.putWithRetry([leader], "pp-read", "r", "pp:1");
  const get = (close: boolean) =>
    `GET /v1/kv/pp-read HTTP/1.1\r\nHost: x\r\n${close ? "Connection: close\r\n" : ""}\r\n`;
  const answer = await exchange(follower, get(false) + get(false) + get(true));
  expect(statusLines(answer)).toEqual(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
}, 30_000);

test("CONNECT is 501 with no ERROR in the log", async () => {
  const before = errorLines(leader).length;
  for (const target of ["127.0.0.1:7080", "example.com:443"]) {
    const answer = await exchange(
      leader,
      `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`,
    );
    expect(statusLines(answer)).toEqual(["HTTP/1.1 501 Not Implemented"]);
    expect(answer).toContain('"code":"not_implemented"');
  }
  await Bun.sleep(200); // let the log lines, if any, arrive
  expect(errorLines(leader).slice(before)).toEqual([]);
}, 30_000);

test(
  "a request body the client abandons puts no ERROR in the log and applies nothing",
  async () => {
    const before = errorLines(leader).length;
    for (let i = 0; i < 5; i++) {
      await exchange(
        leader,
        `PUT /v1/kv/abandoned HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc`,
        { abortAfterWrite: true },
      );
    }
    await Bun.sleep(200);
    expect(errorLines(leader).slice(before)).toEqual([]);
    expect((await cluster.get(leader, "abandoned")).status).toBe(404);
  },
  30_000,
);

test("keys with slashes work as written, through a follower too", async () => {
  const base = cluster.member(follower).url;
  const put = await fetch(`${base}/v1/kv//app/config/db`, { method: "PUT", body: "pg" });
  expect(put.status).toBe(200);
  const read = await fetch(`${cluster.member(leader).url}/v1/kv/%2Fapp%2Fconfig%2Fdb`);
  expect(await read.text()).toBe("pg");
  const cas = await fetch(`${base}/v1/kv//app/config/db/cas`, {
    method: "POST",
    body: JSON.stringify({ expected: "pg", value: "pg2" }),
  });
  expect(await cas.json()).toMatchObject({ ok: true });
  const deleted = await fetch(`${base}/v1/kv//app/config/db`, { method: "DELETE" });
  expect(await deleted.json()).toMatchObject({ deleted: true });
}, 30_000);

test("a malformed command is 400 and is not proposed", async () => {
  const before = await lastIndex(leader);
  const response = await fetch(`${cluster.member(leader).url}/v1/command`, {
    method: "POST",
    body: '{"op":"put"}',
  });
  expect(response.status).toBe(400);
  expect(((await response.json()) as { error: { code: string } }).error.code).toBe("bad_request");
  expect(await lastIndex(leader)).toBe(before);
}, 30_000);

test(
  "an Idempotency-Key reused for another write is 409 and the second write is not applied",
  async () => {
    const headers = { "idempotency-key": "cli1:5" };
    expect((await cluster.put(leader, "idem-a", "v", headers)).status).toBe(200);
    const reused = await cluster.put(follower, "idem-b", "v", headers);
    expect(reused.status).toBe(409);
    expect(((await reused.json()) as { error: { code: string } }).error.code).toBe(
      "idempotency_key_reused",
    );
    expect((await cluster.get(leader, "idem-b")).status).toBe(404);
    // The same write retried is still answered as the first.
    expect((await cluster.put(follower, "idem-a", "v", headers)).status).toBe(200);
  },
  30_000,
);
