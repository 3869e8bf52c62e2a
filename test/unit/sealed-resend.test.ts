// Aggregate and adaptive modes with keys: a stalled link's striped records are
// sent again on the others sealed anew, so a resend more than a replay window of
// records later is not refused as too old (which would lose it, its bytes
// acknowledged all the same).
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { SESSION_RETAIN_MAX_BYTES } from '../../src/core/link.js';
import { RESEND_BURST_BYTES, type Session } from '../../src/core/session.js';
import type { TokenBucket } from '../../src/token-bucket.js';
import { CloseCode, DATA_IN_ORDER, encodeData } from '../../src/protocol/frame.js';
import { FakeSocket, keyRingPair, testLink, testSession } from '../helpers/fake-socket.js';
import { numbered, packetNumber } from '../helpers/packets.js';

const QUEUE_MAX = 64 * 1024;

/** Packets 0..n-1 of 60 bytes, a record each, striped by `tx` (in-order flag set). */
function stripeNumbered(tx: Session, n: number, nowMs: number): void {
  for (let i = 0; i < n; i++) {
    const f = encodeData(i + 1, numbered(i, '10.0.0.2', '10.0.0.1', 60));
    f[6] = DATA_IN_ORDER;
    tx.sendFrames(f, 1, nowMs, false, false, true);
  }
}

/** A keyed sender and receiver in aggregate mode, two links each, on fake sockets (carried by the test). */
function keyedPair() {
  const [txKeys, rxKeys] = keyRingPair();
  const tx = testSession(() => {}, txKeys);
  tx.mode = 'aggregate';
  const delivered: number[] = [];
  const rx = testSession((ps) => ps.forEach((p) => delivered.push(packetNumber(p))), rxKeys);
  rx.mode = 'aggregate';
  const [sa, sb, ra, rb] = [new FakeSocket(), new FakeSocket(), new FakeSocket(), new FakeSocket()];
  const [a, b] = [testLink(sa, 0, QUEUE_MAX), testLink(sb, 1, QUEUE_MAX)];
  tx.attach(a);
  tx.attach(b);
  rx.attach(testLink(ra, 0, QUEUE_MAX));
  rx.attach(testLink(rb, 1, QUEUE_MAX));
  return { tx, rx, a, b, sa, sb, ra, rb, delivered };
}

describe('striped records sent again', () => {
  it('aggregate, sealed: records a stalled link gives back still arrive though more than a replay window of records was sealed since', () => {
    const { tx, rx, a, b, sa, sb, ra, rb, delivered } = keyedPair();
    // 12,000 small packets, one TUN read (one record) each, striped over both links within 1 ms.
    const t0 = performance.now();
    const n = 12_000;
    stripeNumbered(tx, n, t0);
    // Link 1's bytes reach the peer, which acknowledges them; link 0's far end reads nothing (yet).
    let fed = 0;
    const feedB = (): void => {
      for (; fed < sb.written.length; fed++) rb.emit('data', sb.written[fed]);
    };
    feedB();
    b.onAck(sb.written.reduce((x, w) => x + w.length, 0), t0 + 1);
    assert.ok(a.unackedBytes > 0 && b.unackedBytes === 0);
    // 200 ms on, link 0 is stalled: what it holds goes on link 1, and gets there.
    tx.tick(t0 + 200);
    assert.ok(tx.stats.resentPackets > 0, 'link 0 gave its records back');
    feedB();
    // Link 0's far end reads again at last: its copies arrive too.
    for (const w of sa.written) ra.emit('data', w);
    const out: Buffer[] = [];
    rx.reorder!.expire(performance.now() + 10_000, out);
    for (const p of out) delivered.push(packetNumber(p));
    const got = new Set(delivered);
    tx.close(CloseCode.Shutdown, 'done');
    rx.close(CloseCode.Shutdown, 'done');
    assert.equal(delivered.length, got.size, 'nothing delivered twice');
    assert.equal(got.size, n, `${n - got.size} packets lost (receiver's records too_old: ${rx.stats.records.too_old})`);
  });

  it('aggregate, sealed: records 60,000 behind the highest on the other link lose nothing (the replay window is 65,504 records, not WireGuard\'s 8,160)', () => {
    const { tx, rx, sa, sb, ra, rb, delivered } = keyedPair();
    // 60,000 small packets, one record each, striped over both links; the receiver reads all of
    // link 1 first, then link 0: link 0's first records come up to 60,000 counters behind the
    // highest accepted (under 65,504); no stall, no resend.
    const t0 = performance.now();
    const n = 60_000;
    stripeNumbered(tx, n, t0);
    assert.ok(sa.written.length > n / 4 && sb.written.length > n / 4, `both links carry a share (${sa.written.length} / ${sb.written.length} writes)`);
    for (const w of sb.written) rb.emit('data', w);
    for (const w of sa.written) ra.emit('data', w);
    const out: Buffer[] = [];
    rx.reorder!.expire(performance.now() + 10_000, out);
    for (const p of out) delivered.push(packetNumber(p));
    tx.close(CloseCode.Shutdown, 'done');
    rx.close(CloseCode.Shutdown, 'done');
    assert.equal(tx.stats.resentPackets, 0, 'nothing was sent again');
    assert.equal(rx.stats.records.too_old, 0, 'no record refused as too old');
    assert.equal(new Set(delivered).size, n, `${n - new Set(delivered).size} packets lost`);
    assert.equal(delivered.length, n, 'nothing delivered twice');
  });
});

