// A peer that sends and never reads cannot grow our send queue with our answers
// (PONGs, ACKs), and packets still queued when a link closes are counted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CONTROL_QUEUE_MAX_BYTES } from '../../src/core/link.js';
import { CloseCode, encodeData, encodeToken, FrameType } from '../../src/protocol/frame.js';
import { FakeSocket, testLink, testSession } from '../helpers/fake-socket.js';
import { numbered } from '../helpers/packets.js';

const QUEUE_MAX = 64 * 1024;

describe('link send queue bounds', () => {
  it('a peer that sends PINGs and never reads cannot grow our send queue past its bound (PONGs are control frames, never dropped)', () => {
    const s = testSession();
    const sock = new FakeSocket();
    const l = testLink(sock, 0, QUEUE_MAX);
    s.attach(l);
    sock.full = true;
    // Our socket takes nothing more (the peer does not read); the peer streams PINGs.
    const ping = encodeToken(FrameType.Ping, 1);
    const n = 20_000; // 320 KB of PINGs, five times the queue bound in PONGs
    const chunk = Buffer.concat(Array.from({ length: 1000 }, () => ping));
    for (let i = 0; i < n / 1000; i++) sock.emit('data', chunk);
    assert.equal(l.state, 'up', 'the link is alive (the peer is heard)');
    assert.ok(l.queueBytes <= QUEUE_MAX, `send queue holds ${l.queueBytes} bytes of PONGs, bound ${QUEUE_MAX}`);
  });

  it('a peer that sends data and never reads cannot grow our send queue past its bound with ACKs (aggregate)', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const sock = new FakeSocket();
    const l = testLink(sock, 0, QUEUE_MAX);
    s.attach(l);
    sock.full = true;
    // One DATA frame of 66,000 bytes a read: each read asks for an ACK at once (ACK_BYTES).
    const chunk = encodeData(1, Buffer.alloc(65_900, 0x45));
    for (let i = 0; i < 5000; i++) sock.emit('data', chunk);
    assert.equal(l.state, 'up');
    assert.ok(l.queueBytes <= QUEUE_MAX, `send queue holds ${l.queueBytes} bytes of ACKs, bound ${QUEUE_MAX}`);
  });

  it('one PING waits at a time on a link whose peer does not read (PINGs are control frames, never dropped)', () => {
    const sock = new FakeSocket();
    const l = testLink(sock, 0, QUEUE_MAX);
    l.state = 'up';
    sock.full = true;
    l.sendData(encodeData(1, numbered(0)), 1, 0); // the stream writer holds it: the link waits for 'drain'
    const t0 = performance.now();
    for (let k = 1; k <= 9; k++) l.tick(t0 + k * 1e6); // nine keepalive intervals (testLink: 1e6 ms), inside the dead interval
    assert.equal(l.state, 'up');
    assert.equal(l.queueBytes, encodeToken(FrameType.Ping, 1).length, `one PING queued, not nine (${l.queueBytes} bytes)`);
  });

  it('control frames a peer never reads close the link past CONTROL_QUEUE_MAX_BYTES (a rekey answered each second would pile up for ever)', () => {
    const sock = new FakeSocket();
    const l = testLink(sock, 0, QUEUE_MAX);
    l.state = 'up';
    sock.full = true;
    l.sendData(encodeData(1, numbered(0)), 1, 0);
    const response = Buffer.alloc(100, 0x55);
    let sent = 0;
    while (l.state === 'up' && sent < 10_000) {
      l.sendClear(response);
      sent++;
    }
    assert.equal(l.state, 'closed', `closed after ${sent} frames`);
    assert.ok(sent * response.length > CONTROL_QUEUE_MAX_BYTES && (sent - 1) * response.length <= CONTROL_QUEUE_MAX_BYTES + response.length, `at the bound: ${sent} frames of ${response.length} bytes`);
    assert.equal(l.queueBytes, 0, 'and its queue is let go');
  });

  it('a striped packet a full link queue drops is counted dropped, not also striped', () => {
    const s = testSession();
    s.mode = 'aggregate';
    const socks = [new FakeSocket(), new FakeSocket()];
    const links = socks.map((k, i) => testLink(k, i, 10_000));
    for (const l of links) s.attach(l);
    for (const k of socks) k.full = true;
    for (let i = 0; i < 40; i++) s.sendFrames(Buffer.alloc(1000, 7), 1, 0, false, false, true);
    const queueFull = links.reduce((n, l) => n + l.stats.drops.queue_full, 0);
    assert.ok(queueFull > 0, 'the queues filled');
    assert.equal(s.stats.stripedPackets + queueFull, s.stats.txPackets, 'each packet counted once: striped or dropped');
  });

  it('packets still queued on a link when it closes are counted as dropped', () => {
    const sock = new FakeSocket();
    const l = testLink(sock, 0, QUEUE_MAX);
    l.state = 'up';
    // Ten DATA frames in one batch: the stream writer takes the first, nine wait in our queue.
    const batch = Buffer.concat(Array.from({ length: 10 }, (_, i) => encodeData(i + 1, numbered(i))));
    sock.full = true;
    l.sendData(batch, 10, 0);
    l.sendData(Buffer.concat(Array.from({ length: 5 }, (_, i) => encodeData(i + 11, numbered(i + 10)))), 5, 0);
    const handed = l.stats.txPackets;
    assert.equal(handed, 1, 'one packet reached the socket');
    l.close(CloseCode.Shutdown, 'test');
    const dropped = Object.values(l.stats.drops).reduce((a, b) => a + b, 0);
    assert.equal(handed + dropped, 15, `every packet is either sent or dropped by a counted reason (sent ${handed}, counted drops ${dropped})`);
  });
});
