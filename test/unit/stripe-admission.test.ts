// Aggregate and adaptive modes: a packet the sender cannot send (the link a
// striped one would go on cannot take it, no key) is refused before the tunnel
// numbers it. A number given and then dropped would hold every later striped
// packet in the peer's reorder buffer until its bound, 100 ms to a second, then
// release them in a burst.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { ADMITTED_SLACK_BYTES, type Link } from '../../src/core/link.js';
import type { Session } from '../../src/core/session.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { createLogger } from '../../src/log.js';
import { CloseCode, forEachFrame, FrameType, readU64 } from '../../src/protocol/frame.js';
import type { SchedulingMode } from '../../src/protocol/handshake.js';
import type { KeyRing } from '../../src/secure/keypair.js';
import { FakeSocket, keyRingPair, testLink, testSession } from '../helpers/fake-socket.js';
import { FakeTun } from '../helpers/fake-tun.js';
import { numbered, packetNumber } from '../helpers/packets.js';

/** A Tunnel on `tun` with one session (to 10.0.0.2) in `mode`; runs `f`, and closes the tunnel after. */
function withSession<T>(mode: SchedulingMode, keys: KeyRing | undefined, f: (tun: FakeTun, s: Session) => T, tun = new FakeTun()): T {
  const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
  t.start();
  try {
    const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }], keys);
    s.mode = mode;
    t.register(s);
    return f(tun, s);
  } finally {
    t.close();
  }
}

/**
 * The DATA frames' sequence numbers in what `socks` were given, sorted (a
 * packet of a flow gone quiet is urgent, and may pass queued bulk).
 */
function wireSeqs(socks: readonly FakeSocket[]): number[] {
  const seqs: number[] = [];
  for (const k of socks) {
    forEachFrame(Buffer.concat(k.written), 1 << 20, (type, buf, start) => {
      if (type === FrameType.Data) seqs.push(readU64(buf, start));
    });
  }
  return seqs.sort((x, y) => x - y);
}

