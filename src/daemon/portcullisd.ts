#!/usr/bin/env node
// portcullisd: the daemon's entry point (see main.ts for options, host.ts for what it wires in).
import { productionDeps } from './host.js';
import { main } from './main.js';

process.exitCode = await main(process.argv.slice(2), productionDeps());
