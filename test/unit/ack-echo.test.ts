// ACKs never answer ACKs, sealed or not: a keyed aggregate session that sent
// one ACK-only record must not start an endless exchange of ACKs with its peer
// (every authentic record asked for an ACK, so each side answered the other's
// ACK every few milliseconds for as long as the link was up).
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { CloseCode, encodeAck } from '../../src/protocol/frame.js';
import { FakeSocket, keyRingPair, testLink, testSession } from '../helpers/fake-socket.js';

it('a sealed ACK-only record is not acknowledged: one ACK, no echo', async () => {
  const [aKeys, bKeys] = keyRingPair();
  const a = testSession(() => {}, aKeys);
  const b = testSession(() => {}, bKeys);
  a.mode = 'aggregate';
  b.mode = 'aggregate';
  const sa = new FakeSocket();
  const sb = new FakeSocket();
  const la = testLink(sa, 0);
  const lb = testLink(sb, 0);
  a.attach(la);
  b.attach(lb);
  let ia = 0;
  let ib = 0;
  let records = 0;
  const pump = (): void => {
    for (; ia < sa.written.length; ia++, records++) sb.emit('data', sa.written[ia]);
    for (; ib < sb.written.length; ib++, records++) sa.emit('data', sb.written[ib]);
  };
  try {
    la.sendControl(encodeAck(0, 0));
    const t0 = performance.now();
    while (performance.now() - t0 < 300) {
      pump();
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(la.state, 'up');
    assert.equal(lb.state, 'up');
    assert.equal(records, 1, `records that crossed in 300 ms after one ACK: ${records}`);
  } finally {
    a.close(CloseCode.Shutdown, 'test over');
    b.close(CloseCode.Shutdown, 'test over');
  }
});
