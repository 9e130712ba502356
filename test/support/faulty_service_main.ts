// A keel binary whose service fails on purpose, for test/e2e/service_faults.test.ts:
//   {"op":"add","n":N}     adds N to the counter
//   {"op":"throw"}         adds 1000, then throws: the apply must be rolled back
//   {"op":"poison"}        marks the state so that restoring its snapshot throws
// Query: any JSON -> {"counter":N,"poisoned":bool}.
import { type ApplyContext, jsonService, main } from "../../src/index.ts";

interface State {
  counter: number;
  poisoned: boolean;
}

const state: State = { counter: 0, poisoned: false };

const service = jsonService<{ op: string; n?: number }, { counter: number }, unknown, State>({
  apply(command, _context: ApplyContext) {
    switch (command.op) {
      case "add":
        state.counter += command.n ?? 1;
        break;
      case "throw":
        state.counter += 1000;
        throw new Error("deliberate failure in apply");
      case "poison":
        state.poisoned = true;
        break;
    }
    return { counter: state.counter };
  },
  query: () => state,
  snapshot: () => state,
  restore(value) {
    const restored = value as State;
    if (restored.poisoned) throw new Error("deliberately unreadable snapshot");
    state.counter = restored.counter;
    state.poisoned = false;
  },
});

process.exit(await main(process.argv.slice(2), { service: () => service }));
