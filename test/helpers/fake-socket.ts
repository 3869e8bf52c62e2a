// A stand-in for a link's TCP socket: takes writes until told to push back,
// records them, and emits what a test tells it to.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { Link, type LinkHandler } from '../../src/core/link.js';
import { createLogger } from '../../src/log.js';

/** A socket that takes writes until told to push back, and records them. */
export class FakeSocket extends EventEmitter {
  written: Buffer[] = [];
  full = false;
  destroyed = false;
  writable = true;
  remoteAddress = '10.0.1.1';
  remotePort = 1;
  localAddress = '10.0.1.2';
  localPort = 2;
  write(b: Buffer): boolean {
    this.written.push(b);
    return !this.full;
  }
  ended = false;
  end(b?: Buffer): void {
    if (b) this.written.push(b);
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

/** A link that is up on `sock`, with default timing and a silent log. */
export function upLink(sock: FakeSocket, opts: { deadIntervalMs?: number } = {}): Link {
  const handler: LinkHandler = { onFrame: () => {}, onChunkEnd: () => {}, onClose: () => {} };
  const l = new Link(
    sock as unknown as Socket,
    { id: 0, name: 'wan1', maxFrameBytes: 66_000, queueMaxBytes: 1 << 20, queueMaxAgeMs: 200, keepaliveIntervalMs: 1000, deadIntervalMs: opts.deadIntervalMs ?? 5000 },
    handler,
    createLogger('error', 'client', { sink: () => {} }),
  );
  l.state = 'up';
  return l;
}
