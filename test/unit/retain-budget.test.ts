// Striped data kept until acknowledged is bounded per link, per session and
// per tunnel, and never kept for a peer that reads without acknowledging.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { ACK_PARTIAL_INTERVAL_MS, ACK_TIMEOUT_DEAD_INTERVALS, RetainBudget, SESSION_RETAIN_MAX_BYTES, type Link } from '../../src/core/link.js';
import { Session } from '../../src/core/session.js';
import { CloseCode, FrameType } from '../../src/protocol/frame.js';
import { createLogger } from '../../src/log.js';
import { FakeSocket, testLink, testSession, upLink } from '../helpers/fake-socket.js';

const MiB = 1024 * 1024;
const striped = (l: Link, bytes: number, now = performance.now()): boolean => l.sendData(Buffer.alloc(bytes), 1, now, false, true);

describe('retained striped data', () => {
  it('links sharing a budget stop taking striped data together when it is spent, and take more once an ACK frees some', () => {
    const parent = new RetainBudget(100 * MiB);
    const budget = new RetainBudget(3 * MiB, parent);
    const a = upLink(new FakeSocket());
    const b = upLink(new FakeSocket());
    for (const l of [a, b]) {
      l.acking = true;
      l.retainBudget = budget;
    }
    assert.ok(striped(a, 2 * MiB));
    assert.ok(a.canRetain && b.canRetain, 'within the budget');
    assert.ok(striped(b, 1 * MiB));
    assert.equal(budget.bytes, 3 * MiB);
    assert.equal(parent.bytes, 3 * MiB, 'the parent counts it too');
    assert.ok(!a.canRetain && !b.canRetain, 'spent: neither link takes more (each alone would: 16 MiB per link)');
    a.onAck(2 * MiB, performance.now());
    assert.equal(budget.bytes, 1 * MiB, 'the ACK gave back what it covers');
    assert.ok(a.canRetain && b.canRetain);
    b.close(CloseCode.Shutdown, 'test');
    assert.equal(budget.bytes, 0, 'a closed link counts nothing (its data goes to the others, who count it if they keep it)');
    assert.equal(parent.bytes, 0);
  });

  it('a tunnel budget spent by a few sessions stops only those holding their fair share of it; sessions that keep nothing do not shrink it', () => {
    const parent = new RetainBudget(8 * MiB);
    const hogs = [new RetainBudget(32 * MiB, parent), new RetainBudget(32 * MiB, parent)];
    const mine = new RetainBudget(32 * MiB, parent);
    const idle = Array.from({ length: 100 }, () => new RetainBudget(32 * MiB, parent));
    for (const h of hogs) h.add(4 * MiB);
    assert.equal(parent.bytes, 8 * MiB, 'the tunnel holds its maximum');
    assert.ok(hogs.every((h) => h.full), 'the two holding it all take no more');
    assert.ok(!mine.full && !idle[0]!.full, 'the others still stripe: a share is 8 MiB over the holders, 3 with one of them');
    mine.add(2 * MiB);
    assert.ok(!mine.full, '2 MiB is under a third of 8 (100 sessions keeping nothing do not count)');
    mine.add(1 * MiB);
    assert.ok(mine.full, 'a third reached');
    hogs[0]!.detach();
    assert.equal(parent.bytes, 7 * MiB, 'a closed session gives back what it counted');
    assert.ok(!mine.full, 'under the maximum again: no session is held back');
    hogs[0]!.add(-4 * MiB); // a late give-back of a detached session reaches the parent no more
    assert.equal(parent.bytes, 7 * MiB);
    mine.add(-3 * MiB);
    hogs[1]!.add(-4 * MiB);
    assert.equal(parent.bytes, 0);
  });

  it('a session gives its links one budget, inside the tunnel\'s', () => {
    const tunnelBudget = new RetainBudget(256 * MiB);
    const quiet = createLogger('error', 'client', { sink: () => {} });
    const s = new Session(Buffer.alloc(16), Buffer.alloc(8), [], { eliminationTtlMs: 2000, eliminationWindowPackets: 131072, maxFrameBytes: 66000, retainBudget: tunnelBudget }, () => {}, quiet, undefined);
    s.mode = 'aggregate';
    const a = testLink(new FakeSocket(), 0);
    const b = testLink(new FakeSocket(), 1);
    s.attach(a);
    s.attach(b);
    assert.equal(a.retainBudget, s.retainBudget);
    assert.equal(b.retainBudget, s.retainBudget);
    assert.equal(s.retainBudget.maxBytes, SESSION_RETAIN_MAX_BYTES);
    assert.ok(striped(a, 4 * MiB));
    assert.equal(tunnelBudget.bytes, 4 * MiB, 'counted in the tunnel\'s budget');
    s.close(CloseCode.Shutdown, 'test');
    assert.equal(tunnelBudget.bytes, 0, 'a closed session keeps nothing counted');
  });

  it('a peer that reads but never acknowledges (or a byte at a time): the link is closed as dead after ACK_TIMEOUT_DEAD_INTERVALS dead intervals', () => {
    const sock = new FakeSocket();
    const l = upLink(sock, { deadIntervalMs: 100 });
    l.acking = true;
    const t0 = performance.now();
    assert.ok(striped(l, 8000, t0));
    const limit = ACK_TIMEOUT_DEAD_INTERVALS * 100;
    const at = (ms: number): void => {
      l.lastRxMs = t0 + ms; // it hears from the peer all along (PINGs)
      l.tick(t0 + ms);
    };
    at(limit - 50);
    assert.equal(l.state, 'up', 'not yet');
    l.onAck(3000, t0 + limit - 40); // progress: a frame still arriving read on by 3,000 bytes
    at(limit + 50);
    assert.equal(l.state, 'up', 'an ACK 1 KiB or more further starts the wait over');
    for (let b = 3001; b < 3010; b++) l.onAck(b, t0 + limit + 100); // a byte at a time: no progress
    at(2 * limit);
    assert.equal(l.state, 'closed', 'no progress for the whole wait: closed');
    assert.ok(l.declaredDead, 'as dead (the peer is told on the other links)');
    assert.ok(sock.ended || sock.destroyed);
  });

  it('a link whose round trip is longer than the dead interval gets 4 round trips', () => {
    const l = upLink(new FakeSocket(), { deadIntervalMs: 100 });
    l.acking = true;
    l.srttMs = 1000;
    const t0 = performance.now();
    assert.ok(striped(l, 1000, t0));
    l.lastRxMs = t0 + 3000;
    l.tick(t0 + 3000);
    assert.equal(l.state, 'up', 'past 4 dead intervals, inside 4 round trips');
    l.lastRxMs = t0 + 4100;
    l.tick(t0 + 4100);
    assert.equal(l.state, 'closed');
  });

  it('nothing striped waiting: no ACK is due, however long (duplicate-mode data is never acknowledged)', () => {
    const l = upLink(new FakeSocket(), { deadIntervalMs: 100 });
    l.acking = true;
    const t0 = performance.now();
    l.sendData(Buffer.alloc(1000), 1, t0); // not striped
    l.lastRxMs = t0 + 10_000;
    l.tick(t0 + 10_000);
    assert.equal(l.state, 'up');
  });
});

