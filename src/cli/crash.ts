// Uncaught errors end the process. Bun keeps running after an error thrown from a timer, an
// immediate or a promise callback while the entry point awaits (`process.exit(await
// main())`): it prints the error and goes on, so a node with a broken invariant would keep
// serving. Anything that reaches here is a bug: log it and exit 70 (EX_SOFTWARE), as
// docs/deploy.md promises, so the supervisor starts a clean process.

/** exitCodeInternal is the exit code of a broken invariant or any other uncaught error. */
export const exitCodeInternal = 70;

let installed: ((error: unknown) => void) | undefined;

/**
 * exitOnUncaught makes every uncaught exception and unhandled rejection end the process
 * with exitCodeInternal after `report` (a later call replaces the report).
 */
export function exitOnUncaught(report: (error: unknown) => void): void {
  if (installed !== undefined) {
    process.off("uncaughtException", installed);
    process.off("unhandledRejection", installed);
  }
  installed = (error: unknown): void => {
    try {
      report(error);
    } finally {
      process.exit(exitCodeInternal);
    }
  };
  process.on("uncaughtException", installed);
  process.on("unhandledRejection", installed);
}

/** describeCrash is the text of an uncaught error for stderr. */
export function describeCrash(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}
