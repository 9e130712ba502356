// Commands that talk to a running node over its HTTP API: status, kv.

import { formatProblems, loadConfig, memberByName } from "../config/parse.ts";
import { CliError, Flags } from "./flags.ts";

const clientOptions = {
  url: { type: "string" },
  config: { type: "string", short: "c" },
  name: { type: "string", short: "n" },
  json: { type: "boolean" },
  stale: { type: "boolean" },
  timeout: { type: "string" },
} as const;

/** nodeUrl finds the node to talk to: --url, --config + --name, KEEL_URL, or the default. */
export function nodeUrl(flags: Flags): string {
  const url = flags.string("url") ?? (flags.string("config") ? undefined : process.env.KEEL_URL);
  if (url !== undefined) return url.replace(/\/+$/, "");
  const file = flags.string("config");
  if (file !== undefined) {
    const name = flags.string("name");
    if (name === undefined) throw new CliError("--config needs --name to pick a member");
    const loaded = loadConfig(file);
    if (loaded.config === undefined) throw new CliError(formatProblems(loaded.problems, file));
    const member = memberByName(loaded.config, name);
    if (member === undefined) throw new CliError(`${file}: no member named "${name}"`);
    const host = member.http.host.includes(":") ? `[${member.http.host}]` : member.http.host;
    return `http://${host}:${member.http.port}`;
  }
  return "http://127.0.0.1:7080";
}

async function request(url: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  } catch (error: unknown) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UnreachableError(`Cannot reach ${new URL(url).origin}: ${reason}`);
  }
}

class UnreachableError extends Error {}

async function failWith(response: Response): Promise<number> {
  const text = await response.text();
  let message = text;
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (body.error) message = `${body.error.code}: ${body.error.message}`;
  } catch {
    // not JSON: print as is
  }
  process.stderr.write(`keel: HTTP ${response.status}: ${message}\n`);
  return 1;
}

export async function clientCommand(command: "status" | "kv", args: string[]): Promise<number> {
  const flags = new Flags(args, clientOptions);
  const base = nodeUrl(flags);
  try {
    if (command === "status") return await status(base, flags.boolean("json"));
    return await kv(base, flags);
  } catch (error: unknown) {
    if (error instanceof UnreachableError) {
      process.stderr.write(`keel: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

interface StatusBody {
  name: string;
  role: string;
  term: number;
  leader: string | null;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  incarnation: string;
  members: {
    name: string;
    peer: string;
    connected: boolean;
    matchIndex: number | null;
    lag: number | null;
  }[];
}

async function status(base: string, json: boolean): Promise<number> {
  const response = await request(`${base}/status`);
  if (!response.ok) return await failWith(response);
  const body = await response.json() as StatusBody;
  if (json) {
    process.stdout.write(JSON.stringify(body, null, 2) + "\n");
    return 0;
  }
  process.stdout.write(
    `node ${body.name} (${body.role}, term ${body.term})  leader: ${body.leader ?? "none"}\n` +
      `commit ${body.commitIndex}  applied ${body.appliedIndex}  last ${body.lastIndex}  snapshot ${body.snapshotIndex}\n\n`,
  );
  const rows = [["MEMBER", "PEER", "CONNECTED", "MATCH", "LAG"]];
  for (const m of body.members) {
    rows.push([
      m.name,
      m.peer,
      String(m.connected),
      String(m.matchIndex ?? "-"),
      String(m.lag ?? "-"),
    ]);
  }
  process.stdout.write(table(rows));
  return 0;
}

async function kv(base: string, flags: Flags): Promise<number> {
  const [verb, key, value] = flags.positionals;
  const keyUrl = (k: string) => `${base}/v1/kv/${encodeURIComponent(k)}`;
  switch (verb) {
    case "get": {
      if (key === undefined) throw new CliError("keel kv get needs a KEY");
      const response = await request(
        keyUrl(key) + (flags.boolean("stale") ? "?consistency=stale" : ""),
      );
      if (!response.ok) return await failWith(response);
      process.stdout.write(new Uint8Array(await response.arrayBuffer()));
      if (process.stdout.isTTY) process.stdout.write("\n");
      return 0;
    }
    case "put": {
      if (key === undefined || value === undefined) {
        throw new CliError("keel kv put needs a KEY and a VALUE");
      }
      const response = await request(keyUrl(key), { method: "PUT", body: value });
      if (!response.ok) return await failWith(response);
      process.stdout.write(flags.boolean("json") ? await response.text() + "\n" : "ok\n");
      return 0;
    }
    case "delete": {
      if (key === undefined) throw new CliError("keel kv delete needs a KEY");
      const response = await request(keyUrl(key), { method: "DELETE" });
      if (!response.ok) return await failWith(response);
      process.stdout.write(await response.text() + "\n");
      return 0;
    }
    case "list": {
      const response = await request(`${base}/v1/kv?prefix=${encodeURIComponent(key ?? "")}`);
      if (!response.ok) return await failWith(response);
      const body = await response.json() as {
        items: { key: string; value?: string; value_base64?: string }[];
      };
      if (flags.boolean("json")) {
        process.stdout.write(JSON.stringify(body, null, 2) + "\n");
        return 0;
      }
      for (const item of body.items) {
        process.stdout.write(`${item.key}\t${item.value ?? `base64:${item.value_base64}`}\n`);
      }
      return 0;
    }
    default:
      throw new CliError(
        `keel kv needs get, put, delete or list; got ${
          verb === undefined ? "nothing" : `"${verb}"`
        }`,
      );
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join(
    "\n",
  ) + "\n";
}
