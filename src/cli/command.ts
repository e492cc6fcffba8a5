import type { ParseArgsConfig } from 'node:util';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;
export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

export interface CommandInput {
  values: OptionValues;
  positionals: string[];
}

/** One row of the CLI's command table. */
export interface Command {
  /** Words that select it, e.g. ['key', 'create']. */
  path: readonly string[];
  summary: string;
  /** Usage after the command words, e.g. "ID --project P [--output hex|raw|json]". */
  usage: string;
  /** Options beyond the global ones, each with its help line. */
  options: Readonly<Record<string, OptionSpec[string] & { help: string; valueName?: string }>>;
  /** Number of positionals required (exactly). */
  positionals?: number;
  /** More help after the summary (exit codes that differ from the usual, examples). */
  notes?: string;
  run(input: CommandInput): Promise<number>;
}

/** CLI exit codes, documented in docs/cli.md. */
export const exitCodes = {
  ok: 0,
  failed: 1,
  usage: 2,
  config: 3,
  /** The daemon could not be reached (no socket, permission, stale socket); nothing was sent. */
  unreachable: 4,
} as const;

export function stringOption(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function stringsOption(values: OptionValues, name: string): string[] {
  const value = values[name];
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}
