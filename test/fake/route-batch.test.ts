// Tunnel.routeBatch keeps its per-batch gathering from one batch to the next:
// a batch whose sending threw must leave nothing behind that breaks the next.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_TIMING } from '../../src/config/types.js';
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
