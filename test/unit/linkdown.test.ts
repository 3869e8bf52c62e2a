// LINKDOWN names a link by its id only. A late one (it waited behind data on
// the link that carried it) must not close the new connection that replaced
// the dead one in the meantime: a connection younger than a dead interval
// cannot have been silent that long.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { it } from 'node:test';
import { Link } from '../../src/core/link.js';
import { CloseCode, encodeLinkDown } from '../../src/protocol/frame.js';
import { createLogger } from '../../src/log.js';
import { FakeSocket, testLink, testSession } from '../helpers/fake-socket.js';

const DEAD_MS = 80;
const quiet = createLogger('error', 'client', { sink: () => {} });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function linkZero(sock: FakeSocket): Link {
  return new Link(
    sock as unknown as Socket,
    { id: 0, name: 'l0', maxFrameBytes: 66000, queueMaxBytes: 1 << 20, queueMaxAgeMs: 1000, keepaliveIntervalMs: 1e6, deadIntervalMs: DEAD_MS },
    { onFrame() {}, onChunkEnd() {}, onClose() {} },
    quiet,
  );
}

it('a LINKDOWN about a link that a new connection replaced less than a dead interval ago leaves the new one up; a later one closes it', async () => {
  const s = testSession();
  const via = new FakeSocket();
  s.attach(testLink(via, 1));
  s.attach(linkZero(new FakeSocket()));
  await sleep(DEAD_MS + 20);
  const replacement = linkZero(new FakeSocket());
  s.attach(replacement);
  try {
    via.emit('data', encodeLinkDown(0));
    assert.equal(replacement.state, 'up', 'the report was about the connection it replaced');
    await sleep(DEAD_MS + 20);
    via.emit('data', encodeLinkDown(0));
    assert.equal(replacement.state, 'closed', 'older than a dead interval: the report is about it');
  } finally {
    s.close(CloseCode.Shutdown, 'test over');
  }
});