describe('ACKs of a frame still arriving', () => {
  it('a long frame half read is acknowledged as far as it came (a slow link shows progress); a short one is not', async () => {
    const sock = new FakeSocket();
    const l = upLink(sock, { deadIntervalMs: 60_000 });
    l.acking = true;
    const acks = (): number[] =>
      sock.written.filter((b) => b[5] === FrameType.Ack).map((b) => Number(b.readBigUInt64BE(10)));
    // A DATA frame of 60,000 bytes, of which 5,000 have come.
    const head = Buffer.alloc(5000);
    head.writeUInt32BE(60_000, 0);
    head[4] = 2;
    head[5] = FrameType.Data;
    sock.emit('data', head);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(acks(), [5000], 'acknowledged: 5,000 bytes read');
    // More of it, segment by segment: at most one such ACK per ACK_PARTIAL_INTERVAL_MS (a slow link's reverse direction is scarce).
    for (let i = 0; i < 5; i++) {
      sock.emit('data', Buffer.alloc(1448));
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(acks().length, 1, 'none within 100 ms of the last');
    await new Promise((r) => setTimeout(r, ACK_PARTIAL_INTERVAL_MS));
    sock.emit('data', Buffer.alloc(1448));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(acks(), [5000, 5000 + 6 * 1448], 'then one, as far as it came');
    // Another link with only 500 bytes of a frame read: that could be an ACK record arriving, nothing to acknowledge.
    const sock2 = new FakeSocket();
    const l2 = upLink(sock2, { deadIntervalMs: 60_000 });
    l2.acking = true;
    sock2.emit('data', head.subarray(0, 500));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(sock2.written.filter((b) => b[5] === FrameType.Ack).length, 0, 'no ACK below ACK_PARTIAL_BYTES');
  });
});

describe('budgets after a stall', () => {
  it('what a stalled link gives back is counted once in the session (its copy), so fresh striping goes on', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const a = testLink(new FakeSocket(), 0, 64 << 20);
    const b = testLink(new FakeSocket(), 1, 64 << 20);
    s.attach(a);
    s.attach(b);
    const t0 = performance.now();
    for (let i = 0; i < 16; i++) assert.ok(striped(a, MiB - 64, t0));
    const held = s.retainBudget.bytes;
    s.tick(t0 + 1000); // link 0 stalled: its 16 MiB go on link 1
    assert.ok(s.stats.resentPackets > 0, 'given back');
    assert.ok(s.retainBudget.bytes <= held + MiB, `the session counts it once (${(s.retainBudget.bytes / MiB).toFixed(1)} MiB)`);
    assert.ok(b.canRetain, 'fresh striped data still has room');
    a.close(CloseCode.Shutdown, 'test');
    b.close(CloseCode.Shutdown, 'test');
    s.close(CloseCode.Shutdown, 'done');
    assert.equal(s.retainBudget.bytes, 0);
  });

  it('ACK progress adds up: 800 bytes every 100 ms of a long frame keeps a slow link up', () => {
    const l = upLink(new FakeSocket(), { deadIntervalMs: 100 });
    l.acking = true;
    const t0 = performance.now();
    assert.ok(striped(l, 64_000, t0));
    for (let k = 1; k <= 20; k++) {
      l.onAck(800 * k, t0 + 100 * k);
      l.lastRxMs = t0 + 100 * k;
      l.tick(t0 + 100 * k);
    }
    assert.equal(l.state, 'up', '1 KiB every 200 ms or so is progress');
  });
});
