// Aggregate and adaptive modes: a striped packet the sender cannot send (every
// link's queue full, no key) is refused before the tunnel numbers it. A number
// given and then dropped would hold every later striped packet in the peer's
// reorder buffer until its bound, 100 ms to a second, then release them in a burst.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { createLogger } from '../../src/log.js';
import { CloseCode, forEachFrame, FrameType, readU64 } from '../../src/protocol/frame.js';
import { ADMITTED_SLACK_BYTES, type Link } from '../../src/core/link.js';
import type { KeyRing } from '../../src/secure/keypair.js';
import { FakeSocket, keyRingPair, testLink, testSession } from '../helpers/fake-socket.js';
import { FakeTun } from '../helpers/fake-tun.js';
import { numbered, packetNumber } from '../helpers/packets.js';

/**
 * Sends packets through a Tunnel's aggregate session on one link whose socket
 * pushes back until its queue (16 KiB) refuses, then drains it and sends one
 * more; the peer's session reads everything the socket took.
 */
function overflowOneLink(txKeys?: KeyRing, rxKeys?: KeyRing) {
  const tun = new FakeTun();
  const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
  t.start();
  try {
    const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }], txKeys);
    s.mode = 'aggregate';
    t.register(s);
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
    return { s, l, n, wire: Buffer.concat(sock.written), delivered, waiting };
  } finally {
    t.close();
  }
}

