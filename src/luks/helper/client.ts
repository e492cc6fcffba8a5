import { luksError } from '../errors.js';
import { plainAllocator, type SecureAllocator } from '../../util/secure-memory.js';
import { decodeResponse, encodeRequest, opName, requestSize, Tag, type Fields, type Response } from './frame.js';
import { HelperGone, type HelperTransport } from './transport.js';

/**
 * The daemon's side of the privileged helper (docs/helper-protocol.md):
 * numbers requests, builds each frame in locked memory when it carries a
 * key and wipes it after, and answers every call within its timeout. An
 * operation the helper has not answered by then is counted stuck, as a
 * stuck command is, until its answer finally comes (a thread of the helper
 * stays in the kernel meanwhile; the others go on).
 */
export interface HelperClient {
  readonly where: string;
  /** The response, whatever its status; frame or transport failures throw. */
  call(op: number, fields: Fields, what: string, timeoutMs?: number): Promise<Response>;
  /** Operations in flight, and those past their timeout with no answer yet. */
  stats(): { inFlight: number; stuck: number; helperAlive: boolean };
  close(): void;
}

export interface HelperClientOptions {
  /** Gives a transport to a running helper, starting one if none is (the first call, or after the last one died). */
  connect: () => HelperTransport;
  /** Where frames that carry keys are built. @default plain memory */
  allocator?: SecureAllocator;
  /** Per operation. @default 120000 */
  timeoutMs?: number;
  /**
   * Stuck operations after which new ones go to a fresh helper (the old one
   * keeps its stuck threads, and answers them if the kernel ever lets go).
   * @default 4
   */
  replaceWhenStuck?: number;
}

const SECRET_TAGS = new Set<number>([Tag.KEY, Tag.NEW_KEY]);

export function helperClient(options: HelperClientOptions): HelperClient {
  const allocator = options.allocator ?? plainAllocator();
  const defaultTimeoutMs = options.timeoutMs ?? 120_000;
  let transport: HelperTransport | undefined;
  let nextId = 1;
  let inFlight = 0;
  let stuck = 0;

  const replaceWhenStuck = options.replaceWhenStuck ?? 4;
  /** Stuck operations on the helper now in use. */
  let stuckHere = 0;
  const current = (): HelperTransport => {
    if (transport === undefined || !transport.alive || stuckHere >= replaceWhenStuck) {
      transport = options.connect();
      stuckHere = 0;
    }
    return transport;
  };

  async function call(op: number, fields: Fields, what: string, timeoutMs = defaultTimeoutMs): Promise<Response> {
    const id = nextId;
    nextId = nextId >= 0xffffffff ? 1 : nextId + 1;
    const secret = fields.some(([tag]) => SECRET_TAGS.has(tag));
    const held = secret ? allocator.alloc(requestSize(fields)) : undefined;
    const frame = encodeRequest(held?.view() ?? Buffer.alloc(requestSize(fields)), op, id, fields);
    const t = current();
    inFlight++;
    let timer: NodeJS.Timeout | undefined;
    let late = false;
    const answer = t.exchange(frame, id);
    try {
      const body = await Promise.race([
        answer,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            late = true;
            stuck++;
            if (transport === t) stuckHere++;
            reject(
              luksError('E_CRYPTSETUP_TIMEOUT', `the privileged helper did not finish ${opName(op)} within ${timeoutMs} ms (${what}); it is still waiting in the kernel (check the device and dmesg)`, {
                details: { command: 'portcullis-helper', op: opName(op), timeoutMs, stuck: true },
              }),
            );
          }, timeoutMs);
        }),
      ]);
      const response = decodeResponse(body);
      if (response.id !== id) throw new HelperGone(`the privileged helper answered request ${response.id} for ${id}`);
      return response;
    } catch (err) {
      if (err instanceof HelperGone) {
        throw luksError('E_CRYPTSETUP_FAILED', `${err.message} while trying to ${what}; it is restarted for the next request`, { cause: err, details: { command: 'portcullis-helper', op: opName(op) } });
      }
      throw err;
    } finally {
      clearTimeout(timer);
      inFlight--;
      if (late) {
        const settled = (): void => {
          stuck--;
          if (transport === t) stuckHere--;
        };
        void answer.then(settled, settled);
      }
      else answer.catch(() => undefined);
      held?.wipe();
    }
  }

  return {
    get where() {
      return transport?.where ?? 'helper (not started)';
    },
    call,
    stats: () => ({ inFlight, stuck, helperAlive: transport?.alive ?? false }),
    close: () => transport?.close(),
  };
}
