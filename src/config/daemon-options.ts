import { z } from 'zod';
import { absoluteFile, seconds } from '../keyclient/options.js';

/**
 * The daemon's own config sections; composed into the whole config in
 * src/config/schema.ts. Every limit here bounds something a caller controls.
 */

export const DEFAULT_SOCKET_PATH = '/run/portcullis/portcullis.sock';

const uidList = z.array(z.number().int().min(0).max(4294967294)).max(256);

/**
 * Seconds that become a Node timer: above 2^31-1 ms (24.8 days) Node fires
 * the timer after 1 ms instead, so a huge value would time out everything.
 */
const timerSeconds = (max: number) => seconds().max(max, `must be at most ${max} (seconds)`);

const roleSchema = z.strictObject({
  /** Peers whose uid is listed. */
  uids: uidList.default([]),
  /** Peers whose primary or supplementary gid is listed. */
  gids: uidList.default([]),
});

export const socketOptionsSchema = z.strictObject({
  /** @default /run/portcullis/portcullis.sock */
  path: absoluteFile().refine((p) => Buffer.byteLength(p) <= 107, 'must fit in sockaddr_un (107 bytes)').default(DEFAULT_SOCKET_PATH),
  /** Octal string or number. @default "0660" */
  mode: z
    .union([z.string().regex(/^0?[0-7]{3}$/, 'must be an octal mode like "0660"'), z.number().int().min(0).max(0o777)])
    .transform((m) => (typeof m === 'number' ? m : Number.parseInt(m, 8)))
    .default(0o660),
  /** Group (name or gid) that owns the socket; agents connect through it. @default the daemon's group */
  group: z.union([z.string().min(1).max(64).regex(/^[A-Za-z_][A-Za-z0-9_.-]*\$?$/, 'must be a group name or a gid'), z.number().int().min(0).max(4294967294)]).optional(),
});

export const rolesOptionsSchema = z.strictObject({
  /** May attach, detach, resize and read volumes and health. */
  agent: roleSchema.prefault({}),
  /** May do what agents do, and read or flush the cache and metrics. root is always admin. */
  admin: roleSchema.prefault({}),
});

export const limitsOptionsSchema = z.strictObject({
  /** Request bodies larger than this are refused with 413 before parsing. @default 65536 */
  max_body_bytes: z.number().int().min(1024).max(1_048_576).default(65_536),
  /** cryptsetup (and blkid, dmsetup) processes at once. @default 4 */
  max_concurrent_commands: z.number().int().min(1).max(256).default(4),
  /** Mutating requests admitted at once (running or waiting); more get 503 with Retry-After. @default 64 */
  max_pending_requests: z.number().int().min(1).max(10_000).default(64),
  /**
   * Reads that run commands or ask the key manager (GET /v1/volumes, GET
   * /v1/volumes/NAME, GET /v1/health) admitted at once; more get 503
   * E_OVERLOADED with Retry-After. Separate from max_pending_requests, so
   * reads cannot crowd attaches out of the command slots, nor attaches
   * starve reads. @default 8
   */
  max_pending_reads: z.number().int().min(1).max(1_000).default(8),
  /** Per cryptsetup command. @default 120 */
  command_timeout_seconds: timerSeconds(86_400).refine((s) => s >= 1, 'must be at least 1').default(120),
  /**
   * A request that has not finished in this time gets 504 (the work goes on,
   * and keeps its admission slot and the shutdown drain until it ends). @default 300
   */
  request_timeout_seconds: timerSeconds(86_400).refine((s) => s >= 1, 'must be at least 1').default(300),
  /** How long SIGTERM waits for in-flight requests. @default 30 */
  shutdown_grace_seconds: timerSeconds(3600).default(30),
  /**
   * Open connections at once, idle ones included; past it a new connection is
   * answered 503 E_OVERLOADED and closed. Bounds file descriptors and body
   * buffers (each connection may hold up to max_body_bytes). @default 256
   */
  max_connections: z.number().int().min(1).max(65_536).default(256),
  /**
   * Time from the start of a request (from connect, for a connection's first;
   * also how long a kept-alive connection may sit idle) to the end of its
   * headers. Slower clients get 408 E_CLIENT_TIMEOUT and are disconnected. @default 10
   */
  header_timeout_seconds: timerSeconds(3600).refine((s) => s >= 1, 'must be at least 1').default(10),
  /** Further time, after header_timeout_seconds, for the body to arrive in full; else 408 E_CLIENT_TIMEOUT. @default 30 */
  body_timeout_seconds: timerSeconds(3600).refine((s) => s >= 1, 'must be at least 1').default(30),
});

