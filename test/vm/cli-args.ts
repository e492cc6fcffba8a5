/**
 * Tiny option parser for the two harness scripts: `--name value` and
 * `--name=value` options from a fixed table, then positionals; `--` ends
 * options. Each option declared once, unknown ones refused.
 */
export interface ParsedArgs {
  options: Map<string, string[]>;
  positionals: string[];
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** `spec` maps option names to whether they take a value. */
export function parseArgs(argv: readonly string[], spec: Readonly<Record<string, boolean>>): ParsedArgs {
  const options = new Map<string, string[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') || positionals.length > 0) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const takesValue = spec[name];
    if (takesValue === undefined) throw new UsageError(`unknown option --${name}`);
    let value = 'true';
    if (takesValue) {
      const next = eq < 0 ? argv[++i] : arg.slice(eq + 1);
      if (next === undefined) throw new UsageError(`--${name} needs a value`);
      value = next;
    }
    options.set(name, [...(options.get(name) ?? []), value]);
  }
  return { options, positionals };
}

/** The option's value in seconds, returned in milliseconds. */
export function seconds(args: ParsedArgs, name: string, fallbackSeconds: number): number {
  const raw = args.options.get(name)?.at(-1);
  if (raw === undefined) return fallbackSeconds * 1000;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} ${JSON.stringify(raw)} is not a positive number of seconds`);
  return Math.round(n * 1000);
}
