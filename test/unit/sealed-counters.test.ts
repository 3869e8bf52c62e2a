// What a keyed session counts as tampering: a record whose tag does not verify,
// not one it refuses before any tag is checked (a counter past the limit).
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { CloseCode, encodeToken, FrameType } from '../../src/protocol/frame.js';
import { FakeSocket, keyRingPair, testLink, testSession } from '../helpers/fake-socket.js';

/** The record's counter field: after the 8-byte frame header and the 4-byte receiver index. */
const COUNTER_OFFSET = 12;

it('a record counter past the limit closes the link as a protocol error, not as tampering; a bad tag is tampering', () => {
  const [txKeys, rxKeys] = keyRingPair();
  const tx = testSession(() => {}, txKeys);
  const rx = testSession(() => {}, rxKeys);
  const out = new FakeSocket();
  const sender = testLink(out, 0);
  tx.attach(sender);
  try {
    sender.sendControl(encodeToken(FrameType.Ping, 1));
    sender.sendControl(encodeToken(FrameType.Ping, 2));
    const [first, second] = out.written as [Buffer, Buffer];

    const a = new FakeSocket();
    const la = testLink(a, 0);
    rx.attach(la);
    a.emit('data', first);
    assert.equal(la.state, 'up', 'an authentic record is taken');
    const beyond = Buffer.from(second);
    beyond.writeBigUInt64BE(2n ** 48n, COUNTER_OFFSET);
    a.emit('data', beyond);
    assert.equal(la.state, 'closed', 'a counter of 2^48 closes the link');
    assert.equal(rx.stats.tampered, 0, 'refused before any tag was checked: not tampering');

    const b = new FakeSocket();
    const lb = testLink(b, 0);
    rx.attach(lb);
    const forged = Buffer.from(second);
    forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
    b.emit('data', forged);
    assert.equal(lb.state, 'closed');
    assert.equal(rx.stats.tampered, 1, 'a tag that does not verify is');
  } finally {
    tx.close(CloseCode.Shutdown, 'test over');
    rx.close(CloseCode.Shutdown, 'test over');
  }
});
