// A session that closes (shutdown, retired) while packets of an aggregate or
// adaptive session wait in its reorder buffer for a predecessor: they were
// received and are first copies, so they are delivered, not dropped unseen.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CloseCode, DATA_IN_ORDER, encodeData } from '../../src/protocol/frame.js';
import { Session } from '../../src/core/session.js';
import { memoryLogger } from '../../src/log.js';
import { FakeSocket, testLink, testSession } from '../helpers/fake-socket.js';
import { numbered, packetNumber } from '../helpers/packets.js';

/** A striped DATA frame (in-order flag) carrying test packet `seq`. */
function frame(seq: number): Buffer {
  const f = encodeData(seq, numbered(seq, '10.0.0.2', '10.0.0.1', 60));
  f[6] = DATA_IN_ORDER;
  return f;
}

describe('session close', () => {
  it('delivers, in order, the packets still waiting for a predecessor', () => {
    const delivered: number[] = [];
    const rx = testSession((ps) => {
      for (const p of ps) delivered.push(packetNumber(p));
    });
    rx.mode = 'aggregate';
    const sock = new FakeSocket();
    rx.attach(testLink(sock));
    sock.emit('data', frame(1));
    // Sequence 2 is on another link, not here yet: 3 and 4 wait for it.
    sock.emit('data', Buffer.concat([frame(3), frame(4)]));
    assert.deepEqual(delivered, [1]);
    assert.equal(rx.reorder?.waiting, 2);
    rx.close(CloseCode.Shutdown, 'shutting down');
    assert.deepEqual(delivered, [1, 3, 4], 'what waited is delivered at close');
    assert.equal(rx.stats.rxPackets, 3, 'and counted as delivered');
  });

  it('striped data still queued on a link when its session closes is counted dropped (link_closed)', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const sock = new FakeSocket();
    const link = testLink(sock, 0);
    s.attach(link);
    sock.full = true; // the first write fills the socket: the rest waits in the link's queue
    for (let i = 0; i < 5; i++) s.sendFrames(Buffer.alloc(1000, i), 1, 0, false, false, true);
    assert.equal(sock.written.length, 1);
    s.close(CloseCode.Shutdown, 'shutting down');
    assert.equal(link.stats.drops.link_closed, 4, 'the four that never left');
    assert.equal(s.stats.dropsNoLink, 0, 'not counted twice');
  });

  it('a link replaced by a new connection of the same id (the only link): its unacknowledged striped data goes on the new one', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const old = testLink(new FakeSocket(), 0);
    s.attach(old);
    for (let i = 0; i < 10; i++) s.sendFrames(Buffer.alloc(1000, i), 1, 0, false, false, true);
    assert.equal(old.unackedBytes, 10_000, 'sent, not acknowledged');
    const newSock = new FakeSocket();
    s.attach(testLink(newSock, 0));
    assert.equal(old.state, 'closed');
    assert.equal(s.stats.dropsNoLink, 0, 'nothing dropped');
    assert.equal(s.stats.resentPackets, 10, 'all ten sent again');
    assert.deepEqual(
      newSock.written.map((b) => b.length),
      Array.from({ length: 10 }, () => 1000),
      'on the new connection',
    );
  });

  it('a striped packet as far behind as the reorder ring holds is delivered, even with elimination_window_packets below the ring', () => {
    const delivered: number[] = [];
    const rx = new Session(Buffer.alloc(16), Buffer.alloc(8), [], { eliminationTtlMs: 2000, eliminationWindowPackets: 1024, maxFrameBytes: 66000 }, (ps) => {
      for (const p of ps) delivered.push(packetNumber(p));
    }, memoryLogger('error'), undefined);
    rx.mode = 'aggregate';
    const sock = new FakeSocket();
    rx.attach(testLink(sock));
    // 1 is on a slow link: 2..3000 arrive first and wait for it (3000 is within the 8192-packet ring).
    for (let seq = 2; seq <= 3000; seq += 100) sock.emit('data', Buffer.concat(Array.from({ length: Math.min(100, 3001 - seq) }, (_, k) => frame(seq + k))));
    assert.equal(delivered.length, 0);
    sock.emit('data', frame(1));
    assert.equal(rx.eliminator.stale, 0, 'not judged stale');
    assert.equal(delivered.length, 3000, 'all delivered');
    assert.deepEqual(delivered.slice(0, 3), [1, 2, 3], 'in order');
  });
});