describe('sealing given-back data again is bounded', () => {
  it('one give-back of all a session holds is sealed again whole; links replaced over and over past RESEND_BURST_BYTES wait for the bound, and none is lost', () => {
    const { tx, a, b } = keyedPair();
    const now = performance.now();
    // 10 MiB striped over both links, 16 KiB packets, a record each.
    const packet = 16 * 1024;
    const n = 640;
    for (let i = 0; i < n; i++) {
      const f = encodeData(i + 1, numbered(i, '10.0.0.2', '10.0.0.1', packet));
      f[6] = DATA_IN_ORDER;
      tx.sendFrames(f, 1, now, false, false, true);
    }
    assert.ok(a.unackedBytes > 0 && b.unackedBytes > 0, 'both links hold some');
    const held = tx.retainBudget.bytes;
    // Round 1: link 0 dies; what it held (about 5 MiB) goes on link 1.
    a.close(CloseCode.Shutdown, 'test');
    const first = tx.stats.resentPackets;
    assert.ok(first > 0, 'given back and sent again');
    assert.equal(tx.stats.resendDeferred, 0, 'a single give-back is never held back');
    assert.ok(Math.abs(tx.retainBudget.bytes - held) < packet * 4, `counted once, where it went (${tx.retainBudget.bytes} against ${held} before)`);
    // Then the session's links are replaced again and again, each new one taking all the data.
    let holder = b;
    for (let round = 0; round < 6; round++) {
      const next = testLink(new FakeSocket(), holder.id === 0 ? 1 : 0, 64 << 20);
      tx.attach(next);
      holder.close(CloseCode.Shutdown, 'test');
      holder = next;
    }
    assert.ok(tx.stats.resendDeferred > 0, 'past the burst what is given back waits');
    const resealed = tx.stats.resentPackets - first;
    // 32 MiB of 16 KiB records, and what refilled meanwhile (8 MiB/s): at most about 2,100 + a few.
    assert.ok(resealed * packet <= RESEND_BURST_BYTES + 2 * 1024 * 1024, `${resealed} records sealed again after the first give-back`);
    assert.ok(tx.retainBudget.bytes <= SESSION_RETAIN_MAX_BYTES + packet, `what waits is counted in the session's budget (${tx.retainBudget.bytes})`);
    // As the bound refills, the session's timer sends what waited: all of it is on the last link.
    for (let t = 1; t <= 10; t++) tx.tick(performance.now() + t * 1000);
    assert.equal(holder.unackedBytes > 0, true);
    const onLast = (holder.socket as unknown as FakeSocket).written.length;
    assert.ok(onLast >= n, `every packet went on the last link in the end (${onLast} writes)`);
    tx.close(CloseCode.Shutdown, 'done');
    assert.equal(tx.retainBudget.bytes, 0, 'nothing counted after the close');
  });
});