describe('data the sender cannot send is not numbered', () => {
  it('open mode: the numbers on the wire run without a gap, and the peer releases every packet at once', () => {
    const { s, l, n, wire, delivered, waiting } = overflowOneLink();
    const seqs: number[] = [];
    forEachFrame(wire, 1 << 20, (type, b, start) => {
      if (type === FrameType.Data) seqs.push(readU64(b, start));
    });
    // Sorted: a packet of a flow that has gone quiet is urgent and may pass queued bulk.
    seqs.sort((x, y) => x - y);
    const refused = l.stats.drops.queue_full;
    assert.equal(seqs.length + refused, n, 'each packet sent or counted refused');
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'numbers 1.. without a gap');
    assert.equal(s.stats.stripedPackets, seqs.length);
    assert.equal(waiting, 0, 'the peer holds nothing back');
    assert.equal(delivered.length, seqs.length, 'every packet sent was delivered');
    assert.equal(delivered[delivered.length - 1], n, 'the packet after the drain among them');
  });

  it('keyed: the same, the number chosen before the record is sealed', () => {
    const [a, b] = keyRingPair();
    const { s, l, n, delivered, waiting } = overflowOneLink(a, b);
    assert.ok(l.stats.drops.queue_full > 0);
    assert.equal(delivered.length + l.stats.drops.queue_full, n, 'each packet delivered or counted refused');
    assert.equal(s.stats.stripedPackets, delivered.length);
    assert.equal(waiting, 0, 'the peer holds nothing back');
    assert.equal(delivered[delivered.length - 1], n);
  });

  it('batches of several packets on two links of unequal rates: each queue within its bound (gathers go where their packets were admitted), the slow link not filled for the fast one, no gap', () => {
    const tun = new FakeTun();
    const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
    t.start();
    try {
      const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }]);
      s.mode = 'aggregate';
      t.register(s);
      const socks = [new FakeSocket(), new FakeSocket()];
      const Q = 256 * 1024;
      const links = socks.map((k, i) => testLink(k, i, Q));
      for (const l of links) s.attach(l);
      // Delivery rates (bytes per ms): 100 and 5 Mbit/s; neither socket takes more.
      const rate = (l: Link, bytesPerMs: number): void => void ((l as unknown as { rateCur: number }).rateCur = bytesPerMs);
      rate(links[0] as Link, 12_500);
      rate(links[1] as Link, 625);
      // No acknowledgement within a second is no stall here: the test may run slowly.
      for (const l of links) (l as unknown as { ackTimeMs: number }).ackTimeMs = 1e6;
      for (const k of socks) k.full = true;
      let n = 0;
      const batch = (): Buffer[] => Array.from({ length: 8 }, () => numbered(++n, '10.0.0.1', '10.0.0.2', 1400));
      for (let b = 0; b < 60; b++) tun.inject(batch());
      assert.equal(links[0]!.stats.stalls + links[1]!.stats.stalls, 0, 'no stall');
      const refused = links.reduce((x, l) => x + l.stats.drops.queue_full, 0);
      assert.ok(refused > 0, 'the queues filled and refused');
      for (const l of links) assert.ok(l.queueBytes <= Q + ADMITTED_SLACK_BYTES, `${l.name} within its bound: ${l.queueBytes}`);
      const [fast, slow] = links as [Link, Link];
      assert.ok(slow.eta(0) < 2 * fast.eta(0) + 20, `the slow link holds no more than its share: eta ${slow.eta(0).toFixed(0)} ms against ${fast.eta(0).toFixed(0)}`);
      assert.equal(s.stats.stripedPackets + refused, n, 'each packet striped or counted refused');
      for (const k of socks) {
        k.full = false;
        k.emit('drain');
      }
      tun.inject(batch()); // after the refusals: a number skipped for them would show as a gap
      const seqs: number[] = [];
      for (const k of socks) forEachFrame(Buffer.concat(k.written), 1 << 20, (type, buf, start) => void (type === FrameType.Data && seqs.push(readU64(buf, start))));
      seqs.sort((x, y) => x - y);
      assert.deepEqual(seqs, Array.from({ length: s.stats.stripedPackets }, (_, i) => i + 1), 'once drained, numbers 1.. without a gap');
    } finally {
      t.close();
    }
  });

  it('each record is placed where it is expected through first: a batch of offload packets spreads over two equal links', () => {
    const tun = new FakeTun('fake0', 16, 10);
    const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
    t.start();
    try {
      const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }]);
      s.mode = 'aggregate';
      t.register(s);
      const socks = [new FakeSocket(), new FakeSocket()];
      for (const [i, k] of socks.entries()) s.attach(testLink(k, i));
      // 8 packets of 40 KB (a zero virtio_net_hdr first): each more than a record, so a record of its own.
      tun.inject(Array.from({ length: 8 }, (_, i) => Buffer.concat([Buffer.alloc(10), numbered(i + 1, '10.0.0.1', '10.0.0.2', 40_000)])));
      const bytes = socks.map((k) => k.written.reduce((x, b) => x + b.length, 0));
      assert.ok(bytes.every((x) => x > 0), `both links carry some: ${bytes.join(', ')} bytes`);
    } finally {
      t.close();
    }
  });

  it('adaptive, keyed: a packet for every link read without a key is not numbered either', () => {
    const [a, b] = keyRingPair();
    const tun = new FakeTun();
    const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
    t.start();
    try {
      const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }], a);
      s.mode = 'adaptive';
      t.register(s);
      const sock = new FakeSocket();
      s.attach(testLink(sock, 0));
      const kept = [...(a as unknown as { byIndex: Map<number, unknown> }).byIndex.values()];
      a.clear();
      tun.inject([numbered(1, '10.0.0.1', '10.0.0.2', 100)]); // small: on every link, not striped
      assert.equal(s.stats.dropsNoKey, 1);
      assert.equal(s.takeSeq(), 1, 'the number was not used');
      assert.ok(kept.length > 0);
    } finally {
      t.close();
    }
    void b;
  });

  it('keyed without a key to seal with: refused and counted (dropsNoKey), not numbered', () => {
    const [a] = keyRingPair();
    const tun = new FakeTun();
    const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
    t.start();
    try {
      const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }], a);
      s.mode = 'aggregate';
      t.register(s);
      s.attach(testLink(new FakeSocket(), 0));
      a.clear();
      tun.inject([numbered(1, '10.0.0.1', '10.0.0.2', 1000)]);
      assert.equal(s.stats.dropsNoKey, 1);
      assert.equal(s.takeSeq(), 1, 'the number was not used');
    } finally {
      t.close();
    }
  });
});
