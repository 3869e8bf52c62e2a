// A link sends shared frames straight to the kernel (the addon's send(2))
// without copying them when the kernel takes them all, and copies what it must
// keep. The frames may lie in the TUN's read buffer, which the next batch
// overwrites: the peer must still get the original bytes, in order, whatever
// the socket took at once. Real TCP over loopback; needs the built addon.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { performance } from 'node:perf_hooks';
import { Link, OutFrames } from '../../src/core/link.js';
import { RecordArenas } from '../../src/core/record-arenas.js';
import { DATA_HEADER_BYTES, encodeData, readU64, writeDataHeader } from '../../src/protocol/frame.js';
import { socketPair, upLink } from '../helpers/loopback.js';
import { numbered } from '../helpers/packets.js';
import { createLogger } from '../../src/log.js';
import { loadAddon } from '../../src/tun/loader.js';

/** Fills `arena` with the pattern of batch `i`. */
function fill(arena: Buffer, i: number): void {
  for (let j = 0; j < arena.length; j += 4) arena.writeUInt32BE((i * 0x9e3779b1 + j) >>> 0, j);
}

/** Reads `total` bytes from `b` (resuming it); their sha256. */
function drain(b: Socket, total: number): Promise<{ bytes: number; sha: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  return new Promise((resolve) => {
    b.on('data', (chunk: Buffer) => {
      h.update(chunk);
      bytes += chunk.length;
      if (bytes >= total) resolve({ bytes, sha: h.digest('hex') });
    });
    b.resume();
  });
}

/** A stand-in for PacketBatch.pin that counts pins and releases (a second release of one pin is not counted). */
function pinCounter(): { pins: number; releases: number; pin: () => () => void } {
  const c = {
    pins: 0,
    releases: 0,
    pin: (): (() => void) => {
      c.pins++;
      let done = false;
      return () => {
        if (!done) c.releases++;
        done = true;
      };
    },
  };
  return c;
}

