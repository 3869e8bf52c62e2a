// A link is declared dead only after the sockets were read: on a busy process
// the peer's PINGs may be waiting unread when the timer fires.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { PONG_BURST, PONG_INTERVAL_MS } from '../../src/core/link.js';
import { CloseCode, encodeData, encodeToken, FrameType } from '../../src/protocol/frame.js';
import { FakeSocket, keyRingPair, testLink, testSession, upLink } from '../helpers/fake-socket.js';
import { numbered } from '../helpers/packets.js';

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

  it('keyed, duplicate mode: a copy that lost the race proves its slow link alive if its tag verifies; a replay of the link\'s own, or a forgery, does not', async () => {
    const [txKeys, rxKeys] = keyRingPair();
    const tx = testSession(() => {}, txKeys);
    const rx = testSession(() => {}, rxKeys);
    const [sa, sb, ra, rb] = [new FakeSocket(), new FakeSocket(), new FakeSocket(), new FakeSocket()];
    tx.attach(testLink(sa, 0));
    tx.attach(testLink(sb, 1));
    const keepalive = 20;
    const fast = testLink(ra, 0, 1 << 20, keepalive);
    const slow = testLink(rb, 1, 1 << 20, keepalive);
    rx.attach(fast);
    rx.attach(slow);
    // Five records, a copy of each on both links; the fast link brings them all first.
    for (let i = 1; i <= 5; i++) tx.sendFrames(encodeData(i, numbered(i)), 1, performance.now(), false);
    assert.equal(sb.written.length, 5);
    // What each far end reads is its own copy (one buffer went to both fake sockets; opening decrypts in place).
    const slowCopies = sb.written.map((w) => Buffer.from(w));
    for (const w of sa.written) ra.emit('data', Buffer.from(w));
    assert.equal(rx.stats.rxPackets, 5);
    const wait = (): Promise<void> => new Promise((r) => setTimeout(r, keepalive));
    const quiet = (): number => (slow.lastRxMs = performance.now() - 10_000);
    const heard = (since: number): boolean => slow.lastRxMs > since;

    let since = quiet();
    rb.emit('data', slowCopies[1]);
    assert.ok(heard(since), 'an authentic copy newer than any this link carried: alive');
    assert.equal(rx.stats.records.duplicate, 1);

    await wait();
    since = quiet();
    rb.emit('data', slowCopies[0]);
    assert.ok(!heard(since), "an older counter than the link's newest (a replay of its own records): no proof");

    await wait();
    since = quiet();
    const forged = slowCopies[2] as Buffer;
    forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
    rb.emit('data', forged);
    assert.ok(!heard(since), 'a forged tag: no proof (and, a duplicate, no error either)');
    assert.equal(slow.state, 'up');

    // A proof holds for its own record only: a record under an unknown index right after one proves nothing.
    await wait();
    since = quiet();
    rb.emit('data', Buffer.from(slowCopies[3] as Buffer));
    assert.ok(heard(since), 'an authentic newer copy: alive');
    await wait();
    since = quiet();
    const junk = Buffer.from(slowCopies[3] as Buffer);
    junk.writeUInt32BE(0xdeadbeef, 8); // the receiver index, after the 8-byte frame header
    rb.emit('data', junk);
    assert.ok(!heard(since), 'unknown_key after a proof: no life (the last proof does not carry over)');

    // At most one proof per half keepalive: the next copy right away is not decrypted.
    since = quiet();
    rb.emit('data', slowCopies[4]);
    assert.ok(!heard(since), 'within half a keepalive of the last attempt: not looked at');
    assert.equal(rx.stats.records.duplicate, 5);
    tx.close(CloseCode.Shutdown, 'done');
    rx.close(CloseCode.Shutdown, 'done');
  });
});
