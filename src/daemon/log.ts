import { chmodSync, closeSync, openSync, writeSync } from 'node:fs';
import winston from 'winston';
import type TransportStream from 'winston-transport';
import type { LogOptions } from '../config/daemon-options.js';
import { jsonLine, textLine, type LineFormat, type LogFields } from './log-line.js';

/**
 * The daemon's logs, through winston: its logger, levels and transports.
 * Library layers never log; the daemon logs once per outcome. Secrets are
 * redacted by construction: the logger's one format makes the finished line
 * (log-line.ts) and every entry passes its filter, which drops byte arrays
 * and any field whose name says secret, whatever the caller handed in, so a
 * careless field can never carry a key out.
 *
 * Kept cheap: the caller's fields ride on the info object under a symbol
 * (logger.log(info), winston's fast path: no copy into the info, no splat),
 * a level below the logger's is dropped before the format runs (winston
 * itself would format it and let the transport drop it), the transports
 * carry no format of their own, and each hands the finished line on in its
 * log(), before the call returns: the audit file's with write(2), so a crash
 * cannot lose the record of a key access.
 */
export { redact, type LogFields } from './log-line.js';

export interface Logger {
  error(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  debug(event: string, fields?: LogFields): void;
  /** One line per key access, to the audit stream. */
  audit(event: string, fields: LogFields): void;
  setLevel(level: LogOptions['level']): void;
  close(): Promise<void>;
}

/** The caller's fields on a winston info; a symbol, so no field can overwrite winston's level or message. */
const FIELDS = Symbol('portcullis.log.fields');
/** triple-beam's MESSAGE: the finished line that winston transports write. */
const MESSAGE = Symbol.for('message');

interface Entry {
  level: string;
  message: string;
  [FIELDS]: LogFields;
  [MESSAGE]?: string;
}

function lineFormat(line: LineFormat): winston.Logform.Format {
  return winston.format((info) => {
    const entry = info as unknown as Entry;
    entry[MESSAGE] = line(entry.level, entry.message, entry[FIELDS]);
    return info;
  })();
}

// winston's typings name the runtime's winston.Transport (winston-transport's class) `transport`.
const Transport = (winston as unknown as { Transport: typeof TransportStream }).Transport;

/**
 * A transport whose log() has written the line when it returns. Telling the
 * transport's stream the write finished synchronously (as winston's Logger
 * does for its own transform) lets it finish in the call instead of on a
 * process.nextTick per line: 700 ns of the 800 ns winston added per line.
 */
abstract class SyncLines extends Transport {
  protected written(next: () => void): void {
    (this as unknown as { _writableState: { sync: boolean } })._writableState.sync = false;
    next();
  }
}

/** Hands each line to the stream in the call (stderr: written at once to a file, terminal or journald's socket). */
class StreamLines extends SyncLines {
  constructor(private readonly stream: NodeJS.WritableStream) {
    super();
  }

  override log(info: Entry, next: () => void): void {
    this.stream.write(info[MESSAGE] ?? '');
    this.written(next);
  }
}

/** Appends each line to an open file with write(2) before returning. */
class FileLines extends SyncLines {
  /** A failed write, kept for the caller: thrown out of log() it would wedge winston's streams, every later line buffered unwritten. */
  failure: unknown = undefined;

  constructor(readonly fd: number) {
    super();
  }

  override log(info: Entry, next: () => void): void {
    try {
      writeSync(this.fd, info[MESSAGE] ?? '');
    } catch (err) {
      this.failure = err;
    }
    this.written(next);
  }
}

/** The winston logger behind the main stream: a transport added to it gets every line at or above the level, finished and redacted. */
export type WinstonBacked = Logger & { readonly winston: winston.Logger };

/** Logs to stderr (journald captures it); the audit stream to its own 0600 file when configured. */
export function createLogger(options: LogOptions, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr): WinstonBacked {
  const json = options.format === 'json' || (options.format === 'auto' && stream.isTTY !== true);
  const format = lineFormat(json ? jsonLine : textLine);
  const main = winston.createLogger({ level: options.level, format, transports: [new StreamLines(stream)] });
  // Audit lines are written whatever the main level: with no audit file, to the main stream through a logger of their own.
  const auditToStream = winston.createLogger({ level: 'info', format, transports: [new StreamLines(stream)] });
  let audit = auditToStream;
  let auditFile: FileLines | undefined;
  if (options.audit_file !== undefined) {
    // Created 0600 before the first line: audit lines name projects and key ids.
    auditFile = new FileLines(openSync(options.audit_file, 'a', 0o600));
    chmodSync(options.audit_file, 0o600);
    // The audit file is always JSON.
    audit = winston.createLogger({ level: 'info', format: lineFormat(jsonLine), transports: [auditFile] });
  }
  const at = (level: string) => (event: string, fields: LogFields = {}) => {
    // winston's own levels and level; its isLevelEnabled() costs 200 ns a call, this compare nothing.
    if (main.levels[level]! <= main.levels[main.level]!) main.log({ level, message: event, [FIELDS]: fields } as Entry);
  };
  return {
    winston: main,
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    audit(event, fields) {
      // Written before the key is used, so a crash cannot lose the record of an access; a failed write fails the access.
      audit.log({ level: 'info', message: event, [FIELDS]: { audit: true, ...fields } } as Entry);
      const failure = auditFile?.failure;
      if (failure !== undefined && auditFile !== undefined) {
        auditFile.failure = undefined;
        throw failure;
      }
    },
    setLevel(level) {
      main.level = level;
    },
    async close() {
      if (auditFile !== undefined) {
        closeSync(auditFile.fd);
        auditFile = undefined;
        audit = auditToStream;
      }
      // Lines already handed to the stream are flushed by it; wait for what is buffered to be taken.
      await new Promise<void>((resolve) => {
        if (stream.write('')) resolve();
        else stream.once('drain', () => resolve());
      });
    },
  };
}
