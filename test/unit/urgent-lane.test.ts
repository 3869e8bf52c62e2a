// Sparse flows (a ping) pass bulk data queued on a link, within bounds; bulk flows never do.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { performance } from 'node:perf_hooks';
import { DECAY_MS, FLOW_BUCKETS, FlowClassifier, flowHash, SPARSE_BYTES } from '../../src/core/flows.js';
import { RETAIN_MAX_BYTES, URGENT_MAX_PASSED_RECORDS, URGENT_QUEUE_MAX_BYTES } from '../../src/core/link.js';
import { FakeSocket, upLink as link } from '../helpers/fake-socket.js';

/** An IPv4 packet of `len` bytes: protocol, addresses and ports as given. */
function ipv4(len: number, proto: number, src: string, dst: string, sport = 0, dport = 0): Buffer {
  const p = Buffer.alloc(len);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p[9] = proto;
  src.split('.').forEach((o, i) => (p[12 + i] = Number(o)));
  dst.split('.').forEach((o, i) => (p[16 + i] = Number(o)));
  if (len >= 24) {
    p.writeUInt16BE(sport, 20);
    p.writeUInt16BE(dport, 22);
  }
  return p;
}

describe('flow classifier', () => {
  it('a ping beside a bulk TCP flow: the ping stays urgent, the bulk flow stops being urgent once it has sent SPARSE_BYTES', () => {
    const f = new FlowClassifier(1); // a fixed seed: with the process's, the two share a bucket once in 4,096 runs
    f.decay(0);
    const ping = ipv4(84, 1, '10.0.0.2', '10.0.0.1');
    let bulkUrgent = 0;
    for (let i = 0; i < 100; i++) {
      const seg = ipv4(1400, 6, '10.0.0.2', '10.0.0.1', 40000, 5201);
      if (f.urgent(seg, 0, seg.length)) bulkUrgent++;
      if (i % 10 === 0) assert.ok(f.urgent(ping, 0, ping.length), `ping ${i / 10} is urgent`);
    }
    assert.equal(bulkUrgent, Math.floor(SPARSE_BYTES / 1400), 'bulk is urgent only for its first SPARSE_BYTES');
  });

  it('a large packet is never urgent, and a quiet flow becomes urgent again after the counters decay', () => {
    const f = new FlowClassifier();
    f.decay(0);
    const big = ipv4(9000, 17, '10.0.0.2', '10.0.0.1', 1, 2);
    assert.equal(f.urgent(big, 0, big.length), false, 'a 9000-byte packet is not urgent');
    const seg = ipv4(1400, 6, '10.0.0.2', '10.0.0.1', 40000, 5201);
    for (let i = 0; i < 100; i++) f.urgent(seg, 0, seg.length);
    assert.equal(f.urgent(seg, 0, seg.length), false, 'bulk now');
    f.decay(DECAY_MS * 20);
    assert.equal(f.urgent(seg, 0, seg.length), true, 'after 20 decay periods the flow is quiet again');
  });

  it('counters halve once per DECAY_MS on average however far apart the batches are: the rest of a period carries over', () => {
    const f = new FlowClassifier();
    f.decay(0);
    const seg = ipv4(1400, 6, '10.0.0.2', '10.0.0.1', 40000, 5201);
    // Enough that two halvings leave the flow bulk and three make it sparse again.
    const n = Math.floor(((SPARSE_BYTES - 1400) * 8) / 1400);
    for (let i = 0; i < n; i++) f.urgent(seg, 0, seg.length);
    f.decay(1.5 * DECAY_MS);
    f.decay(3 * DECAY_MS);
    assert.equal(f.urgent(seg, 0, seg.length), true, 'batches 1.5 periods apart: three halvings in three periods, not two');
  });

  it('every field of the 5-tuple spreads flows over the buckets (the table index is the low bits)', () => {
    const spread = (make: (i: number) => Buffer): number => new Set(Array.from({ length: 4000 }, (_, i) => flowHash(make(i), 0, 60) & (FLOW_BUCKETS - 1))).size;
    // 4,000 flows into 4,096 buckets at random fill some 2,500; one field ignored by the low bits fills 1.
    const cases: Array<[string, (i: number) => Buffer]> = [
      ['source port', (i) => ipv4(60, 6, '10.0.0.2', '10.0.0.1', 20_000 + i, 443)],
      ['destination port', (i) => ipv4(60, 6, '10.0.0.2', '10.0.0.1', 40_000, 1 + i)],
      ['source address', (i) => ipv4(60, 17, `10.0.${i >> 8}.${i & 255}`, '10.0.0.1', 5000, 53)],
      ['destination address', (i) => ipv4(60, 17, '10.0.0.2', `10.${i >> 8}.0.${i & 255}`, 5000, 53)],
    ];
    for (const [field, make] of cases) {
      const n = spread(make);
      assert.ok(n > 2000, `${field}: 4,000 flows in ${n} buckets`);
    }
  });

  it('the hash tells flows apart by ports and protocol, and reads nothing past the packet', () => {
    const a = flowHash(ipv4(60, 6, '10.0.0.2', '10.0.0.1', 1000, 80), 0, 60);
    const b = flowHash(ipv4(60, 6, '10.0.0.2', '10.0.0.1', 1001, 80), 0, 60);
    const c = flowHash(ipv4(60, 17, '10.0.0.2', '10.0.0.1', 1000, 80), 0, 60);
    assert.notEqual(a, b, 'another source port is another flow');
    assert.notEqual(a, c, 'another protocol is another flow');
    assert.equal(flowHash(Buffer.from([0x45, 0, 0]), 0, 3), 0, 'a truncated packet hashes to 0, no throw');
    const short = ipv4(22, 6, '10.0.0.2', '10.0.0.1');
    assert.equal(typeof flowHash(short, 0, 22), 'number', 'ports past the end are not read');
  });

  it('a flow idle for 3.2 s or more is sparse again (decay by 32 periods or more must clear the counters)', () => {
    const f = new FlowClassifier();
    f.decay(0);
    const seg = ipv4(1400, 6, '10.0.0.2', '10.0.0.1', 40000, 5201);
    for (let i = 0; i < 100; i++) f.urgent(seg, 0, seg.length);
    assert.equal(f.urgent(seg, 0, seg.length), false, 'bulk now');
    // 31 periods: counters shifted by 31, the flow is sparse again.
    const g = new FlowClassifier();
    g.decay(0);
    for (let i = 0; i < 100; i++) g.urgent(seg, 0, seg.length);
    g.decay(DECAY_MS * 31);
    assert.equal(g.urgent(seg, 0, seg.length), true, 'after 31 quiet periods: sparse');
    // 40 periods (4 s): longer quiet, so at least as sparse.
    f.decay(DECAY_MS * 40);
    assert.ok(SPARSE_BYTES > seg.length);
    assert.equal(f.urgent(seg, 0, seg.length), true, 'after 40 quiet periods: sparse too');
  });
});

