#!/usr/bin/env node
// Runs the privileged test suite (every compiled *.vm.test.js) in one shared qemu VM, or
// directly on a host with dm-crypt. --build DIR (or PORTCULLIS_BUILD_DIR) picks the build
// output, default dist/. See docs/testing-vm.md.
import { pickBuild } from './vm-build.mjs';

const { build, rest } = pickBuild(process.argv.slice(2));
const { main } = await import(new URL(`test/vm/suite-cli.js`, build).href);
process.exitCode = await main(rest);
