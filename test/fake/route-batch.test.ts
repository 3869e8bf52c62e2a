// Tunnel.routeBatch keeps its per-batch gathering from one batch to the next:
// a batch whose sending threw must leave nothing behind that breaks the next.
// With offloads on and a slowly paced link, it cuts TCP offload packets into
// pieces before numbering them (tun/gso-split.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { forEachFrame, FrameType, readU64 } from '../../src/protocol/frame.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { createLogger } from '../../src/log.js';
import { FakeTun } from '../helpers/fake-tun.js';
import { numbered } from '../helpers/packets.js';

describe('routeBatch after a send threw', () => {
  it('routes the next batch, and sends nothing of the batch that threw again', () => {
    const tun = new FakeTun();
    const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
    t.start();
    try {
      const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }]);
      t.register(s);
      (s.links as Map<number, unknown>).set(0, { state: 'up', close: () => {} }); // routeBatch only asks whether it has links
      const sent: number[] = [];
      let calls = 0;
      (s as unknown as { sendFrames: (frames: Buffer, count: number) => void }).sendFrames = (_frames, count) => {
        if (++calls === 1) throw new Error('boom');
        sent.push(count);
      };
      // The throw comes from the final flush of the batch, after its gather was taken off the list.
      assert.throws(() => tun.inject([numbered(1, '10.0.0.1', '10.0.0.2')]), /boom/);
      tun.inject([numbered(2, '10.0.0.1', '10.0.0.2'), numbered(3, '10.0.0.1', '10.0.0.2')]);
      tun.inject([numbered(4, '10.0.0.1', '10.0.0.2')]);
      assert.deepEqual(sent, [2, 1], 'the two later batches, whole; nothing of the first');
    } finally {
      t.close();
    }
  });
});

/** A TCP offload packet from 10.0.0.1 to 10.0.0.2 (virtio_net_hdr first): `payload` bytes in segments of `mss`. */
function tcpGso(payload: number, mss: number): Buffer {
  const p = Buffer.alloc(10 + 40 + payload);
  p[0] = 1;
  p[1] = 1;
  p.writeUInt16LE(40, 2);
  p.writeUInt16LE(mss, 4);
  p.writeUInt16LE(20, 6);
  p.writeUInt16LE(16, 8);
  p[10] = 0x45;
  p.writeUInt16BE(40 + payload, 12);
  p[10 + 8] = 64;
  p[10 + 9] = 6;
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(p, 10 + 12);
  p[30 + 12] = 5 << 4;
  p[30 + 13] = 0x10;
  for (let i = 0; i < payload; i++) p[50 + i] = i & 0xff;
  return p;
}

describe('routeBatch on a slowly paced link', () => {
  it('cuts TCP offload packets into pieces of SPLIT_MS at the slowest pace, each numbered; small packets and unpaced sessions stay whole', () => {
    const tun = new FakeTun('fake0', 16, 10);
    const t = new Tunnel(tun, DEFAULT_TIMING, createLogger('silent' as never, 't', { format: 'pretty', sink: () => {} }));
    t.start();
    try {
      const s = t.newSession(Buffer.alloc(16, 1), Buffer.alloc(8), [{ family: 4, address: '10.0.0.2', prefix: 32 }]);
      t.register(s);
      const links = s.links as Map<number, unknown>;
      links.set(0, { state: 'up', close: () => {}, pathKey: 'a', paceKbit: 40_000 });
      links.set(1, { state: 'up', close: () => {}, pathKey: 'b', paceKbit: 10_000 });
      (s as unknown as { updatePaths: () => void }).updatePaths();
      assert.equal(s.splitBytes, 2500, '2 ms at 10 Mbit/s, the slower link');
      const frames: Array<{ seq: number; packet: Buffer }> = [];
      const borrowed: boolean[] = [];
      (s as unknown as { sendFrames: (frames: Buffer, count: number, now: number, borrowed: boolean) => void }).sendFrames = (buf, _count, _now, b) => {
        borrowed.push(b);
        forEachFrame(buf, 1 << 20, (type, b, start, end) => {
          assert.equal(type, FrameType.Data);
          frames.push({ seq: readU64(b, start), packet: Buffer.from(b.subarray(start + 8, end)) });
        });
      };
      const big = tcpGso(7000, 1000);
      const small = numbered(9, '10.0.0.1', '10.0.0.2');
      tun.inject([big, Buffer.concat([Buffer.alloc(10), small])]);
      assert.deepEqual(
        frames.map((f) => [f.seq, f.packet.length - 50]),
        [
          [5, small.length - 40],
          [1, 2000],
          [2, 2000],
          [3, 2000],
          [4, 1000],
        ],
        'pieces of two segments, one number each (the small packet, urgent, leaves first)',
      );
      assert.deepEqual(Buffer.concat(frames.slice(1).map((f) => f.packet.subarray(50))), big.subarray(50), 'the payload once, in order');
      assert.equal(s.stats.splitPackets, 1);
      assert.deepEqual(borrowed, [true, false], 'the small packet is a view of the batch; the pieces are a buffer of their own');

      links.set(1, { state: 'up', close: () => {}, pathKey: 'b', paceKbit: undefined });
      (s as unknown as { updatePaths: () => void }).updatePaths();
      assert.equal(s.splitBytes, 10_000, 'the slow link unpaced: 2 ms at 40 Mbit/s');
      links.set(0, { state: 'up', close: () => {}, pathKey: 'a', paceKbit: undefined });
      (s as unknown as { updatePaths: () => void }).updatePaths();
      assert.equal(s.splitBytes, undefined, 'nothing paced: nothing cut');
      frames.length = 0;
      tun.inject([big]);
      assert.equal(frames.length, 1, 'whole');
      assert.deepEqual(frames[0]?.packet, big);
    } finally {
      t.close();
    }
  });
});
