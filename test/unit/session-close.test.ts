// A session that closes (shutdown, retired) while packets of an aggregate or
// adaptive session wait in its reorder buffer for a predecessor: they were
// received and are first copies, so they are delivered, not dropped unseen.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CloseCode, DATA_IN_ORDER, encodeData } from '../../src/protocol/frame.js';
import { FakeSocket, testLink, testSession } from '../helpers/fake-socket.js';
import { numbered, packetNumber } from '../helpers/packets.js';

describe('session close', () => {
  it('delivers, in order, the packets still waiting for a predecessor', () => {
    const delivered: number[] = [];
    const rx = testSession((ps) => {
      for (const p of ps) delivered.push(packetNumber(p));
    });
    rx.mode = 'aggregate';
    const sock = new FakeSocket();
    rx.attach(testLink(sock));
    const frame = (seq: number): Buffer => {
      const f = encodeData(seq, numbered(seq, '10.0.0.2', '10.0.0.1', 60));
      f[6] = DATA_IN_ORDER;
      return f;
    };
    sock.emit('data', frame(1));
    // Sequence 2 is on another link, not here yet: 3 and 4 wait for it.
    sock.emit('data', Buffer.concat([frame(3), frame(4)]));
    assert.deepEqual(delivered, [1]);
    assert.equal(rx.reorder?.waiting, 2);
    rx.close(CloseCode.Shutdown, 'shutting down');
    assert.deepEqual(delivered, [1, 3, 4], 'what waited is delivered at close');
    assert.equal(rx.stats.rxPackets, 3, 'and counted as delivered');
  });
});
