import { DEFAULT_SOCKET_PATH } from '../../config/daemon-options.js';
import { localRunner } from '../../luks/commands/runner.js';
import { exitCodes, stringOption, type Command, type CommandInput, type OptionValues } from '../command.js';
import { daemonClient } from '../daemon-client.js';
import { findConfig, findSocket, timeoutMs, type FoundConfig, type SocketTarget } from '../daemon-session.js';
import { checkCryptsetup, checkDaemon, checkDmCrypt, checkKek, checkSocket, type Finding } from '../doctor-checks.js';
import { printJson } from '../output.js';
import { fetchHealth } from './health.js';

/** Unless --timeout says otherwise: the daemon's health check itself takes a few seconds at most. */
const DOCTOR_TIMEOUT_MS = 60_000;

function configFinding(values: OptionValues): { found: FoundConfig | undefined; finding: Finding } {
  let found: FoundConfig;
  try {
    found = findConfig(values);
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split('\n').map((l) => l.trim()).join(' ');
    return { found: undefined, finding: { verdict: 'fail', check: 'config', detail: message, hint: 'fix it; portcullisd --check-config --config FILE checks it' } };
  }
  if (found.loaded === undefined) {
    return {
      found,
      finding: { verdict: 'fail', check: 'config', detail: `no config at ${found.path}; portcullisd will not start without one`, hint: 'create it (see examples/local.yaml) or pass --config FILE' },
    };
  }
  const c = found.loaded.config;
  return { found, finding: { verdict: 'ok', check: 'config', detail: `${found.path}: backend ${c.key_manager.backend}, socket ${c.socket.path}` } };
}

const LABEL: Record<Finding['verdict'], string> = { ok: 'ok', warn: 'warn', fail: 'FAIL' };

function printFindings(findings: Finding[]): void {
  const width = Math.max(...findings.map((f) => f.check.length));
  for (const f of findings) {
    process.stdout.write(`${LABEL[f.verdict].padEnd(4)}  ${f.check.padEnd(width)}  ${f.detail}${f.hint === undefined ? '' : ` — ${f.hint}`}\n`);
  }
}

const doctor: Command = {
  path: ['doctor'],
  summary: 'check this host for what portcullisd needs, each finding with a fix hint',
  usage: '[--json]',
  notes: [
    'Checks: config, cryptsetup and its version, dm-crypt, the socket (there, mode, group, open to you),',
    "the daemon's health including key-manager reachability, and the local keystore's KEK file.",
    'Exit codes: 0 no FAIL (warnings allowed); 1 at least one FAIL. Runs without a daemon;',
    '--timeout defaults to 60 seconds here.',
  ].join('\n'),
  options: {},
  async run({ values }: CommandInput) {
    const runner = localRunner();
    const { found, finding: configCheck } = configFinding(values);
    const config = found?.loaded?.config;
    // A broken config still leaves --socket or the default path to look at.
    const target: SocketTarget =
      found === undefined && stringOption(values, 'socket') === undefined
        ? { path: DEFAULT_SOCKET_PATH, origin: 'the default; the config is unusable' }
        : findSocket(values, found);
    const [cryptsetup, dmCrypt] = await Promise.all([checkCryptsetup(runner), checkDmCrypt(runner)]);
    const socket = checkSocket(target, config);
    const socketThere = socket.some((f) => f.check === 'socket' && f.verdict === 'ok');
    const timeout = stringOption(values, 'timeout') === undefined ? DOCTOR_TIMEOUT_MS : timeoutMs(values);
    const daemon = socketThere
      ? await checkDaemon(() => fetchHealth(daemonClient(target.path, { timeoutMs: timeout, origin: target.origin })))
      : [{ verdict: 'fail' as const, check: 'daemon', detail: 'not reachable, so its health and key-manager reachability are unknown', hint: 'start portcullisd, then run portcullis doctor again' }];
    const kek = config === undefined ? undefined : checkKek(config);
    const findings = [configCheck, cryptsetup, dmCrypt, ...socket, ...daemon, ...(kek === undefined ? [] : [kek])];
    const ok = !findings.some((f) => f.verdict === 'fail');
    if (values['json'] === true) printJson({ ok, checks: findings });
    else printFindings(findings);
    return ok ? exitCodes.ok : exitCodes.failed;
  },
};

export const doctorCommands: Command[] = [doctor];
