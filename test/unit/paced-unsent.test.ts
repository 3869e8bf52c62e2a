// A paced link (upload_mbit / download_mbit) keeps the data its socket holds
// unsent under its bound. TCP_NOTSENT_LOWAT alone does not: the kernel checks
// it only when it starts a new segment buffer, and each write may fill the
// last one up to 64 KiB, which a ping written behind it waits for (58 ms at
// 9 Mbit/s). Real TCP over loopback, paced by the kernel; needs the built addon.
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import type { TimingConfig } from '../../src/config/types.js';
import { Link, UNSENT_WAIT_MAX_MS, type LinkHandler } from '../../src/core/link.js';
import { paceLink, pacedNotsentLowat } from '../../src/core/socket-options.js';
import { writeDataHeader } from '../../src/protocol/frame.js';
import { createLogger } from '../../src/log.js';
import { loadAddon } from '../../src/tun/loader.js';
import { until } from '../helpers/harness.js';

const KBIT = 8000;
const FRAMES = 250;
const PAYLOAD = 1400;

function pair(): Promise<{ server: Server; a: Socket; b: Socket }> {
  return new Promise((resolve) => {
    const server = createServer((b) => resolve({ server, a, b }));
    let a: Socket;
    server.listen(0, '127.0.0.1', () => {
      a = connect((server.address() as { port: number }).port, '127.0.0.1');
    });
  });
}

function frame(seq: number): Buffer {
  const f = Buffer.alloc(16 + PAYLOAD, seq & 0xff);
  writeDataHeader(f, 0, seq, PAYLOAD);
  return f;
}

/** An up link over `socket`, paced at `kbit` as paceLink does it (its unsent cap set), with room for every frame in its queue. */
function pacedLink(socket: Socket, kbit: number): Link {
  const log = createLogger('error', 'client', { sink: () => {} });
  const handler: LinkHandler = { onFrame: () => {}, onChunkEnd: () => {}, onClose: () => {} };
  const link = new Link(
    socket,
    { id: 0, name: 'wan1', maxFrameBytes: 66_000, queueMaxBytes: 1 << 26, queueMaxAgeMs: 60_000, keepaliveIntervalMs: 60_000, deadIntervalMs: 60_000 },
    handler,
    log,
  );
  link.state = 'up';
  paceLink(link, kbit, { socketNotsentLowatBytes: 131_072 } as TimingConfig, log);
  assert.equal(link.paceKbit, kbit);
  return link;
}

/** Sends FRAMES frames on a link paced at KBIT (its unsent cap as paceLink sets it, or none); the most the socket held unsent, and what arrived. */
async function run(capped: boolean): Promise<{ maxUnsent: number; cap: number; seqs: number[]; bad: number }> {
  const p = await pair();
  const link = pacedLink(p.a, KBIT);
  const cap = link.unsentCap as number;
  if (!capped) link.unsentCap = undefined;
  const fd = (p.a as unknown as { _handle: { fd: number } })._handle.fd;
  const unsent = loadAddon().unsentBytes as (fd: number) => number;
  let maxUnsent = 0;
  const sampler = setInterval(() => {
    maxUnsent = Math.max(maxUnsent, unsent(fd));
  }, 1);
  const chunks: Buffer[] = [];
  let got = 0;
  p.b.on('data', (c: Buffer) => {
    chunks.push(c);
    got += c.length;
  });
  try {
    // Bulk data arriving faster than the link's rate, as from a TUN: in bursts of 10 frames.
    for (let seq = 1; seq <= FRAMES; seq += 10) {
      for (let k = seq; k < seq + 10; k++) link.sendData(frame(k), 1, performance.now());
      maxUnsent = Math.max(maxUnsent, unsent(fd));
      await new Promise((r) => setImmediate(r));
    }
    await until(() => got === FRAMES * (16 + PAYLOAD), 'every frame delivered', 10_000);
  } finally {
    clearInterval(sampler);
    link.destroy('test over');
    p.b.destroy();
    p.server.close();
  }
  const all = Buffer.concat(chunks);
  const seqs: number[] = [];
  let bad = 0;
  for (let off = 0; off < all.length; off += 16 + PAYLOAD) {
    const seq = all.readUInt32BE(off + 12); // the low half of the u64 sequence number
    seqs.push(seq);
    for (let i = off + 16; i < off + 16 + PAYLOAD; i++) if (all[i] !== (seq & 0xff)) bad++;
  }
  return { maxUnsent, cap, seqs, bad };
}

