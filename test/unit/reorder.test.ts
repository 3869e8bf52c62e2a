// The receive side of aggregate and adaptive modes: in-order release, bounded
// in time and memory; and the send side's ACK accounting on a link.
import assert from 'node:assert/strict';
import { CloseCode } from '../../src/protocol/frame.js';
import { describe, it } from 'node:test';
import { performance } from 'node:perf_hooks';
import {
  REORDER_MAX_BOUND_MS,
  REORDER_MAX_PACKETS,
  REORDER_MIN_BOUND_MS,
  REORDER_START_BOUND_MS,
  ReorderBuffer,
} from '../../src/core/reorder.js';
import { RETAIN_MAX_BYTES, STALL_MIN_MS, type Link } from '../../src/core/link.js';
import { DEFERRED_MAX_AGE_MS } from '../../src/core/session.js';
import { encodeAck, FrameType } from '../../src/protocol/frame.js';
import { ProtocolError } from '../../src/errors.js';
import { FakeSocket, testLink, testSession, upLink } from '../helpers/fake-socket.js';

const pkt = (seq: number): Buffer => Buffer.from(`p${seq}`);
const seqs = (out: Buffer[]): number[] => out.map((b) => Number(b.toString().slice(1)));

describe('reorder buffer', () => {
  it('releases in sequence order whatever the arrival order, each packet once', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    const order = [1, 3, 2, 6, 5, 4, 7, 9, 8, 10];
    for (const s of order) r.push(s, pkt(s), 0, out);
    assert.deepEqual(seqs(out), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'released in order');
    assert.equal(r.waiting, 0, 'nothing left waiting');
    assert.equal(r.stats.releasedPast, 0, 'no gap given up');
    assert.equal(r.stats.waited, 4, 'packets 3, 6, 5 and 9 had to wait');
  });

  it('numbers a ring apart: held packets and marks inside the skipped range come out in order, the gaps are counted', () => {
    // A peer may skip numbers; one that jumps by the ring's length each time makes every packet give up a
    // whole ring (the jump tests 32 slots at a time). What was held or marked in between still comes out, in order.
    // (The same figures as the slot-by-slot walk this replaced gave.)
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    const N = REORDER_MAX_PACKETS;
    r.push(1, pkt(1), 0, out);
    r.push(40, pkt(40), 0, out); // waits for 2..39
    r.mark(70, 0, out); // released by the caller (sent on every link)
    r.push(N - 1, pkt(N - 1), 0, out);
    r.push(N + 5, pkt(N + 5), 0, out); // beyond the ring: 2..5 given up to make room
    assert.deepEqual(seqs(out), [1]);
    assert.equal(r.waiting, 3);
    assert.equal(r.stats.releasedPast, 4);
    r.push(2 * N + 50, pkt(2 * N + 50), 0, out); // everything below N + 51 goes, held ones in order
    assert.deepEqual(seqs(out), [1, 40, N - 1, N + 5]);
    assert.equal(r.waiting, 1);
    assert.equal(r.stats.releasedPast, 8237);
    r.push(3 * N + 1, pkt(3 * N + 1), 0, out);
    assert.equal(r.waiting, 2);
    assert.equal(r.stats.releasedPast, 16380);
    for (let k = 1; k <= 64; k++) r.push(3 * N + 1 + k * N, pkt(3 * N + 1 + k * N), 0, out);
    assert.equal(out.length, 69, 'each jump releases what it passes');
    assert.equal(r.waiting, 1);
    assert.equal(r.stats.releasedPast, 540603);
    r.expire(REORDER_MAX_BOUND_MS, out);
    assert.equal(r.waiting, 0, 'the last one is released when its wait ends');
    assert.equal(seqs(out).at(-1), 3 * N + 1 + 64 * N);
    assert.equal(r.stats.releasedPast, 548794);
    assert.deepEqual(seqs(out), [...seqs(out)].sort((x, y) => x - y), 'in order throughout');
  });

  it('a packet sent on every link (mark) is released by the caller and holds nothing up', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    r.push(1, pkt(1), 0, out);
    r.push(3, pkt(3), 0, out);
    assert.deepEqual(seqs(out), [1], '3 waits for 2');
    r.mark(2, 0, out);
    assert.deepEqual(seqs(out), [1, 3], 'once 2 is released elsewhere, 3 follows');
    r.mark(5, 0, out);
    r.push(4, pkt(4), 0, out);
    r.push(6, pkt(6), 0, out);
    assert.deepEqual(seqs(out), [1, 3, 4, 6], 'a marked number inside the run is skipped over');
  });

  it('a gap is released past after the bound; the missing packet, coming later, is released at once and counted late', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    r.push(1, pkt(1), 0, out);
    r.push(3, pkt(3), 10, out);
    r.push(4, pkt(4), 12, out);
    assert.equal(r.dueMs(), 10 + REORDER_START_BOUND_MS, 'due when the oldest waiting packet has waited the bound');
    r.expire(10 + REORDER_START_BOUND_MS - 1, out);
    assert.deepEqual(seqs(out), [1], 'not before the bound');
    r.expire(10 + REORDER_START_BOUND_MS, out);
    assert.deepEqual(seqs(out), [1, 3, 4], 'released past 2');
    assert.equal(r.stats.releasedPast, 1, 'one number given up');
    r.push(2, pkt(2), 600, out);
    assert.deepEqual(seqs(out), [1, 3, 4, 2], 'the late packet is delivered, not lost');
    assert.equal(r.stats.late, 1, 'counted late');
    assert.ok(r.stats.boundMs > REORDER_START_BOUND_MS, `the bound grows to what was needed (${r.stats.boundMs})`);
    assert.ok(r.stats.boundMs <= REORDER_MAX_BOUND_MS, 'within its maximum');
  });

  it('the bound follows the waits seen: short gaps make it short', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    let t = 10_000;
    r.push(1, pkt(1), t, out);
    for (let s = 2; s < 400; s += 2) {
      // s+1 first, s 3 ms later: every gap fills after 3 ms.
      r.push(s + 1, pkt(s + 1), t, out);
      t += 3;
      r.push(s, pkt(s), t, out);
      t += 1;
    }
    assert.equal(r.stats.releasedPast, 0, 'nothing given up');
    assert.ok(r.stats.boundMs < 40, `bound ${r.stats.boundMs} ms follows 3 ms waits`);
    assert.ok(r.stats.boundMs >= REORDER_MIN_BOUND_MS, 'not below its minimum');
  });

  it('memory is bounded: a number beyond the ring releases the oldest gap at once', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    r.push(1, pkt(1), 0, out);
    for (let s = 3; s < 3 + REORDER_MAX_PACKETS; s++) r.push(s, pkt(s), 0, out);
    assert.equal(out.length, 2 + REORDER_MAX_PACKETS - 1, 'the whole run after the gap is out');
    assert.equal(r.stats.releasedPast, 1, 'the gap at 2 was given up for room');
    assert.equal(r.waiting, 0, 'nothing waiting');
    const again = seqs(out);
    assert.deepEqual(again.slice(0, 4), [1, 3, 4, 5], 'in order');
  });

  it('reset releases what waits, in order, then a new sequence space starts at 1', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    r.push(102, pkt(102), 0, out);
    r.push(100, pkt(100), 0, out);
    assert.deepEqual(seqs(out), [], 'a fresh buffer waits for number 1');
    r.reset(out);
    assert.deepEqual(seqs(out), [100, 102], 'released, not lost');
    r.push(2, pkt(2), 0, out);
    r.push(1, pkt(1), 0, out);
    assert.deepEqual(seqs(out), [100, 102, 1, 2], 'the new space in order from 1');
    assert.equal(r.waiting, 0, 'nothing waiting');
  });

  it('a sender far along (this side restarted) starts the buffer where it is; a jump far ahead costs one ring at most', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    r.push(1_000_000, pkt(1_000_000), 0, out);
    r.push(1_000_001, pkt(1_000_001), 0, out);
    assert.deepEqual(seqs(out), [1_000_000, 1_000_001], 'released at once');
    r.push(1_000_003, pkt(1_000_003), 0, out);
    const t0 = performance.now();
    r.push(Number.MAX_SAFE_INTEGER, pkt(9), 0, out);
    assert.ok(performance.now() - t0 < 100, 'no walk over the numbers in between');
    assert.deepEqual(seqs(out).slice(2), [1_000_003], 'what waited is released; the far packet waits for the ring before it');
    r.expire(REORDER_START_BOUND_MS, out);
    assert.deepEqual(seqs(out).slice(2), [1_000_003, 9], 'and goes after the bound');
  });
});

