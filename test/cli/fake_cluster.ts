// A fake keel cluster for the CLI tests: one Bun.serve per member on 127.0.0.1 (port 0)
// answering /status, /readyz, /admin/* and /v1/kv like a node would, from one shared
// state. No consensus: enough to test argument parsing, output and error handling.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { main } from "../../src/cli/main.ts";
import type { Io } from "../../src/cli/output.ts";
import type { NodeStatusView } from "../../src/http/api.ts";
import { memberView, statusView } from "../support/status_view.ts";
import type { Server } from "bun";

export const fakeToken = "secret";

interface FakeMember {
  name: string;
  url: string;
  server: Server<undefined> | undefined;
}

export class FakeCluster {
  readonly members: FakeMember[] = [];
  leader: string | null;
  term = 3;
  commitIndex = 40;
  /** step-down leaves the cluster without a leader for this long. */
  transferMs = 150;
  suspended = new Set<string>();
  readonly kv = new Map<string, string>();
  /** Every request seen, as "node-a POST /admin/snapshot". */
  readonly requests: string[] = [];

  constructor(names: string[] = ["node-a", "node-b", "node-c"]) {
    for (const name of names) {
      const member: FakeMember = { name, url: "", server: undefined };
      member.server = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: (request) => this.#handle(member, request),
      });
      member.url = `http://127.0.0.1:${member.server.port}`;
      this.members.push(member);
    }
    this.leader = names[0] ?? null;
  }

  member(name: string): FakeMember {
    const member = this.members.find((m) => m.name === name);
    if (member === undefined) throw new RangeError(`No member "${name}"`);
    return member;
  }

  /** down stops a member's server: its port then refuses connections. */
  down(name: string): void {
    void this.member(name).server?.stop(true);
    this.member(name).server = undefined;
  }

  /**
   * writeConfig writes a cluster file into dir whose members' http addresses are this
   * fake's, plus extra YAML, and returns its path.
   */
  writeConfig(dir: string, extra = ""): string {
    const lines = ["cluster_name: fake", "members:"];
    this.members.forEach((m, i) => {
      lines.push(`  - name: ${m.name}`, `    peer: 127.0.0.1:${17070 + i}`);
      lines.push(`    http: ${new URL(m.url).host}`);
    });
    const path = join(dir, `cluster-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(path, lines.join("\n") + "\n" + extra);
    return path;
  }

  stop(): void {
    for (const member of this.members) void member.server?.stop(true);
  }

  status(self: FakeMember): NodeStatusView {
    const role = this.leader === self.name ? "leader" : "follower";
    return statusView({
      name: self.name,
      incarnation: `inc-${self.name}`,
      status: "normal",
      version: "0.1.0",
      clusterName: "fake",
      role,
      term: this.term,
      leader: this.leader,
      votedFor: this.leader,
      commitIndex: this.commitIndex,
      appliedIndex: this.commitIndex,
      lastIndex: this.commitIndex,
      firstIndex: 1,
      snapshotIndex: 0,
      snapshotBytes: 0,
      logBytesInMemory: 100,
      storageBytes: 57_344,
      uptimeMs: 61_000,
      leaderHeardMsAgo: role === "leader" ? 0 : 12,
      leaderCommitSeen: this.commitIndex,
      suspended: this.suspended.has(self.name),
      members: this.members.map((m, i) =>
        memberView({
          name: m.name,
          self: m === self,
          peer: `127.0.0.1:${7070 + i}`,
          http: m.url,
          connected: m === self || m.server !== undefined,
          incarnation: `inc-${m.name}`,
          lastError: m.server === undefined ? "connection refused" : null,
          matchIndex: role === "leader" || m === self ? this.commitIndex - i : null,
          lag: role === "leader" || m === self ? i : null,
          replication: role === "leader" && m !== self ? "replicate" : null,
        })
      ),
    });
  }

  #leaderInfo(): { name: string; url: string } | undefined {
    const leader = this.members.find((m) => m.name === this.leader);
    return leader === undefined ? undefined : { name: leader.name, url: leader.url };
  }

  async #handle(self: FakeMember, request: Request): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    this.requests.push(`${self.name} ${request.method} ${path}`);
    const error = (status: number, code: string, message: string, leader = false) => {
      const body: { error: Record<string, unknown> } = { error: { code, message } };
      if (leader && this.#leaderInfo() !== undefined) body.error.leader = this.#leaderInfo();
      return Response.json(body, { status });
    };

    if (request.method === "GET" && path === "/status") return Response.json(this.status(self));
    if (request.method === "GET" && path === "/readyz") {
      const checks = [
        { name: "leader_known", ok: this.leader !== null, detail: "" },
        { name: "applied", ok: true, detail: "" },
      ];
      const ready = checks.every((c) => c.ok);
      return Response.json({ status: ready ? "ready" : "not_ready", checks }, {
        status: ready ? 200 : 503,
      });
    }

    if (path.startsWith("/admin/") && request.method === "POST") {
      const authorization = request.headers.get("authorization");
      if (authorization === null) return error(401, "unauthorized", "Admin requests need a token");
      if (authorization !== `Bearer ${fakeToken}`) return error(403, "forbidden", "Wrong token");
      switch (path) {
        case "/admin/snapshot":
          return Response.json({ ok: true, index: this.commitIndex, bytes: 2048 });
        case "/admin/step-down": {
          if (this.leader !== self.name) {
            return error(503, "not_leader", `${self.name} is not the leader`, true);
          }
          const text = await request.text();
          const to = text === "" ? undefined : (JSON.parse(text) as { to?: string }).to;
          const others = this.members.filter((m) => m.name !== self.name);
          const next = to ?? others[0]?.name ?? null;
          this.leader = null;
          await Bun.sleep(this.transferMs);
          this.leader = next;
          this.term++;
          return Response.json({ ok: true, leader: next });
        }
        case "/admin/suspend":
          this.suspended.add(self.name);
          return Response.json({ ok: true, suspended: true });
        case "/admin/resume":
          this.suspended.delete(self.name);
          return Response.json({ ok: true, suspended: false });
        case "/admin/shutdown":
          return Response.json({ ok: true, shutting_down: true }, { status: 202 });
      }
    }

    if (path.startsWith("/v1/kv/")) {
      const key = decodeURIComponent(path.slice("/v1/kv/".length));
      if (request.method === "PUT") {
        if (this.leader === null) return error(503, "no_leader", "No leader is known", false);
        if (this.suspended.has(self.name)) return error(503, "unavailable", "Suspended");
        this.kv.set(key, await request.text());
        return Response.json({ index: ++this.commitIndex });
      }
      if (request.method === "GET") {
        const value = this.kv.get(key);
        if (value === undefined) return error(404, "not_found", `Key "${key}" not found`);
        return new Response(value, { headers: { "keel-mod-index": String(this.commitIndex) } });
      }
      if (request.method === "DELETE") {
        const deleted = this.kv.delete(key);
        return Response.json({ deleted, index: ++this.commitIndex });
      }
    }
    if (request.method === "GET" && path === "/v1/kv") {
      const prefix = url.searchParams.get("prefix") ?? "";
      const items = [...this.kv].filter(([key]) => key.startsWith(prefix)).sort()
        .map(([key, value]) => ({ key, value, mod_index: 1 }));
      return Response.json({ items, more: false });
    }
    return error(404, "not_found", `No route for ${request.method} ${path}`);
  }
}

/** CliRun is what one in-process run of the CLI printed and returned. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** runCli runs main(argv) in-process with captured output and the given environment. */
export async function runCli(
  argv: string[],
  options: {
    env?: Record<string, string>;
    stdin?: string;
    /** Told of each piece of output (stdout and stderr) as it is written. */
    onOutput?: (text: string) => void;
  } = {},
): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const decoder = new TextDecoder();
  const io: Io = {
    out: (text) => {
      const decoded = typeof text === "string" ? text : decoder.decode(text);
      stdout += decoded;
      options.onOutput?.(decoded);
    },
    err: (text) => {
      stderr += text;
      options.onOutput?.(text);
    },
    readStdin: async () => new TextEncoder().encode(options.stdin ?? ""),
    isTTY: false,
    env: options.env ?? {},
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

/** deadUrl is the URL of a port nothing listens on (a server that was just stopped). */
export async function deadUrl(): Promise<string> {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
  const url = `http://127.0.0.1:${server.port}`;
  await server.stop(true);
  return url;
}
