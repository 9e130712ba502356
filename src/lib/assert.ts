/** AssertionError marks a broken invariant: a bug. It is never caught. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

/** assert crashes on a broken invariant; the supervisor restarts the process. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** unreachable marks a case a tagged union makes impossible. */
export function unreachable(value: never): never {
  throw new AssertionError(`Unreachable: ${JSON.stringify(value)}`);
}
