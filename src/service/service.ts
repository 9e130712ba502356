/**
 * Service is a deterministic state machine replicated by keel. Given the same commands in
 * the same order, every member must reach the same state and return the same results:
 * no clocks, no randomness, no I/O inside apply.
 */
export interface Service {
  /** apply runs one committed command and returns the result bytes for the client. */
  apply(command: Uint8Array, context: ApplyContext): Uint8Array;
  /** snapshot serializes the whole state. */
  snapshot(): Uint8Array;
  /** restore replaces the whole state with a snapshot's. */
  restore(data: Uint8Array): void;
}

export interface ApplyContext {
  /** Log index of the command being applied. */
  index: number;
  term: number;
}
