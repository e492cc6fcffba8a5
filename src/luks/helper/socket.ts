import { connect } from 'node:net';
import { streamTransport, type HelperTransport } from './transport.js';

/**
 * Reaches a helper that systemd runs apart from the daemon
 * (portcullis-helper.socket and .service): the daemon then never needs
 * root, not even to start. Each call makes one connection; the helper
 * serves each connection on its own thread, so a fresh connection (after a
 * helper restart, or when the client replaces one whose operations are
 * stuck) does not wait behind the old one. The helper decides who may
 * connect from the peer's credentials (--allow-user), not from this side.
 */
export function socketHelper(path: string): HelperTransport {
  const stream = connect({ path });
  // Requests written before the connection is made wait in the stream; a refused connection fails them (HelperGone).
  return streamTransport(stream, `portcullis-helper at ${path}`);
}