describe('paced link: unsent data bounded', () => {
  it('the socket never holds much more than its cap unsent; every frame arrives, in order', async () => {
    assert.equal(typeof loadAddon().unsentBytes, 'function');
    const r = await run(true);
    assert.equal(r.cap, pacedNotsentLowat(KBIT, 131_072));
    // At most the cap plus the rest of the frame a write cut (it goes through Node's writer).
    assert.ok(r.maxUnsent <= r.cap + 2 * (16 + PAYLOAD), `unsent up to ${r.maxUnsent} bytes, cap ${r.cap}`);
    assert.equal(r.bad, 0);
    assert.deepEqual(r.seqs, Array.from({ length: FRAMES }, (_, i) => i + 1));
  });

  it('a link waiting for its socket while Node\'s writer still holds bytes resumes once they are gone', async () => {
    // The state a cwnd-limited WAN link reaches (its send buffer full of data in flight): Node's
    // writer holds the rest of a cut frame, which it flushes with no 'drain' (its write was not
    // refused), while the link waits for the socket's unsent data to fall. Here the receiver stops
    // reading (the unsent data grows past the bound) and Node's writer is made to report bytes.
    const p = await pair();
    const link = pacedLink(p.a, 200_000);
    let heldByWriter = 0;
    const realLength = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Object.getPrototypeOf(p.a)), 'writableLength');
    Object.defineProperty(p.a, 'writableLength', { configurable: true, get: () => heldByWriter || (realLength?.get?.call(p.a) as number) });
    let got = 0;
    p.b.on('data', (c: Buffer) => {
      got += c.length;
    });
    p.b.pause();
    let sent = 0;
    try {
      for (let seq = 1; seq <= 2000; seq++) {
        const f = frame(seq);
        sent += f.length;
        link.sendData(f, 1, performance.now());
      }
      const fd = (p.a as unknown as { _handle: { fd: number } })._handle.fd;
      await until(() => ((loadAddon().unsentBytes as (fd: number) => number)(fd)) >= (link.unsentCap as number), 'the socket past its bound', 5000);
      heldByWriter = 1400; // the writer "holds" bytes while the link's wait runs out
      await new Promise((r) => setTimeout(r, 100));
      heldByWriter = 0; // and is done with them, with no 'drain'
      p.b.resume();
      await until(() => got === sent, `all ${sent} bytes delivered (got ${got})`, 5000);
    } finally {
      link.destroy('test over');
      p.b.destroy();
      p.server.close();
    }
  });

  it('without the cap, TCP_NOTSENT_LOWAT alone lets the socket hold far more (what the cap is for)', async () => {
    const r = await run(false);
    assert.ok(r.maxUnsent > 4 * r.cap, `unsent up to ${r.maxUnsent} bytes against a lowat of ${r.cap}`);
    assert.deepEqual(r.seqs, Array.from({ length: FRAMES }, (_, i) => i + 1));
  });

  it('a paced link whose peer stops reading looks at its socket less and less often, not every millisecond', async () => {
    const p = await pair();
    const link = pacedLink(p.a, KBIT);
    p.b.pause();
    let looks = 0;
    const inner = link as unknown as { unsentRoom: (cap: number) => number };
    const real = inner.unsentRoom.bind(link);
    inner.unsentRoom = (cap: number) => {
      looks++;
      return real(cap);
    };
    try {
      for (let seq = 1; seq <= 20_000; seq++) link.sendData(frame(seq), 1, performance.now());
      await new Promise((r) => setTimeout(r, 2500)); // the socket's buffers fill; then nothing moves
      const before = looks;
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(looks - before <= 60, `${looks - before} looks in a second at a socket that sends nothing (at most one per ${UNSENT_WAIT_MAX_MS} ms)`);
      p.b.resume();
      const sent = link.stats.txPackets;
      await until(() => link.stats.txPackets > sent + 100, 'it writes again once the peer reads', 3000);
    } finally {
      link.destroy('over');
      p.b.destroy();
      p.server.close();
    }
  });

  it('no queue-delay sample for data that waits at a full paced socket (only for data that leaves)', async () => {
    const p = await pair();
    const link = pacedLink(p.a, KBIT);
    (link as unknown as { unsentRoom: () => number }).unsentRoom = () => 0; // the socket holds its cap unsent, and keeps it
    try {
      link.sendData(frame(1), 1, performance.now());
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(link.stats.txPackets, 0, 'nothing left');
      assert.equal(link.stats.queueDelayMaxMs, 0, 'so no delay was recorded');
    } finally {
      link.destroy('over');
      p.b.destroy();
      p.server.close();
    }
  });
});