describe('given-back data that cannot go at once', () => {
  it('the only link dies holding striped records: they wait, and go on the next connection when it is up — none lost', () => {
    const { tx, rx, a, b, rb, delivered } = keyedPair();
    b.close(CloseCode.Shutdown, 'test'); // link 1 down first: link 0 is the only one
    const t0 = performance.now();
    stripeNumbered(tx, 50, t0);
    a.close(CloseCode.Shutdown, 'outage'); // and then link 0: nothing is up
    assert.equal(tx.stats.resendDeferred, 50, 'all 50 wait');
    assert.equal(tx.stats.dropsNoLink, 0, 'none dropped');
    tx.tick(t0 + 100);
    assert.equal(tx.stats.resentPackets, 0, 'still nothing to send them on');
    // Link 1 is redialled.
    const sock = new FakeSocket();
    tx.attach(testLink(sock, 1, QUEUE_MAX));
    tx.tick(t0 + 200);
    assert.equal(tx.stats.resentPackets, 50, 'sent on the new connection');
    for (const w of sock.written) rb.emit('data', w);
    const out: Buffer[] = [];
    rx.reorder!.expire(performance.now() + 10_000, out);
    for (const p of out) delivered.push(packetNumber(p));
    assert.deepEqual([...new Set(delivered)].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i), 'every packet arrived');
    assert.equal(tx.retainBudget.bytes > 0, true, 'kept by the new link until acknowledged');
    tx.close(CloseCode.Shutdown, 'done');
    rx.close(CloseCode.Shutdown, 'done');
  });

  it('a stall give-back that waited for the reseal bound and then got through on its own link is not sent again', () => {
    const { tx, a, b, sb } = keyedPair();
    const t0 = performance.now();
    // The bound spent (by earlier give-backs), as of the stall below.
    (tx as unknown as { reseal: TokenBucket }).reseal.take(RESEND_BURST_BYTES, t0 + 200);
    stripeNumbered(tx, 40, t0);
    b.onAck(sb.written.reduce((x, w) => x + w.length, 0), t0 + 1);
    tx.tick(t0 + 200); // link 0 stalled: its records are given back, and wait for the bound
    assert.ok(tx.stats.resendDeferred > 0, 'they wait');
    a.onAck(a.unackedBytes + a.ackedBytes, t0 + 201); // link 0 got through after all
    tx.tick(t0 + 10_000);
    assert.equal(tx.stats.resentPackets, 0, 'nothing sent twice');
    assert.equal(tx.retainBudget.bytes, 0, 'and nothing left counted');
    tx.close(CloseCode.Shutdown, 'done');
  });
});

describe('given-back data and the one link left', () => {
  it('records taken from a stalled link\'s queue go back on it when it is the only link left, and nothing waits for ever', () => {
    const { tx, a, b, sa, sb } = keyedPair();
    const t0 = performance.now();
    (tx as unknown as { reseal: TokenBucket }).reseal.take(RESEND_BURST_BYTES, t0 + 200);
    sa.full = true; // link 0's socket pushes back: records wait in its queue
    stripeNumbered(tx, 60, t0);
    b.onAck(sb.written.reduce((x, w) => x + w.length, 0), t0 + 1);
    tx.tick(t0 + 200); // link 0 stalled: written and queued records given back, waiting for the bound
    const waited = tx.stats.resendDeferred;
    assert.ok(waited > 0, 'they wait');
    b.close(CloseCode.Shutdown, 'test'); // link 1 gone for good
    sa.full = false;
    sa.emit('drain');
    a.onAck(a.unackedBytes + a.ackedBytes, t0 + 300); // link 0 got through what it had written
    for (let k = 1; k <= 20; k++) tx.tick(t0 + 300 + k * 1000);
    const left = (tx as unknown as { deferred: unknown[] }).deferred.length;
    assert.equal(left, 0, `nothing left waiting (${left})`);
    tx.close(CloseCode.Shutdown, 'done');
    assert.equal(tx.retainBudget.bytes, 0);
  });
});