describe('link ACK accounting (aggregate, adaptive)', () => {
  it('keeps striped data until acknowledged; an ACK covers exactly the bytes written before it', () => {
    const sock = new FakeSocket();
    const l = upLink(sock);
    const a = Buffer.alloc(1000, 1);
    const b = Buffer.alloc(500, 2);
    l.sendData(a, 3, 0, false, true);
    l.sendData(b, 2, 1, false, true);
    assert.equal(l.unackedBytes, 1500, 'all of it on its way');
    l.onAck(1000, 20);
    assert.equal(l.unackedBytes, 500, 'the first buffer is through');
    assert.equal(l.ackTimeMs, 20, 'ack time measured from its write');
    l.close(1, 'test');
    const back = l.reclaim();
    assert.deepEqual(back.map((r) => r.packets), [2], 'only the unacknowledged buffer comes back');
    assert.equal(back[0]?.buf, b, 'the same buffer (already framed or sealed)');
  });

  it('a stalled link gives its data back once; queued striped data comes back too, duplicated data stays', () => {
    const sock = new FakeSocket();
    const l = upLink(sock);
    l.sendData(Buffer.alloc(100), 1, 0, false, true);
    sock.full = true;
    l.sendData(Buffer.alloc(100), 1, 0, false, true); // written, socket now full
    l.sendData(Buffer.alloc(100), 1, 0, false, true); // queued
    l.sendData(Buffer.alloc(100), 1, 0, false, false); // queued, duplicated
    assert.equal(l.stalled(STALL_MIN_MS - 1), false, 'not yet');
    assert.equal(l.stalled(STALL_MIN_MS + 1), true, 'stalled after the minimum');
    const back = l.reclaim();
    assert.equal(back.length, 3, 'two written and one queued striped buffer come back');
    assert.equal(l.reclaim().length, 0, 'not twice');
    assert.equal(l.queueBytes, 100, 'the duplicated buffer still waits in the queue');
  });

  it('an ACK above what was sent is a protocol error; an older one overtaken by a newer is ignored', () => {
    const sock = new FakeSocket();
    const l = upLink(sock);
    l.sendData(Buffer.alloc(100), 1, 0, false, true);
    assert.throws(() => l.onAck(101, 1), ProtocolError, 'more than sent');
    l.onAck(60, 1);
    assert.doesNotThrow(() => l.onAck(59, 2), 'an older ACK changes nothing');
    assert.equal(l.unackedBytes, 40, 'what the newer ACK covered stays covered');
  });

  it('the scheduler measure: a link with more unacknowledged data per delivery rate is later', () => {
    const fast = upLink(new FakeSocket());
    const slow = upLink(new FakeSocket());
    for (const l of [fast, slow]) l.sendData(Buffer.alloc(200_000), 1, 0, false, true);
    // Both busy; in 50 ms fast acknowledges 100 kB, slow 50 kB: slow's rate is half.
    fast.onAck(1, 0);
    slow.onAck(1, 0);
    fast.onAck(100_000, 50);
    slow.onAck(50_000, 50);
    fast.onAck(150_000, 100);
    slow.onAck(100_000, 100);
    assert.ok(fast.deliveryRate > 1.5 * slow.deliveryRate, `rates ${fast.deliveryRate} and ${slow.deliveryRate} B/ms`);
    assert.ok(fast.eta(1000) < slow.eta(1000), `fast ${fast.eta(1000)} ms < slow ${slow.eta(1000)} ms`);
  });

  it('a link that carried only a trickle does not look slow: its rate is not measured from it', () => {
    const idle = upLink(new FakeSocket());
    const busy = upLink(new FakeSocket());
    busy.sendData(Buffer.alloc(400_000), 1, 0, false, true);
    busy.onAck(1, 0);
    busy.onAck(100_000, 50);
    busy.onAck(200_000, 100);
    // The idle link sends a small packet now and then, acknowledged at once.
    for (let t = 0; t <= 200; t += 20) {
      idle.sendData(Buffer.alloc(100), 1, t, false, false);
      idle.onAck(((t / 20) + 1) * 100, t + 1);
    }
    assert.ok(idle.deliveryRate >= busy.deliveryRate, `the idle link keeps the default (${idle.deliveryRate} B/ms against ${busy.deliveryRate})`);
    assert.ok(idle.eta(30_000) < busy.eta(30_000), 'so it is chosen next for striped data');
  });
});

