// Loading a cluster file: reading it (bounded), parsing its YAML and, since Bun.YAML reports
// no line, locating a syntax error; then validate.ts builds the Config.

import { readFileSync, statSync } from "node:fs";
import {
  configFileBytesMax,
  syntaxLineSearchBytesMax,
  syntaxLineSearchLinesMax,
} from "./limits.ts";
import { describeFileError, fileProblemPath, formatProblems } from "./messages.ts";
import type { ConfigProblem, ConfigResult } from "./types.ts";
import { validateConfig } from "./validate.ts";

/** ConfigError carries every problem found in a cluster file; the process exits 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly problems: readonly ConfigProblem[];
  readonly source: string;

  constructor(problems: readonly ConfigProblem[], source: string) {
    super(formatProblems(problems, source));
    this.problems = problems;
    this.source = source;
  }
}

/**
 * loadConfig reads and validates a cluster file. A missing, unreadable or oversized file
 * is reported as a problem like any other; it never throws for a bad file.
 */
export function loadConfig(path: string): ConfigResult {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > configFileBytesMax) {
      return fileProblem(
        path,
        `file is ${size} bytes, more than the maximum of ${configFileBytesMax} bytes`,
      );
    }
    text = readFileSync(path, "utf8");
  } catch (error: unknown) {
    return fileProblem(path, `cannot read file: ${describeFileError(error)}`);
  }
  return parseConfigText(text, path);
}

function fileProblem(source: string, message: string): ConfigResult {
  return {
    source,
    config: undefined,
    problems: [{ path: fileProblemPath, message }],
    warnings: [],
  };
}

/**
 * parseConfigText parses and validates the YAML text of a cluster file. It collects every
 * problem it can find, each with the path of the setting it concerns, rather than
 * stopping at the first.
 */
export function parseConfigText(text: string, source: string): ConfigResult {
  if (text.length > configFileBytesMax) {
    return fileProblem(
      source,
      `file is more than the maximum of ${configFileBytesMax} bytes`,
    );
  }
  let document: unknown;
  try {
    document = Bun.YAML.parse(text);
  } catch (error: unknown) {
    return fileProblem(source, describeSyntaxError(text, error));
  }
  return { source, ...validateConfig(document) };
}

// Bun.YAML reports no line, so find the first line at which a prefix of the text stops
// being YAML. Cutting block YAML at a line end leaves valid YAML, or an "Unexpected EOF"
// inside a flow collection or a quoted string, so EOF errors are skipped. It is a guess,
// hence "near line".
function describeSyntaxError(text: string, error: unknown): string {
  const message = (error instanceof Error ? error.message : String(error))
    .replace(/^YAML Parse error: /, "");
  const lines = text.split("\n");
  if (lines.length <= syntaxLineSearchLinesMax && text.length <= syntaxLineSearchBytesMax) {
    for (let count = 1; count <= lines.length; count++) {
      try {
        Bun.YAML.parse(lines.slice(0, count).join("\n"));
      } catch (prefixError: unknown) {
        const prefixMessage = prefixError instanceof Error ? prefixError.message : "";
        if (!prefixMessage.includes("EOF")) {
          return `YAML syntax error near line ${count}: ${message}`;
        }
      }
    }
  }
  return `YAML syntax error: ${message}`;
}
