// A link is declared dead only after the sockets were read: on a busy process
// the peer's PINGs may be waiting unread when the timer fires.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { PONG_BURST, PONG_INTERVAL_MS } from '../../src/core/link.js';
import { encodeToken, FrameType } from '../../src/protocol/frame.js';
import { FakeSocket, upLink } from '../helpers/fake-socket.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('link liveness', () => {
  it('silent past dead_interval_ms: closed as dead after the sockets were polled', async () => {
    const sock = new FakeSocket();
    const l = upLink(sock, { deadIntervalMs: 100 });
    l.lastRxMs = performance.now() - 500;
    l.tick(performance.now());
    assert.equal(l.state, 'up', 'not closed inside the timer');
    await turn();
    assert.equal(l.state, 'closed', 'closed once the poll phase brought nothing');
    assert.ok(l.declaredDead, 'declared dead');
    assert.ok(sock.ended || sock.destroyed, 'the socket was closed');
  });

  it('data that was waiting in the socket, read in the same loop turn, keeps the link up', async () => {
    const sock = new FakeSocket();
    const l = upLink(sock, { deadIntervalMs: 100 });
    l.lastRxMs = performance.now() - 500;
    l.tick(performance.now());
    // What the poll phase does when the socket had data: the link hears from its peer.
    l.lastRxMs = performance.now();
    await turn();
    assert.equal(l.state, 'up', 'still up');
    assert.equal(l.declaredDead, false, 'not declared dead');
    l.tick(performance.now());
    l.tick(performance.now());
    await turn();
    assert.equal(l.state, 'up', 'ticks while it is heard from change nothing');
  });

  it('awaiting a reply (an open-mode server after WELCOME): silence up to then is not death, a frame ends the wait', async () => {
    const sock = new FakeSocket();
    const l = upLink(sock, { deadIntervalMs: 100 });
    l.lastRxMs = performance.now() - 500;
    l.awaitReply(1000);
    l.tick(performance.now());
    await turn();
    assert.equal(l.state, 'up', 'a round trip longer than dead_interval_ms is not death');
    l.tick(performance.now() + 1100);
    await turn();
    // The re-check after the poll phase runs at the real time, still inside the wait.
    assert.equal(l.state, 'up', 'the verdict is checked again after the poll phase');

    const heardSock = new FakeSocket();
    const heard = upLink(heardSock, { deadIntervalMs: 100 });
    heard.awaitReply(60_000);
    heardSock.emit('data', Buffer.alloc(0)); // the peer's first bytes: the wait is over
    heard.lastRxMs = performance.now() - 500;
    heard.tick(performance.now());
    await turn();
    assert.equal(heard.state, 'closed', 'after the reply, dead_interval_ms alone counts again');
  });
});

describe('PONGs', () => {
  it('PINGs past the rate (a burst of PONG_BURST, then one per PONG_INTERVAL_MS) go unanswered and are counted', async () => {
    const sock = new FakeSocket();
    const l = upLink(sock, { deadIntervalMs: 60_000 });
    const ping = encodeToken(FrameType.Ping, 12345);
    const pongs = (): number => sock.written.filter((b) => b.length === ping.length && b[5] === FrameType.Pong).length;
    const flood = 200;
    const t0 = performance.now();
    // What the session does with each PING frame it reads (the token after the 8-byte header).
    for (let i = 0; i < flood; i++) l.handleKeepalive(FrameType.Ping, ping, 8);
    const ms = performance.now() - t0;
    const answered = pongs();
    assert.ok(answered >= PONG_BURST, `the burst is answered (${answered})`);
    assert.ok(answered <= PONG_BURST + Math.ceil(ms / PONG_INTERVAL_MS) + 1, `at most the burst and the rate: ${answered} of ${flood} in ${ms.toFixed(1)} ms`);
    assert.equal(l.stats.pingsOverRate, flood - answered, 'the rest counted');
    await new Promise((r) => setTimeout(r, PONG_INTERVAL_MS * 4));
    l.handleKeepalive(FrameType.Ping, ping, 8);
    assert.equal(pongs(), answered + 1, 'a PING at the keepalive pace is answered again');
  });
});
