#!/usr/bin/env node
// Runs a command inside the qemu test VM (dm-crypt, loop) and exits with its status.
// The harness is TypeScript compiled with the rest: --build DIR (or PORTCULLIS_BUILD_DIR) picks the
// build output, default dist/. See docs/testing-vm.md.
import { pickBuild } from './vm-build.mjs';

const { build, rest } = pickBuild(process.argv.slice(2));
const { main } = await import(new URL(`test/vm/run-cli.js`, build).href);
process.exitCode = await main(rest);
