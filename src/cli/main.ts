#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { exitCodes, type Command, type OptionSpec } from './command.js';
import { cacheCommands } from './commands/cache.js';
import { doctorCommands } from './commands/doctor.js';
import { ephemeralCommands } from './commands/ephemeral.js';
import { healthCommands } from './commands/health.js';
import { keyCommands } from './commands/key.js';
import { volumeCommands } from './commands/volumes.js';
import { reportFailure, UsageError } from './output.js';

/** The CLI is this table; help is generated from it. */
const commands: Command[] = [...healthCommands, ...volumeCommands, ...ephemeralCommands, ...cacheCommands, ...doctorCommands, ...keyCommands];

const globalOptions: Command['options'] = {
  config: { type: 'string', help: 'config file (YAML, or a nova.conf-style .conf/.ini); default $PORTCULLIS_CONFIG or /etc/portcullis/portcullis.yaml', valueName: 'FILE' },
  backend: { type: 'string', help: 'use this key-manager backend instead of the configured one (key commands)', valueName: 'NAME' },
  socket: { type: 'string', help: "portcullisd's socket; default socket.path of the config, else /run/portcullis/portcullis.sock", valueName: 'PATH' },
  timeout: { type: 'string', help: 'give up on the daemon after this long (default 330; attaches can take minutes)', valueName: 'SECONDS' },
  json: { type: 'boolean', help: 'print JSON for scripts (data on stdout, errors on stderr)' },
  help: { type: 'boolean', short: 'h', help: 'show help' },
};

/**
 * Global options may come before the command (`portcullis --config F key list`):
 * set them aside, then match the longest command path at the front.
 */
function splitCommand(argv: string[]): { command: Command | undefined; rest: string[] } {
  const leading: string[] = [];
  let i = 0;
  while (i < argv.length && (argv[i] as string).startsWith('-')) {
    const arg = argv[i] as string;
    leading.push(arg);
    const spec = globalOptions[arg.replace(/^--?/, '')];
    if (spec?.type === 'string' && !arg.includes('=') && i + 1 < argv.length) leading.push(argv[++i] as string);
    i += 1;
  }
  const words = argv.slice(i);
  const command = commands
    .filter((c) => c.path.every((word, n) => words[n] === word))
    .sort((a, b) => b.path.length - a.path.length)[0];
  return { command, rest: [...leading, ...words.slice(command?.path.length ?? 0)] };
}

function optionLines(options: Command['options']): string[] {
  return Object.entries(options).map(([name, spec]) => {
    const flag = `--${name}${spec.type === 'string' ? ` ${spec.valueName ?? 'VALUE'}` : ''}`;
    return `  ${flag.padEnd(28)} ${spec.help}`;
  });
}

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length));
  return [
    'Usage: portcullis COMMAND [OPTIONS]',
    '',
    'Admin CLI of portcullis, the disk-encryption key daemon.',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`),
    '',
    'Global options:',
    ...optionLines(globalOptions),
    '',
    "Run 'portcullis COMMAND --help' for a command's options.",
    'Exit codes: 0 ok; 1 the operation failed (health: not ok; doctor: a FAIL); 2 usage error;',
    '3 configuration error; 4 the daemon could not be reached (nothing was sent).',
  ].join('\n');
}

function commandHelp(c: Command): string {
  return [
    `Usage: portcullis ${c.path.join(' ')} ${c.usage}`,
    '',
    `${c.summary[0]?.toUpperCase() ?? ''}${c.summary.slice(1)}.`,
    ...(c.notes === undefined ? [] : ['', c.notes]),
    '',
    'Options:',
    ...optionLines(c.options),
    ...optionLines(globalOptions),
  ].join('\n');
}

function toParseArgs(options: Command['options']): OptionSpec {
  const out: OptionSpec = {};
  for (const [name, spec] of Object.entries(options)) {
    const { help: _help, valueName: _valueName, ...parseSpec } = spec;
    out[name] = parseSpec;
  }
  return out;
}

async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(`${mainHelp()}\n`);
    return argv.length === 0 ? exitCodes.usage : exitCodes.ok;
  }
  if (argv[0] === '--version') {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`portcullis ${pkg.version}\n`);
    return exitCodes.ok;
  }
  const { command, rest } = splitCommand(argv);
  const wantsJson = argv.includes('--json');
  try {
    if (command === undefined) throw new UsageError(`unknown command "${rest.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}"`);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`${commandHelp(command)}\n`);
      return exitCodes.ok;
    }
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options: toParseArgs({ ...globalOptions, ...command.options }), allowPositionals: true, strict: true });
    } catch (err) {
      throw new UsageError(err instanceof Error ? err.message : String(err));
    }
    const expected = command.positionals ?? 0;
    if (parsed.positionals.length !== expected) {
      throw new UsageError(`portcullis ${command.path.join(' ')} takes ${expected} argument(s): ${command.usage}`);
    }
    return await command.run({ values: parsed.values, positionals: parsed.positionals });
  } catch (err) {
    return reportFailure(err, wantsJson);
  }
}

process.exitCode = await main(process.argv.slice(2));