describe('review regressions', () => {

  it('a waiting packet is a copy: the socket read or record it came in is not pinned (nor changed under it)', () => {
    const r = new ReorderBuffer();
    const out: Buffer[] = [];
    const chunk = Buffer.alloc(64 * 1024, 7);
    r.push(2, chunk.subarray(100, 120), 0, out);
    chunk.fill(0);
    r.push(1, pkt(1), 0, out);
    assert.equal(out.length, 2, 'both released');
    assert.ok(out[1]!.every((b) => b === 7), 'the waiting packet kept its bytes');
    assert.notEqual(out[1]!.buffer, chunk.buffer, 'and does not hold the 64 KiB chunk');
  });

  /** An aggregate session with one link, over a fake socket. */
  function oneLinkAggregate(): { s: ReturnType<typeof testSession>; sock: FakeSocket; l: Link } {
    const s = testSession();
    s.mode = 'aggregate';
    const sock = new FakeSocket();
    const l = testLink(sock);
    s.attach(l);
    return { s, sock, l };
  }

  it('aggregate with one link up: a stall keeps its data where it is (nowhere else to send it)', () => {
    const { s, sock, l } = oneLinkAggregate();
    const t0 = performance.now();
    sock.full = true;
    for (let i = 0; i < 10; i++) s.sendFrames(Buffer.alloc(1000), 1, t0, false, false, true);
    s.tick(t0 + STALL_MIN_MS + 10);
    assert.equal(s.stats.dropsNoLink, 0, 'nothing thrown away');
    assert.equal(s.stats.resentPackets, 0, 'nothing counted as resent');
    assert.equal(l.queueBytes, 9000, 'the queued data still waits on the link');
  });

  it('aggregate: the last link closing with data unacknowledged: it waits (the only copy), and goes on the next connection', () => {
    const { s, l } = oneLinkAggregate();
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) l.sendData(Buffer.alloc(1000, 1), 1, t0, false, true);
    l.close(CloseCode.Shutdown, 'test');
    assert.equal(s.stats.dropsNoLink, 0, 'given back with nowhere to go yet: not dropped');
    assert.equal(s.stats.resendDeferred, 10, 'it waits, counted');
    assert.equal(s.stats.resentPackets, 0, 'not resent yet');
    const sock = new FakeSocket();
    s.attach(testLink(sock));
    s.tick(t0 + 100);
    assert.equal(s.stats.resentPackets, 10, 'sent on the new connection');
    assert.equal(sock.written.length, 10);
    s.close(CloseCode.Shutdown, 'done');
  });

  it('aggregate: given-back data waits for a link at most DEFERRED_MAX_AGE_MS; then it is stale, dropped and counted', () => {
    const { s, l } = oneLinkAggregate();
    for (let i = 0; i < 10; i++) l.sendData(Buffer.alloc(1000, 1), 1, performance.now(), false, true);
    l.close(CloseCode.Shutdown, 'test');
    const t0 = performance.now();
    assert.equal(s.stats.resendDeferred, 10, 'it waits');
    s.tick(t0 + DEFERRED_MAX_AGE_MS - 100);
    assert.equal(s.stats.dropsNoLink, 0, 'not yet stale');
    s.tick(t0 + DEFERRED_MAX_AGE_MS + 100);
    assert.equal(s.stats.dropsNoLink, 10, 'stale: dropped, counted as no_link');
    assert.equal(s.retainBudget.bytes, 0, 'its bytes leave the session budget');
    const sock = new FakeSocket();
    s.attach(testLink(sock));
    s.tick(t0 + DEFERRED_MAX_AGE_MS + 200);
    assert.equal(s.stats.resentPackets, 0, 'not replayed on the next connection');
    assert.equal(sock.written.length, 0);
    s.close(CloseCode.Shutdown, 'done');
  });

  it('aggregate: what a stalled link gives back goes on the other though its queue is full and it holds 16 MiB unacknowledged', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const queueMaxBytes = 64 * 1024;
    const mk = (id: number, sock: FakeSocket): Link => testLink(sock, id, queueMaxBytes);
    const sa = new FakeSocket();
    const sb = new FakeSocket();
    const [a, b] = [mk(0, sa), mk(1, sb)];
    s.attach(a);
    s.attach(b);
    const t0 = performance.now();
    // Link 0 carries 40 packets that are never acknowledged.
    for (let i = 0; i < 40; i++) a.sendData(Buffer.alloc(1000, 1), 1, t0, false, true);
    // Link 1, later: 16 MiB wait for their ACK, its socket is full and its queue at the bound, all fresh data.
    const t1 = t0 + STALL_MIN_MS;
    b.sendData(Buffer.alloc(RETAIN_MAX_BYTES, 2), 1, t1, false, true);
    sb.full = true;
    b.sendData(Buffer.alloc(1000, 3), 1, t1, false, true);
    b.sendData(Buffer.alloc(queueMaxBytes, 4), 1, t1, false, true);
    assert.equal(b.stats.drops.queue_full, 0, 'link 1 took all of it');
    assert.equal(b.canRetain, false, 'link 1 holds its maximum unacknowledged');
    s.tick(t1 + 10); // link 0's oldest is STALL_MIN_MS + 10 ms old: a stall; link 1's is 10 ms old
    assert.equal(s.stats.resentPackets, 40, "link 0's packets were given back");
    assert.equal(b.stats.drops.queue_full, 0, 'none of them dropped on link 1');
    assert.equal(b.queueBytes, queueMaxBytes + 40 * 1000, 'they wait in its queue, past its bound');
    sb.full = false;
    sb.emit('drain');
    assert.equal(sb.written.filter((w) => w[0] === 1).length, 40, 'and leave on link 1 when it drains');
  });

  it('an ACK names its link: one that arrives on another link is ignored and counted, not applied', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const mk = (id: number): Link => testLink(new FakeSocket(), id);
    const [a, b] = [mk(0), mk(1)];
    s.attach(a);
    s.attach(b);
    a.sendData(Buffer.alloc(500), 1, 0, false, true);
    b.sendData(Buffer.alloc(500), 1, 0, false, true);
    const ackOfB = encodeAck(1, 500);
    s.onFrame(a, FrameType.Ack, ackOfB, 8, ackOfB.length);
    assert.equal(s.stats.misdirected, 1, 'counted as misdirected');
    assert.equal(a.unackedBytes, 500, 'link 0 still holds its data');
    s.onFrame(b, FrameType.Ack, ackOfB, 8, ackOfB.length);
    assert.equal(b.unackedBytes, 0, 'on its own link it applies');
  });
});
