import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CHECKPOINTS_PER_TTL, Eliminator, Verdict, type EliminationTable } from '../../src/core/eliminator.js';
import { loadAddon } from '../../src/tun/loader.js';

const { Accept, Duplicate, Stale } = Verdict;

// Every test runs on the TypeScript table (the specification) and on the addon's, which the
// native receive path shares with the session (core/fast-path.ts).
const NativeEliminator = loadAddon().Eliminator;
const tables: [string, (opts: { windowPackets: number; ttlMs: number }) => EliminationTable][] = [
  ['Eliminator', (o) => new Eliminator(o)],
  ['the addon\'s Eliminator', (o) => {
    assert.ok(NativeEliminator, 'the addon has an Eliminator');
    return new NativeEliminator(o.windowPackets, o.ttlMs);
  }],
];

for (const [name, make] of tables) {
function elim(windowPackets = 1024, ttlMs = 1000): EliminationTable {
  return make({ windowPackets, ttlMs });
}

describe(name, () => {
  it('keeps the first copy and eliminates the second, whichever link is first', () => {
    const e = elim();
    assert.equal(e.check(1), Accept);
    assert.equal(e.check(1), Duplicate);
    assert.equal(e.check(2), Accept);
    assert.equal(e.check(2), Duplicate);
    assert.deepEqual([e.accepted, e.duplicates, e.stale], [2, 2, 0]);
  });

  it('delivers packets the host really sent twice: they have two sequence numbers', () => {
    // Byte-identical IP packets get seq 5 and 6 at the sender; each is accepted once.
    const e = elim();
    const verdicts = [5, 5, 6, 6].map((s) => e.check(s));
    assert.deepEqual(verdicts, [Accept, Duplicate, Accept, Duplicate]);
    assert.equal(e.accepted, 2);
  });

  it('accepts out-of-order first copies inside the window (the other link was ahead)', () => {
    const e = elim();
    assert.deepEqual([10, 8, 9, 7, 8, 10].map((s) => e.check(s)), [Accept, Accept, Accept, Accept, Duplicate, Duplicate]);
  });

  it('treats a copy older than the window as stale, never as new', () => {
    const e = elim(1024);
    for (let s = 1; s <= 5000; s++) e.check(s);
    assert.equal(e.check(5000 - 1024), Stale);
    assert.equal(e.check(1), Stale);
    assert.equal(e.check(5000 - 1023), Duplicate);
  });

  it('is exact across the ring wrap: a slot reused by a later seq does not hide a duplicate', () => {
    const e = elim(1024);
    // Every seq arrives on link A; link B lags by up to 1000 packets and delivers them all again.
    for (let s = 1; s <= 20_000; s++) {
      assert.equal(e.check(s), Accept);
      if (s > 1000) assert.equal(e.check(s - 1000), Duplicate);
    }
    assert.equal(e.duplicates, 19_000);
    assert.equal(e.stale, 0);
  });

  it('makes a copy stale once it is later than the TTL behind a newer packet', () => {
    const ttl = 1000;
    const e = elim(1 << 16, ttl);
    let now = 0;
    e.tick(now);
    for (let s = 1; s <= 100; s++) e.check(s);
    // The slow link's copies of 1..100 are still within the TTL: duplicates.
    now += ttl / 2;
    e.tick(now);
    assert.equal(e.check(50), Duplicate);
    // Packet 101 was lost on the fast link; its copy on the slow link is late but within TTL: delivered.
    assert.equal(e.check(102), Accept);
    assert.equal(e.check(101), Accept);
    // Far past the TTL, copies of anything accepted before are stale.
    for (let i = 0; i < 3 * CHECKPOINTS_PER_TTL; i++) {
      now += ttl / CHECKPOINTS_PER_TTL;
      e.tick(now);
    }
    assert.equal(e.check(100), Stale);
    assert.equal(e.check(102), Stale);
    assert.ok(e.floorSeq >= 102);
  });

  it('keeps the time bound exact across 2^31 and 2^32 (sequence numbers are not 32-bit)', () => {
    const ttl = 800;
    for (const base of [2 ** 31 - 3, 2 ** 32 - 3, 2 ** 40]) {
      const e = elim(1 << 10, ttl);
      let now = 0;
      e.tick(now);
      for (let s = base; s < base + 6; s++) assert.equal(e.check(s), Accept, `first copy of ${s}`);
      const step = ttl / CHECKPOINTS_PER_TTL;
      for (let i = 0; i < CHECKPOINTS_PER_TTL + 2; i++) e.tick((now += step));
      assert.equal(e.floorSeq, base + 5, `floor past ${base}`);
      assert.equal(e.check(base + 5), Stale);
      assert.equal(e.check(base + 6), Accept, 'the next number is new');
      assert.equal(e.check(base + 6), Duplicate);
    }
  });

  it('delivers a gap packet arriving within the TTL, drops it after', () => {
    const ttl = 800;
    const e = elim(1 << 16, ttl);
    let now = 0;
    e.tick(now);
    e.check(1);
    e.check(3); // 2 is missing on the fast link
    const step = ttl / CHECKPOINTS_PER_TTL;
    for (let t = step; t <= ttl + 2 * step; t += step) e.tick((now = t));
    assert.equal(e.check(2), Stale, 'a first copy later than the TTL is not delivered');
  });

  it('judges a striped packet (one copy only) by the ring alone: late past the TTL it is still delivered, once, and stale only below the ring', () => {
    const ttl = 800;
    const e = elim(1024, ttl);
    e.tick(0);
    e.check(1, true);
    e.check(3, true); // 2 went on a link that then died: it is resent after the TTL
    const step = ttl / CHECKPOINTS_PER_TTL;
    for (let t = step; t <= ttl + 2 * step; t += step) e.tick(t);
    assert.equal(e.check(2), Stale, 'a copy of a packet sent on every link: stale past the TTL');
    assert.equal(e.check(2, true), Accept, 'the one copy of a striped packet: delivered');
    assert.equal(e.check(2, true), Duplicate, 'and only once');
    assert.equal(e.check(3, true), Duplicate, 'one delivered before the TTL is still known');
    e.check(2000, true); // the ring moves past 2 and 3
    assert.equal(e.check(5, true), Stale, 'below the ring: stale (it can no longer be told from a duplicate)');
  });

  it('uses constant memory whatever the traffic', () => {
    const e = elim(1 << 12);
    // What the object holds, field by field: a number, or a container and its size. A table that
    // grew with the traffic (a Map of sequence numbers, an array of times) shows up here.
    const shape = (): string[] =>
      Object.entries(e).map(([k, v]: [string, unknown]) => {
        if (v === null || typeof v !== 'object') return `${k}: ${typeof v}`;
        if (ArrayBuffer.isView(v)) return `${k}: ${v.constructor.name} ${v.byteLength}`;
        const size = (v as { size?: number; length?: number }).size ?? (v as { length?: number }).length;
        return `${k}: ${v.constructor.name} ${size ?? Object.keys(v).length}`;
      });
    const before = shape();
    for (let s = 1; s <= 200_000; s += 3) e.check(s);
    for (let t = 0; t < 100_000; t += 10) e.tick(t);
    assert.deepEqual(shape(), before, 'the same fields, each the same size');
    assert.ok(e.stateBytes < 64 * 1024);
  });

  it('survives sequence numbers beyond 2^32', () => {
    const e = elim();
    const base = 2 ** 32 + 17;
    assert.equal(e.check(base), Accept);
    assert.equal(e.check(base), Duplicate);
    assert.equal(e.check(base + 1024), Accept);
    assert.equal(e.check(base), Stale);
  });

  it('reset starts a new sequence space', () => {
    const e = elim();
    for (let s = 1; s <= 100; s++) e.check(s);
    e.reset();
    assert.equal(e.check(1), Accept);
    assert.equal(e.highest, 1);
  });

  it('rounds the window up to a power of two and rejects nonsense', () => {
    assert.equal(elim(1000).windowPackets, 1024);
    assert.throws(() => make({ windowPackets: 0, ttlMs: 10 }), RangeError);
    assert.throws(() => make({ windowPackets: 16, ttlMs: 0 }), RangeError);
  });

  it('agrees with a plain model (a set of accepted numbers and a floor) over 200,000 random checks', () => {
    let seed = 0x1e1e;
    const rnd = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    for (const window of [32, 64, 1024]) {
      const e = elim(window);
      const seen = new Set<number>();
      let top = 0;
      let floor = 0;
      for (let i = 0; i < 200_000 / 3; i++) {
        const r = rnd(100);
        // Mostly near the top (reordering and copies), sometimes far ahead or far behind.
        const seq = Math.max(1, r < 5 ? top + 1 + rnd(window * 3) : r < 10 ? top - rnd(window * 2) : top + 1 - rnd(window + 8));
        let want: number;
        if (seq <= floor) want = Stale;
        else if (seq > top) {
          top = seq;
          floor = Math.max(floor, seq - window);
          for (const x of seen) if (x <= floor) seen.delete(x);
          seen.add(seq);
          want = Accept;
        } else if (seen.has(seq)) want = Duplicate;
        else {
          seen.add(seq);
          want = Accept;
        }
        assert.equal(e.check(seq), want, `window ${window}, check ${i}, seq ${seq}`);
      }
    }
  });

  it('holds its window in a bitmap: 16 KiB for the default 131,072 packets', () => {
    assert.ok(elim(131_072).stateBytes < 17 * 1024, `${elim(131_072).stateBytes} bytes`);
  });
});
}
