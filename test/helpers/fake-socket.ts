// A stand-in for a link's TCP socket: takes writes until told to push back,
// records them, and emits what a test tells it to.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { Link, type LinkHandler } from '../../src/core/link.js';
import { Session } from '../../src/core/session.js';
import { createLogger } from '../../src/log.js';
import { Keypair, KeyRing } from '../../src/secure/keypair.js';

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

const quiet = createLogger('error', 'client', { sink: () => {} });

/** A session with test options and a silent log; `keys`: keyed, else open mode. */
export function testSession(sink: (packets: Buffer[]) => void = () => {}, keys?: KeyRing): Session {
  return new Session(Buffer.alloc(16), Buffer.alloc(8), [], { eliminationTtlMs: 2000, eliminationWindowPackets: 131072, maxFrameBytes: 66000 }, sink, quiet, keys);
}

/** A link on `sock` whose timers never fire within a test; the session that attaches it brings it up. */
export function testLink(sock: FakeSocket, id = 0, queueMaxBytes = 1 << 20, keepaliveIntervalMs = 1e6): Link {
  return new Link(
    sock as unknown as Socket,
    { id, name: `l${id}`, maxFrameBytes: 66000, queueMaxBytes, queueMaxAgeMs: 1000, keepaliveIntervalMs, deadIntervalMs: 1e7 },
    { onFrame() {}, onChunkEnd() {}, onClose() {} },
    quiet,
  );
}

/** Two ends' key rings holding one keypair (ChaCha20-Poly1305, fresh keys): the first seals to the second, and back. */
export function keyRingPair(): [KeyRing, KeyRing] {
  const [k1, k2] = [randomBytes(32), randomBytes(32)];
  const a = new KeyRing();
  a.add(new Keypair(1, 2, 'chacha20-poly1305', k1, k2, true));
  const b = new KeyRing();
  b.add(new Keypair(2, 1, 'chacha20-poly1305', k2, k1, false));
  return [a, b];
}
