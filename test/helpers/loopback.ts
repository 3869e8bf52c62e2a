// A TCP connection over loopback and a Link on one end of it, for the tests
// that need a real socket (the addon's send and read paths).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Link, type LinkHandler } from '../../src/core/link.js';
import { createLogger } from '../../src/log.js';

/** A connected pair: `a` dialled, `b` accepted (paused if `pauseOnConnect`: it reads nothing until resumed). */
export function socketPair(pauseOnConnect = false): Promise<{ server: Server; a: Socket; b: Socket }> {
  return new Promise((resolve) => {
    const server = createServer({ pauseOnConnect }, (b) => resolve({ server, a, b }));
    let a: Socket;
    server.listen(0, '127.0.0.1', () => {
      a = connect((server.address() as { port: number }).port, '127.0.0.1');
    });
  });
}

const ignore: LinkHandler = { onFrame: () => {}, onChunkEnd: () => {}, onClose: () => {} };

/** A link on `socket`, up, with long timers and a queue of `queueMaxBytes`. */
export function upLink(socket: Socket, handler: LinkHandler = ignore, queueMaxBytes = 1 << 20): Link {
  const l = new Link(
    socket,
    { id: 0, name: 'wan1', maxFrameBytes: 66_000, queueMaxBytes, queueMaxAgeMs: 60_000, keepaliveIntervalMs: 60_000, deadIntervalMs: 60_000 },
    handler,
    createLogger('error', 'client', { sink: () => {} }),
  );
  l.state = 'up';
  return l;
}
