// The admin commands: snapshot, step-down, suspend, resume, shutdown. Each is one POST to
// /admin/* with the bearer token. snapshot and step-down follow a not_leader answer to the
// leader it names, once.

import {
  type ApiError,
  CommandError,
  connectionOptions,
  describeApiError,
  readApiError,
  request,
  requestTimeoutMsDefault,
  resolveTarget,
  type Target,
} from "./client.ts";
import { CliError, Flags } from "./flags.ts";
import { bytes, dash, type Io, writeJson } from "./output.ts";

export type AdminCommand = "snapshot" | "step-down" | "suspend" | "resume" | "shutdown";

export const adminCommands: readonly AdminCommand[] = [
  "snapshot",
  "step-down",
  "suspend",
  "resume",
  "shutdown",
];

/** AdminAnswer is a successful admin call: who answered, and its JSON body. */
export interface AdminAnswer {
  url: string;
  /** The node first asked, when it was not the leader and the call went to the leader. */
  redirectedFrom: string | undefined;
  body: Record<string, unknown>;
}

/**
 * adminPost POSTs an admin route. When followLeader is set and the node answers not_leader
 * naming the leader's URL, it asks the leader once and tells the operator so on stderr.
 */
export async function adminPost(
  target: Target,
  path: string,
  body: unknown,
  io: Io,
  options: { followLeader: boolean; quiet?: boolean },
): Promise<AdminAnswer> {
  let url = target.url;
  let redirectedFrom: string | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers: Record<string, string> = {};
    if (target.token !== undefined) headers.authorization = `Bearer ${target.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const init: RequestInit = { method: "POST", headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await request(`${url}${path}`, target.timeoutMs, init);
    if (response.ok) {
      const text = await response.text();
      return { url, redirectedFrom, body: parseObject(text) };
    }
    const error = await readApiError(response);
    const leaderUrl = error.leader?.url.replace(/\/+$/, "");
    if (
      options.followLeader && attempt === 0 && error.code === "not_leader" &&
      leaderUrl !== undefined && leaderUrl !== url
    ) {
      if (options.quiet !== true) {
        io.err(
          `keel: ${url} is not the leader; asking the leader ${
            error.leader!.name
          } at ${leaderUrl}\n`,
        );
      }
      redirectedFrom = url;
      url = leaderUrl;
      continue;
    }
    throw new CommandError(describeAdminError(`${url}${path}`, error, target));
  }
  throw new CommandError(`${url}${path}: the leader moved again while retrying; try again`);
}

/** describeAdminError explains a refused admin call, with a hint for token problems. */
export function describeAdminError(url: string, error: ApiError, target: Target): string {
  const described = describeApiError(url, error);
  if (error.status === 401) {
    return target.token === undefined
      ? `${described}\nNo admin token given: pass --token TOKEN, set KEEL_ADMIN_TOKEN, or use --config with security.admin_token`
      : `${described}\nThe admin token (from ${target.tokenSource}) was not accepted`;
  }
  if (error.status === 403 && error.code !== "admin_disabled") {
    return `${described}\nThe admin token (from ${target.tokenSource}) is wrong for this node`;
  }
  return described;
}

export const adminOptions = { ...connectionOptions, to: { type: "string" } } as const;

/** adminCommand runs one of the admin commands. */
export async function adminCommand(
  command: AdminCommand,
  args: string[],
  io: Io,
): Promise<number> {
  const flags = new Flags(args, adminOptions);
  if (flags.positionals.length > 0) {
    throw new CliError(`keel ${command} takes no arguments; got "${flags.positionals[0]}"`);
  }
  const to = flags.string("to");
  if (to !== undefined && command !== "step-down") {
    throw new CliError(`--to is for keel step-down only`);
  }
  const target = resolveTarget(flags, io, requestTimeoutMsDefault);
  if (to !== undefined) {
    if (to === "") throw new CliError("--to needs a member name");
    if (target.config !== undefined && !target.config.members.some((m) => m.name === to)) {
      const names = target.config.members.map((m) => m.name).join(", ");
      throw new CliError(`--to: no member named "${to}" (members: ${names})`);
    }
  }
  const json = flags.boolean("json");
  const report = (answer: AdminAnswer, text: string): number => {
    if (json) {
      writeJson(io, {
        ...answer.body,
        url: answer.url,
        ...(answer.redirectedFrom === undefined ? {} : { redirectedFrom: answer.redirectedFrom }),
      });
    } else {
      io.out(text + "\n");
    }
    return 0;
  };

  switch (command) {
    case "snapshot": {
      const answer = await adminPost(target, "/admin/snapshot", undefined, io, {
        followLeader: true,
        quiet: json,
      });
      const size = typeof answer.body.bytes === "number" ? ` (${bytes(answer.body.bytes)})` : "";
      return report(
        answer,
        `${answer.url}: snapshot taken at index ${dash(num(answer.body.index))}${size}`,
      );
    }
    case "step-down": {
      const answer = await adminPost(
        target,
        "/admin/step-down",
        to === undefined ? undefined : { to },
        io,
        { followLeader: true, quiet: json },
      );
      const leader = typeof answer.body.leader === "string" ? answer.body.leader : undefined;
      return report(
        answer,
        `${answer.url} stepped down; ${
          leader === undefined ? "a new leader was elected" : `${leader} leads now`
        }`,
      );
    }
    case "suspend": {
      const answer = await adminPost(target, "/admin/suspend", undefined, io, {
        followLeader: false,
      });
      return report(answer, `${answer.url}: client writes suspended (keel resume to undo)`);
    }
    case "resume": {
      const answer = await adminPost(target, "/admin/resume", undefined, io, {
        followLeader: false,
      });
      return report(answer, `${answer.url}: client writes resumed`);
    }
    case "shutdown": {
      const answer = await adminPost(target, "/admin/shutdown", undefined, io, {
        followLeader: false,
      });
      return report(
        answer,
        `${answer.url} is shutting down (a leader hands over leadership first)`,
      );
    }
  }
}

function num(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}

// An admin answer's body: a JSON object, or nothing (202 from shutdown may have no body).
function parseObject(text: string): Record<string, unknown> {
  if (text.trim() === "") return {};
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // Fall through: shown as text.
  }
  return { text };
}