export const luksOptionsSchema = z.strictObject({
  /** PBKDF for keyslots portcullis writes: keys are ≥ 256 random bits, a slow PBKDF buys nothing. @default pbkdf2 */
  pbkdf: z.enum(['pbkdf2', 'argon2id', 'argon2i', 'default']).default('pbkdf2'),
  /** Forced iterations (pbkdf2) or time cost (argon2). @default 1000 */
  pbkdf_iterations: z.number().int().min(1).max(10_000_000).default(1000),
  /**
   * After opening a LUKS volume whose keyslot for this key has a slower PBKDF
   * than the two settings above (os-brick formats with cryptsetup's default:
   * seconds per open), rewrite that keyslot to them. Off by default: it
   * writes to a volume's header, which an operator should choose to allow.
   * @default false
   */
  upgrade_keyslots: z.boolean().default(false),
  /** Use dm-crypt's no_read/no_write_workqueue flags where kernel and cryptsetup support them. @default true */
  perf_no_workqueue: z.boolean().default(true),
  /** Cipher and key size when an attach does not name them. */
  cipher: z.string().regex(/^[a-z0-9]+(-[a-z0-9:]+){0,3}$/, 'must look like aes-xts-plain64').default('aes-xts-plain64'),
  key_size: z.number().int().min(128).max(1024).multipleOf(8, 'must be a multiple of 8 (bits)').default(512),
  /**
   * What carries out dm-crypt and LUKS operations: `helper`, the privileged
   * helper on libcryptsetup (docs/helper-protocol.md; no process per
   * operation, header verdicts from libcryptsetup), or `cryptsetup`, its
   * command line (a process per operation). Changes only on restart.
   * @default helper
   */
  via: z.enum(['helper', 'cryptsetup']).default('helper'),
  /** The helper binary the daemon starts as its child. @default the one installed beside the daemon (helper/portcullis-helper under its package directory) */
  helper_path: absoluteFile().optional(),
  /**
   * The socket of a helper that systemd runs on its own (the shipped
   * portcullis-helper.socket: /run/portcullis-helper/helper.sock). Set, the
   * daemon connects there instead of starting a helper, and needs no root at
   * all; the helper's own command line then says which symlink directories
   * it allows (symlink_dirs is for a helper the daemon starts). Unset, the
   * daemon must start as root.
   */
  helper_socket: absoluteFile().optional(),
  /** The only directories where the helper may point os-brick's attachment symlinks (symlink: true). @default [/dev] */
  symlink_dirs: z.array(absoluteFile()).min(1).default(['/dev']),
});

export const runtimeOptionsSchema = z.strictObject({
  /**
   * Where the daemon remembers the project and key of each mapping it made, so
   * a restarted daemon still knows them. Keep it on a tmpfs a reboot clears
   * (the mappings do not survive one either). @default volumes.json beside socket.path
   */
  volumes_file: absoluteFile().optional(),
  /**
   * Started as root, portcullisd gives root up for this user as soon as its
   * privileged helper answers, before it opens the key manager, the records
   * or the socket: only the helper keeps the devices. Unset: it keeps the
   * user it was started as.
   */
  user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a user name').optional(),
});

export const logOptionsSchema = z.strictObject({
  level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  /** auto: readable on a terminal, JSON otherwise (journald). */
  format: z.enum(['auto', 'json', 'text']).default('auto'),
  /** Audit stream of every key access: a file (JSON lines, 0600), or absent for the main log with audit=true. */
  audit_file: absoluteFile().optional(),
});

export type SocketOptions = z.output<typeof socketOptionsSchema>;
export type RolesOptions = z.output<typeof rolesOptionsSchema>;
export type LimitsOptions = z.output<typeof limitsOptionsSchema>;
export type LuksOptions = z.output<typeof luksOptionsSchema>;
export type LogOptions = z.output<typeof logOptionsSchema>;