describe('link urgent lane', () => {
  it('a full queue drops fresh data as queue_full, but not striped data another link gave back (its only copy)', () => {
    const sock = new FakeSocket();
    const l = link(sock);
    sock.full = true;
    const now = performance.now();
    l.sendData(Buffer.alloc(1000, 1), 1, now); // written; the socket pushes back
    const chunk = 256 * 1024;
    for (let i = 0; i < 4; i++) l.sendData(Buffer.alloc(chunk, 2), 100, now, false, true); // 1 MiB: the bound
    assert.equal(l.stats.drops.queue_full, 0, 'up to queue_max_bytes nothing is dropped');
    l.sendData(Buffer.alloc(chunk, 3), 100, now, false, true);
    assert.equal(l.stats.drops.queue_full, 100, 'fresh striped data past the bound is dropped and counted');
    l.sendData(Buffer.alloc(chunk, 4), 100, now, false, true, undefined, RETAIN_MAX_BYTES);
    assert.equal(l.stats.drops.queue_full, 100, 'data given back by another link is queued past the bound');
    assert.equal(l.queueBytes, 5 * chunk, 'the queue holds it');
    // Past the bound by more than one link's unacknowledged maximum, given-back data is dropped too: memory stays bounded.
    l.sendData(Buffer.alloc(RETAIN_MAX_BYTES, 5), 7, now, false, true, undefined, RETAIN_MAX_BYTES);
    assert.equal(l.stats.drops.queue_full, 107, 'given-back data past queue_max_bytes + RETAIN_MAX_BYTES is dropped and counted');
    sock.full = false;
    sock.emit('drain');
    assert.equal(l.queueBytes, 0, 'the queue empties when the socket drains');
    assert.deepEqual(sock.written.map((b) => b[0]), [1, 2, 2, 2, 2, 4], 'in order, without the dropped ones');
  });

  it('urgent data queued behind bulk data leaves first when the socket drains, and is counted', () => {
    const sock = new FakeSocket();
    const l = link(sock);
    sock.full = true;
    l.sendData(Buffer.from('bulk0'), 1, performance.now()); // written, and the socket pushes back
    l.sendData(Buffer.from('bulk1'), 1, performance.now());
    l.sendData(Buffer.from('bulk2'), 1, performance.now());
    l.sendData(Buffer.from('ping'), 1, performance.now(), true);
    assert.equal(l.stats.urgentPassed, 1, 'the ping passed queued bulk data');
    sock.full = false;
    sock.emit('drain');
    assert.deepEqual(
      sock.written.map((b) => b.toString()),
      ['bulk0', 'ping', 'bulk1', 'bulk2'],
      'the ping leaves before the queued bulk',
    );
  });

  it('the urgent queue is bounded: beyond it urgent data waits in order, and nothing is lost', () => {
    const sock = new FakeSocket();
    const l = link(sock);
    sock.full = true;
    l.sendData(Buffer.from('first'), 1, performance.now());
    l.sendData(Buffer.from('bulk'), 1, performance.now());
    const n = Math.floor(URGENT_QUEUE_MAX_BYTES / 1000) + 3;
    for (let i = 0; i < n; i++) l.sendData(Buffer.alloc(1000, i), 1, performance.now(), true);
    sock.full = false;
    sock.emit('drain');
    assert.equal(sock.written.length, n + 2, 'every buffer was written');
    const bulkAt = sock.written.findIndex((b) => b.toString() === 'bulk');
    assert.equal(bulkAt, 1 + Math.floor(URGENT_QUEUE_MAX_BYTES / 1000), 'bulk left after the urgent ones that fit the bound');
    assert.equal(l.stats.drops.queue_full, 0, 'nothing dropped');
  });

  it('urgent data does not pass more records than half the replay window', () => {
    const sock = new FakeSocket();
    const l = link(sock);
    sock.full = true;
    l.sendData(Buffer.from('x'), 1, performance.now());
    for (let i = 0; i < URGENT_MAX_PASSED_RECORDS; i++) l.sendData(Buffer.from('b'), 1, performance.now());
    l.sendData(Buffer.from('u'), 1, performance.now(), true);
    assert.equal(l.stats.urgentPassed, 0, 'too many records queued: the urgent record waits in order');
    sock.full = false;
    sock.emit('drain');
    assert.equal(sock.written.at(-1)?.toString(), 'u', 'it left last');
  });

  it('the time data waited in the queue is measured: smoothed and the most', () => {
    const sock = new FakeSocket();
    const l = link(sock);
    sock.full = true;
    l.sendData(Buffer.from('first'), 1, performance.now());
    l.sendData(Buffer.from('late'), 1, performance.now() - 50);
    sock.full = false;
    sock.emit('drain');
    assert.ok(l.stats.queueDelayMaxMs >= 50 && l.stats.queueDelayMaxMs < 200, `waited about 50 ms (${l.stats.queueDelayMaxMs})`);
    assert.ok(l.stats.queueDelayMs > 0 && l.stats.queueDelayMs <= l.stats.queueDelayMaxMs, `smoothed ${l.stats.queueDelayMs} ms`);
  });
});
