#!/usr/bin/env bun
// Entry point of the keel binary: argv -> command -> exit code.
import { main } from "./cli/main.ts";

process.exit(await main(process.argv.slice(2)));