describe('direct sends of shared frames', () => {
  it('the addon has sendSome (without it links fall back to the stream writer, and these tests would test that)', () => {
    assert.equal(typeof loadAddon().sendSome, 'function', 'the built addon exports sendSome');
  });

  it('one batch fanned out to a link whose peer reads and one whose peer does not: both get the original bytes', async () => {
    const p1 = await socketPair(true);
    const p2 = await socketPair(true);
    try {
      const fast = upLink(p1.a, undefined, 64 << 20);
      const slow = upLink(p2.a, undefined, 64 << 20);
      const arena = Buffer.alloc(64 * 1024);
      const sent = createHash('sha256');
      let total = 0;
      const fastDone = drain(p1.b, 256 * arena.length);
      for (let i = 0; i < 256; i++) {
        fill(arena, i);
        sent.update(arena);
        total += arena.length;
        const f = new OutFrames(arena, true);
        fast.send(f, 1, performance.now());
        slow.send(f, 1, performance.now());
        arena.fill(0xee);
        // Let the reading peer read now and then (and the fast link drain): the links diverge.
        if (i % 16 === 15) await new Promise((r) => setImmediate(r));
      }
      assert.ok(slow.queueBytes > 0, `the link whose peer reads nothing queued frames (${slow.queueBytes} bytes)`);
      assert.ok(fast.stats.directBytes > slow.stats.directBytes, `the reading peer's link sent more directly (${fast.stats.directBytes} vs ${slow.stats.directBytes} bytes)`);
      const digest = sent.digest('hex');
      const a = await fastDone;
      assert.equal(a.sha, digest, 'the reading peer got every original byte in order');
      const b = await drain(p2.b, total);
      assert.equal(b.bytes, total, 'the other peer got every byte once');
      assert.equal(b.sha, digest, 'and the original bytes in order');
    } finally {
      for (const p of [p1, p2]) {
        p.a.destroy();
        p.b.destroy();
        p.server.close();
      }
    }
  });

  it('a peer that resets the connection while frames are sent: the link closes, nothing throws', async () => {
    const { server, a, b } = await socketPair(true);
    try {
      const l = upLink(a, undefined, 64 << 20);
      let closedWith = '';
      l.handler = { onFrame: () => {}, onChunkEnd: () => {}, onClose: (_l, reason) => (closedWith = reason) };
      b.resetAndDestroy();
      await new Promise((r) => setTimeout(r, 50));
      const arena = Buffer.alloc(4096, 1);
      for (let i = 0; i < 20 && l.state !== 'closed'; i++) {
        l.send(new OutFrames(arena, true), 1, performance.now());
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(l.state, 'closed', `the link closed (${closedWith})`);
    } finally {
      a.destroy();
      server.close();
    }
  });
  it('a reused buffer overwritten after every send: the peer gets every original byte in order, the socket full or not', async () => {
    const { server, a, b } = await socketPair(true);
    try {
      const l = upLink(a, undefined, 64 << 20);
      const arena = Buffer.alloc(64 * 1024);
      const sent = createHash('sha256');
      let total = 0;
      // 24 MiB while the peer reads nothing: the socket buffers fill, sends go partial, then queue.
      for (let i = 0; i < 384; i++) {
        fill(arena, i);
        sent.update(arena);
        total += arena.length;
        l.send(new OutFrames(arena, true), 1, performance.now());
        arena.fill(0xee); // the next batch overwrites the view
      }
      assert.ok(l.queueBytes > 0, `the peer reading nothing, some frames waited in the link's queue (${l.queueBytes} bytes)`);
      const got = createHash('sha256');
      let received = 0;
      await new Promise<void>((resolve) => {
        b.on('data', (chunk: Buffer) => {
          got.update(chunk);
          received += chunk.length;
          if (received >= total) resolve();
        });
        b.resume();
      });
      assert.equal(received, total, 'every byte arrived, none twice');
      assert.equal(got.digest('hex'), sent.digest('hex'), 'the bytes are the ones sent, in order');
      assert.equal(l.stats.txBytes, total, 'the link counted every byte once');
      const direct = l.stats.directBytes;
      assert.ok(direct > 0 && direct < total, `part went by direct sends (${direct} of ${total} bytes), the rest through Node's writer`);
      assert.equal(l.queueBytes, 0, 'the queue drained');
    } finally {
      a.destroy();
      b.destroy();
      server.close();
    }
  });

  it('a pinnable batch: the rest of a partial send waits in the writer as the view itself, released once written', async () => {
    const { server, a, b } = await socketPair(true);
    try {
      const l = upLink(a, undefined, 64 << 20);
      const sent = createHash('sha256');
      let total = 0;
      const c = pinCounter();
      let arena = Buffer.alloc(64 * 1024);
      for (let i = 0; i < 256; i++) {
        fill(arena, i);
        sent.update(arena);
        total += arena.length;
        const before = c.pins;
        l.send(new OutFrames(arena, true, c.pin), 1, performance.now());
        // As the TUN device does: a pinned arena is not read into again; the next batch gets another.
        const pinned = c.pins > before;
        if (pinned) arena = Buffer.alloc(64 * 1024);
        else arena.fill(0xee);
      }
      assert.ok(c.pins > 0, 'a partial send pinned its batch');
      assert.ok(c.releases < c.pins, 'the peer reading nothing, a pinned rest still waits');
      const got = await drain(b, total);
      assert.equal(got.sha, sent.digest('hex'), 'every original byte, in order');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(c.releases, c.pins, 'every pin released once its bytes were written');
    } finally {
      a.destroy();
      b.destroy();
      server.close();
    }
  });

  it('pinned frames a link drops (queue full) or loses (the link closes) are released all the same', async () => {
    const { server, a, b } = await socketPair(true);
    try {
      const l = new Link(
        a,
        { id: 0, name: 'wan1', maxFrameBytes: 66_000, queueMaxBytes: 1 << 20, queueMaxAgeMs: 60_000, keepaliveIntervalMs: 60_000, deadIntervalMs: 60_000 },
        { onFrame: () => {}, onChunkEnd: () => {}, onClose: () => {} },
        createLogger('error', 'client', { sink: () => {} }),
      );
      l.state = 'up';
      const c = pinCounter();
      // The peer reads nothing: partial sends, then the queue, then queue_full drops.
      for (let i = 0; i < 2000 && l.stats.drops.queue_full === 0; i++) l.send(new OutFrames(Buffer.alloc(64 * 1024, i), true, c.pin), 1, performance.now());
      assert.ok(l.stats.drops.queue_full > 0, 'the queue filled');
      assert.ok(l.queueBytes > 0 && c.releases < c.pins, `pins held by the queue and the writer (${c.pins - c.releases} of ${c.pins})`);
      l.destroy('test');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(c.releases, c.pins, 'every pin released');
    } finally {
      a.destroy();
      b.destroy();
      server.close();
    }
  });

  it('a partial send hands the writer only the frame it stopped in: the whole frames after it wait in our queue, where a ping passes them', async () => {
    const { server, a, b } = await socketPair(true);
    try {
      const l = upLink(a, undefined, 64 << 20);
      const c = pinCounter();
      // Batches of 64 DATA frames of 16 KiB packets, numbered in order, while the peer reads nothing.
      const FRAME = DATA_HEADER_BYTES + 16 * 1024;
      let seq = 0;
      let total = 0;
      let batches = 0;
      while (l.queueBytes === 0 && batches < 64) {
        const arena = Buffer.alloc(64 * FRAME);
        for (let off = 0; off < arena.length; off += FRAME) writeDataHeader(arena, off, ++seq, FRAME - DATA_HEADER_BYTES);
        l.send(new OutFrames(arena, true, c.pin), 64, performance.now());
        total += arena.length;
        batches++;
      }
      assert.ok(l.queueBytes > 0, 'a send went partial: the frames after the cut are in the queue');
      assert.equal(l.queueBytes % FRAME, 0, 'the queue holds whole frames');
      assert.ok(a.writableLength < FRAME, `Node's writer holds less than one frame (${a.writableLength} bytes), not the rest of the batch`);
      assert.equal(l.stats.txBytes + l.queueBytes, total, 'bytes are counted once: sent or queued');
      const queuedFrames = l.queueBytes / FRAME;
      const ping = Buffer.alloc(DATA_HEADER_BYTES + 84);
      writeDataHeader(ping, 0, 1_000_000, 84);
      l.sendData(ping, 1, performance.now(), true);
      total += ping.length;

      // The peer reads: every frame once; the bulk in order; the ping ahead of the frames that were queued.
      const order: number[] = [];
      let pending = Buffer.alloc(0);
      let received = 0;
      await new Promise<void>((resolve) => {
        b.on('data', (chunk: Buffer) => {
          received += chunk.length;
          pending = Buffer.concat([pending, chunk]);
          let off = 0;
          while (pending.length - off >= DATA_HEADER_BYTES) {
            const end = off + 4 + pending.readUInt32BE(off);
            if (end > pending.length) break;
            order.push(readU64(pending, off + 8));
            off = end;
          }
          pending = pending.subarray(off);
          if (received >= total) resolve();
        });
        b.resume();
      });
      assert.equal(received, total, 'every byte arrived once');
      const bulk = order.filter((s) => s !== 1_000_000);
      assert.deepEqual(bulk, Array.from({ length: seq }, (_, i) => i + 1), 'the bulk frames in order, none lost or repeated');
      const at = order.indexOf(1_000_000);
      assert.ok(at <= seq - queuedFrames, `the ping left ahead of the ${queuedFrames} queued frames (position ${at} of ${order.length})`);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(l.queueBytes, 0, 'the queue drained');
      assert.equal(l.stats.txBytes, total, 'the link counted every byte once');
      assert.equal(c.releases, c.pins, 'every pin released');
    } finally {
      a.destroy();
      b.destroy();
      server.close();
    }
  });

  it('frames the kernel takes at once are not copied; frames a link keeps are copied once for all links', () => {
    const view = Buffer.from('frames');
    const f = new OutFrames(view, true);
    assert.equal(f.view, view, 'until a link keeps them, the frames are the view itself');
    const kept = f.own();
    assert.equal(kept.toString(), 'frames', 'kept frames have the same bytes');
    view.fill(0);
    assert.equal(kept.toString(), 'frames', 'kept frames are a copy: the view overwritten, they are not');
    assert.equal(f.own(), kept, 'a second link keeping them shares the same copy');
    const g = new OutFrames(Buffer.from('0123456789'), true, () => undefined);
    assert.equal(g.rest(4).buf.toString(), '456789', 'no pin to be had: the rest is a copy of just those bytes');
    assert.equal(g.rest(4).release, undefined);
    const owned = Buffer.from('sealed');
    assert.equal(new OutFrames(owned, false).own(), owned, 'frames that are not borrowed are never copied');
  });

  it('frames whose TUN batch cannot be pinned move to the spill: one copy, pinned there by every link that keeps it', () => {
    const spill = new RecordArenas(2, 4096);
    const view = Buffer.from('0123456789');
    const f = new OutFrames(view, true, () => undefined, spill);
    const a = f.keep();
    const b = f.keep();
    assert.equal(a.buf.toString(), '0123456789');
    assert.equal(b.buf, a.buf, 'a second link keeps the same copy');
    assert.notEqual(a.buf, view);
    assert.equal(a.buf.buffer, spill.alloc(1)?.buffer, 'the copy lies in the spill (the next alloc goes after it, in the same arena)');
    view.fill(0);
    assert.equal(a.buf.toString(), '0123456789', 'the batch overwritten, the kept frames are not');
    const r = f.rest(4);
    assert.equal(r.buf.toString(), '456789', 'the rest of a partial write comes from the same copy');
    assert.equal(r.buf.buffer, a.buf.buffer);
    assert.deepEqual(spill.use, { allocated: 1, pinned: 1 });
    for (const release of [a.release, b.release, r.release]) {
      assert.equal(typeof release, 'function', 'each keeper holds a pin');
      release?.();
    }
    assert.deepEqual(spill.use, { allocated: 1, pinned: 0 }, 'released by all three, the arena is free again');
    // A spill with no room: a copy of its own, as without one.
    const full = new RecordArenas(0, 4096, 0);
    const g = new OutFrames(Buffer.from('abc'), true, () => undefined, full);
    const k = g.keep();
    assert.equal(k.buf.toString(), 'abc');
    assert.equal(k.release, undefined);
  });

  it('copies a failed send(2) loses (the peer reset the connection) are counted as dropped, not as sent', async () => {
    const p = await socketPair(true);
    try {
      const l = upLink(p.a, undefined, 64 << 20);
      // The peer resets the connection; our next send(2) fails with EPIPE or ECONNRESET.
      p.b.resetAndDestroy();
      // Blocks the loop while the RST arrives, so that the send meets it before our reader does.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
      const frames = Buffer.concat(Array.from({ length: 3 }, (_, i) => encodeData(i + 1, numbered(i))));
      let errors = 0;
      p.a.on('error', () => errors++);
      l.sendData(frames, 3, performance.now());
      await new Promise((r) => setImmediate(r));
      assert.ok(p.a.destroyed, 'the socket is destroyed after the failed send');
      assert.equal(l.stats.txPackets + l.stats.drops.link_closed, 3, `every copy is sent or counted dropped (sent ${l.stats.txPackets}, link_closed ${l.stats.drops.link_closed})`);
      assert.equal(l.stats.drops.link_closed, 3, 'none reached the peer');
      assert.ok(errors <= 1);
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });
});
