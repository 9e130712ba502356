import { parseArgs } from "node:util";

/** CliError is a usage mistake: printed with a hint to --help, exit code 2. */
export class CliError extends Error {
  override name = "CliError";
}

/** Flags wraps node:util parseArgs with typed accessors and clear errors. */
export class Flags {
  readonly positionals: string[];
  readonly #values: Record<string, string | boolean | undefined>;

  constructor(
    args: string[],
    options: Record<string, { type: "string" | "boolean"; short?: string }>,
  ) {
    try {
      const parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
      this.positionals = parsed.positionals;
      this.#values = parsed.values as Record<string, string | boolean | undefined>;
    } catch (error: unknown) {
      throw new CliError(error instanceof Error ? error.message : String(error));
    }
  }

  string(name: string): string | undefined {
    const value = this.#values[name];
    return typeof value === "string" ? value : undefined;
  }

  boolean(name: string): boolean {
    return this.#values[name] === true;
  }

  choice<T extends string>(name: string, choices: readonly T[]): T | undefined {
    const value = this.string(name);
    if (value === undefined) return undefined;
    if (!(choices as readonly string[]).includes(value)) {
      throw new CliError(`--${name} must be one of ${choices.join(", ")}; got "${value}"`);
    }
    return value as T;
  }
}
