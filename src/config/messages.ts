// How the config reader words its problems: the file-level path, one line per problem,
// values quoted and cut short, and why a file could not be read.

import type { ConfigProblem } from "./types.ts";

/**
 * formatProblems renders one problem per line, prefixed by the file:
 * `cluster.yaml: members[2].peer: port must be 1-65535`. Problems with the file as a
 * whole (path "(file)") read `cluster.yaml: <message>`.
 */
export function formatProblems(problems: readonly ConfigProblem[], source: string): string {
  return problems
    .map((problem) =>
      problem.path === fileProblemPath
        ? `${source}: ${problem.message}`
        : `${source}: ${problem.path}: ${problem.message}`
    )
    .join("\n");
}

/** fileProblemPath names problems with the file as a whole: unreadable, not YAML. */
export const fileProblemPath = "(file)";

/** describeFileError says in a few words why a file could not be read. */
export function describeFileError(error: unknown): string {
  const code = error instanceof Error && "code" in error ? error.code : undefined;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return error instanceof Error ? error.message : String(error);
  }
}

/** quotedLengthMax is the most characters of a value a message shows. */
export const quotedLengthMax = 64;

/** quote renders a string for a message, cut short so a huge value cannot flood the log. */
export function quote(value: string): string {
  return JSON.stringify(
    value.length > quotedLengthMax ? `${value.slice(0, quotedLengthMax)}...` : value,
  );
}

/** typeName names the YAML type of a value, for "must be X, got Y" messages. */
export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "number") return "a number";
  if (typeof value === "string") return "a string";
  return typeof value;
}

/** show renders a scalar for a message, and only the type of anything bigger. */
export function show(value: unknown): string {
  if (typeof value === "string") return quote(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return typeName(value);
}
