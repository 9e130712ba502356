#!/usr/bin/env bun
// The ledger's own binary: the whole keel command line, serving the ledger service.
//   make example-ledger        (bun build --compile examples/ledger/main.ts)
//   dist/keel-ledger run --config examples/local-3.yaml --name node-a
import { main } from "keel";
import { createLedger } from "./ledger.ts";

process.exit(await main(process.argv.slice(2), { service: createLedger }));