/** 1, 2, .. n. */
function upTo(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

/**
 * Sends packets through an aggregate session on one link whose socket pushes
 * back until its queue (16 KiB) refuses, then drains it and sends one more;
 * the peer's session reads everything the socket took.
 */
function overflowOneLink(txKeys?: KeyRing, rxKeys?: KeyRing) {
  return withSession('aggregate', txKeys, (tun, s) => {
    const sock = new FakeSocket();
    const l = testLink(sock, 0, 16 * 1024);
    s.attach(l);
    sock.full = true;
    let n = 0;
    while (l.stats.drops.queue_full === 0 && n < 200) tun.inject([numbered(++n, '10.0.0.1', '10.0.0.2', 1000)]);
    assert.ok(l.stats.drops.queue_full > 0 && n < 200, 'the queue filled');
    sock.full = false;
    sock.emit('drain');
    tun.inject([numbered(++n, '10.0.0.1', '10.0.0.2', 1000)]);
    const delivered: number[] = [];
    const rx = testSession((ps) => ps.forEach((p) => delivered.push(packetNumber(p))), rxKeys);
    rx.mode = 'aggregate';
    const rsock = new FakeSocket();
    rx.attach(testLink(rsock, 0));
    rsock.emit('data', Buffer.concat(sock.written));
    const waiting = rx.reorder?.waiting;
    rx.close(CloseCode.Shutdown, 'test');
    return { striped: s.stats.stripedPackets, refused: l.stats.drops.queue_full, n, sock, delivered, waiting };
  });
}

describe('data the sender cannot send is not numbered', () => {
  it('open mode: the numbers on the wire run without a gap, and the peer releases every packet at once', () => {
    const { striped, refused, n, sock, delivered, waiting } = overflowOneLink();
    const seqs = wireSeqs([sock]);
    assert.equal(seqs.length + refused, n, 'each packet sent or counted refused');
    assert.deepEqual(seqs, upTo(seqs.length), 'numbers 1.. without a gap');
    assert.equal(striped, seqs.length);
    assert.equal(waiting, 0, 'the peer holds nothing back');
    assert.equal(delivered.length, seqs.length, 'every packet sent was delivered');
    assert.equal(delivered[delivered.length - 1], n, 'the packet after the drain among them');
  });

  it('keyed: the same, the number chosen before the record is sealed', () => {
    const [a, b] = keyRingPair();
    const { striped, refused, n, delivered, waiting } = overflowOneLink(a, b);
    assert.ok(refused > 0);
    assert.equal(delivered.length + refused, n, 'each packet delivered or counted refused');
    assert.equal(striped, delivered.length);
    assert.equal(waiting, 0, 'the peer holds nothing back');
    assert.equal(delivered[delivered.length - 1], n);
  });

  it('batches of several packets on two links of unequal rates: each queue within its bound, the slow link not filled for the fast one, no gap', () => {
    withSession('aggregate', undefined, (tun, s) => {
      const socks = [new FakeSocket(), new FakeSocket()];
      const Q = 256 * 1024;
      const [fast, slow] = socks.map((k, i) => testLink(k, i, Q)) as [Link, Link];
      for (const l of [fast, slow]) {
        s.attach(l);
        // No acknowledgement within a second is no stall here: the test may run slowly.
        l.ackTimeMs = 1e6;
      }
      // Delivery rates (bytes per ms): 100 and 5 Mbit/s; neither socket takes more.
      (fast as unknown as { rateCur: number }).rateCur = 12_500;
      (slow as unknown as { rateCur: number }).rateCur = 625;
      for (const k of socks) k.full = true;
      let n = 0;
      const batch = (): Buffer[] => Array.from({ length: 8 }, () => numbered(++n, '10.0.0.1', '10.0.0.2', 1400));
      for (let b = 0; b < 60; b++) tun.inject(batch());
      assert.equal(fast.stats.stalls + slow.stats.stalls, 0, 'no stall');
      const refused = fast.stats.drops.queue_full + slow.stats.drops.queue_full;
      assert.ok(refused > 0, 'the queues filled and refused');
      for (const l of [fast, slow]) assert.ok(l.queueBytes <= Q + ADMITTED_SLACK_BYTES, `${l.name} within its bound: ${l.queueBytes}`);
      assert.ok(slow.eta(0) < 2 * fast.eta(0) + 20, `the slow link holds no more than its share: eta ${slow.eta(0).toFixed(0)} ms against ${fast.eta(0).toFixed(0)}`);
      assert.equal(s.stats.stripedPackets + refused, n, 'each packet striped or counted refused');
      for (const k of socks) {
        k.full = false;
        k.emit('drain');
      }
      tun.inject(batch()); // after the refusals: a number skipped for them would show as a gap
      assert.deepEqual(wireSeqs(socks), upTo(s.stats.stripedPackets), 'once drained, numbers 1.. without a gap');
    });
  });

  it('each record is placed where it is expected through first: a batch of offload packets spreads over two equal links', () => {
    withSession(
      'aggregate',
      undefined,
      (tun, s) => {
        const socks = [new FakeSocket(), new FakeSocket()];
        for (const [i, k] of socks.entries()) s.attach(testLink(k, i));
        // 8 packets of 40 KB (a zero virtio_net_hdr first): each more than a record, so a record of its own.
        tun.inject(Array.from({ length: 8 }, (_, i) => Buffer.concat([Buffer.alloc(10), numbered(i + 1, '10.0.0.1', '10.0.0.2', 40_000)])));
        const bytes = socks.map((k) => k.written.reduce((x, b) => x + b.length, 0));
        assert.ok(bytes.every((x) => x > 0), `both links carry some: ${bytes.join(', ')} bytes`);
      },
      new FakeTun('fake0', 16, 10),
    );
  });

  for (const [mode, size, what] of [
    ['aggregate', 1000, 'striped'],
    ['adaptive', 100, 'for every link (adaptive, small)'],
  ] as const) {
    it(`keyed without a key to seal with: a packet ${what} is refused and counted (dropsNoKey), not numbered`, () => {
      const [a] = keyRingPair();
      withSession(mode, a, (tun, s) => {
        s.attach(testLink(new FakeSocket(), 0));
        a.clear();
        tun.inject([numbered(1, '10.0.0.1', '10.0.0.2', size)]);
        assert.equal(s.stats.dropsNoKey, 1);
        assert.equal(s.takeSeq(), 1, 'the number was not used');
      });
    });
  }
});
