// The RFC 6479 window: table cases at its edges, then a long random run
// against a naive model that keeps every counter in a Set.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { REPLAY_WINDOW_RECORDS } from '../../src/secure/limits.js';
import { ReplayWindow, type ReplayVerdict } from '../../src/secure/replay.js';
import { rng } from '../helpers/rng.js';

/** The same rule with no cleverness: everything ever accepted, and the distance rule. */
class NaiveWindow {
  private readonly seen = new Set<number>();
  private last = -1;
  constructor(private readonly windowSize: number) {}
  check(c: number): ReplayVerdict {
    if (c > this.last) return 'ok';
    if (this.last - c > this.windowSize) return 'too_old';
    return this.seen.has(c) ? 'duplicate' : 'ok';
  }
  accept(c: number): ReplayVerdict {
    const v = this.check(c);
    if (v === 'ok') {
      this.seen.add(c);
      this.last = Math.max(this.last, c);
    }
    return v;
  }
}


describe('replay window', () => {
  it('defaults to 65,536 bits, accepting 65,504 counters behind the highest', () => {
    const w = new ReplayWindow();
    assert.equal(w.windowBits, REPLAY_WINDOW_RECORDS);
    assert.equal(w.windowSize, 65_504);
    assert.equal(w.highest, -1);
  });

  it('refuses sizes that are not a multiple of 32, or too small', () => {
    for (const bad of [0, 32, 100, 8191, 64.5, -64, 1 << 25]) assert.throws(() => new ReplayWindow(bad), RangeError, String(bad));
    assert.equal(new ReplayWindow(96).windowSize, 64, 'a multiple of 32 need not be a power of two');
  });

  it('accepts in order from 0, once each', () => {
    const w = new ReplayWindow(128);
    for (let c = 0; c < 1000; c++) {
      assert.equal(w.check(c), 'ok');
      assert.equal(w.accept(c), 'ok');
      assert.equal(w.highest, c);
      assert.equal(w.accept(c), 'duplicate');
    }
  });

  it('counter 0 is a counter like any other', () => {
    const w = new ReplayWindow();
    assert.equal(w.check(0), 'ok');
    assert.equal(w.accept(0), 'ok');
    assert.equal(w.highest, 0);
    assert.equal(w.check(0), 'duplicate');
    assert.equal(w.accept(5), 'ok');
    assert.equal(w.accept(0), 'duplicate');
    const late = new ReplayWindow();
    assert.equal(late.accept(7), 'ok');
    assert.equal(late.accept(0), 'ok', '0 arriving after 7 is still new');
    assert.equal(late.accept(0), 'duplicate');
  });

  it('accepts out of order within the window, and only once', () => {
    const w = new ReplayWindow(128); // window size 96
    assert.equal(w.accept(100), 'ok');
    for (const c of [99, 50, 4, 5, 98, 60]) assert.equal(w.accept(c), 'ok', String(c));
    for (const c of [99, 50, 4, 100]) assert.equal(w.accept(c), 'duplicate', String(c));
    assert.equal(w.accept(3), 'too_old', '100 - 3 > 96');
    assert.equal(w.highest, 100);
  });

  it('check never records: only accept does', () => {
    const w = new ReplayWindow(128);
    assert.equal(w.check(10), 'ok');
    assert.equal(w.check(10), 'ok');
    assert.equal(w.highest, -1, 'a checked counter does not move the window');
    w.accept(500);
    assert.equal(w.check(1000), 'ok');
    assert.equal(w.check(450), 'ok', 'still judged against 500, not 1000');
    assert.equal(w.highest, 500);
  });

  it('is exact at the edge of the window', () => {
    const w = new ReplayWindow(256); // window size 224
    const top = 10_000;
    assert.equal(w.accept(top), 'ok');
    assert.equal(w.check(top - 224), 'ok', 'exactly the window size behind');
    assert.equal(w.check(top - 225), 'too_old', 'one more');
    assert.equal(w.accept(top - 224), 'ok');
    assert.equal(w.accept(top - 224), 'duplicate');
    // Moving the top by one pushes that counter out.
    assert.equal(w.accept(top + 1), 'ok');
    assert.equal(w.check(top - 224), 'too_old');
  });

  it('a jump of exactly the window size keeps only the old highest', () => {
    const w = new ReplayWindow(256);
    for (let c = 0; c <= 300; c++) w.accept(c);
    assert.equal(w.accept(300 + w.windowSize), 'ok');
    assert.equal(w.accept(300), 'duplicate', 'the old highest is exactly at the edge: still remembered');
    assert.equal(w.check(299), 'too_old');
    for (let c = 301; c < 300 + w.windowSize; c++) assert.equal(w.check(c), 'ok', `${c} was never seen`);
  });

  it('a jump past the whole ring clears it, leaving no stale bits', () => {
    const w = new ReplayWindow(128);
    for (let c = 0; c < 128; c++) w.accept(c);
    // Same ring slots, a multiple of the ring ahead: their old bits must be gone.
    const far = 128 * 1000;
    assert.equal(w.accept(far + 127), 'ok');
    for (let c = far + 127 - w.windowSize; c < far + 127; c++) assert.equal(w.check(c), 'ok', String(c));
    for (const jump of [128, 129, 160, 1e9, 2 ** 52]) {
      const x = new ReplayWindow(128);
      for (let c = 0; c < 100; c++) x.accept(c);
      assert.equal(x.accept(99 + jump), 'ok');
      for (let c = 99 + jump - x.windowSize; c < 99 + jump; c++) assert.equal(x.check(c), 'ok', `jump ${jump}: ${c}`);
    }
  });

  it('handles counters up to 2^53 - 1 and refuses what is not a counter', () => {
    const w = new ReplayWindow();
    const max = Number.MAX_SAFE_INTEGER;
    assert.equal(w.accept(max - 1), 'ok');
    assert.equal(w.accept(max), 'ok');
    assert.equal(w.accept(max - 1), 'duplicate');
    assert.equal(w.accept(max - 2), 'ok');
    for (const bad of [-1, 1.5, Number.NaN, Infinity, 2 ** 53, 2 ** 64]) {
      assert.equal(w.check(bad), 'too_old', String(bad));
      assert.equal(w.accept(bad), 'too_old', String(bad));
    }
    assert.equal(w.highest, max);
  });

  it('reset forgets everything', () => {
    const w = new ReplayWindow(64);
    for (let c = 0; c < 50; c++) w.accept(c);
    w.reset();
    assert.equal(w.highest, -1);
    for (let c = 0; c < 50; c++) assert.equal(w.accept(c), 'ok', String(c));
  });

  it('agrees with a naive model over 100,000 random operations', () => {
    for (const [bits, seed] of [
      [64, 1],
      [96, 2],
      [256, 3],
      [8192, 4],
      [REPLAY_WINDOW_RECORDS, 5],
    ] as const) {
      const rand = rng(seed);
      const w = new ReplayWindow(bits);
      const model = new NaiveWindow(w.windowSize);
      const ops = bits === REPLAY_WINDOW_RECORDS ? 100_000 : 25_000;
      const counts: Record<ReplayVerdict, number> = { ok: 0, duplicate: 0, too_old: 0 };
      const recent = new Array<number>(256).fill(0);
      let clears = 0;
      for (let i = 0; i < ops; i++) {
        const top = Math.max(0, w.highest);
        const r = rand();
        let c: number;
        // Mostly near the top (in order, reordered, replayed), sometimes at the
        // edge of the window, sometimes far behind or far ahead.
        if (r < 0.4) c = top + 1 + Math.floor(rand() * 4);
        else if (r < 0.75) c = Math.max(0, top - Math.floor(rand() * w.windowSize * 1.1));
        else if (r < 0.85) c = Math.max(0, top - w.windowSize + Math.floor(rand() * 3) - 1);
        else if (r < 0.9) c = recent[Math.floor(rand() * recent.length)] ?? 0; // a replay of something accepted
        else if (r < 0.95) c = top + Math.floor(rand() * (bits / 16));
        else if (r < 0.952) c = top + Math.floor(rand() * bits * 3); // often past the whole ring
        else c = Math.floor(rand() * (top + 1));
        if (c - top > bits) clears++;
        const checkFirst = rand() < 0.5;
        if (checkFirst) assert.equal(w.check(c), model.check(c), `seed ${seed} op ${i}: check(${c}), highest ${w.highest}`);
        const v = w.accept(c);
        assert.equal(v, model.accept(c), `seed ${seed} op ${i}: accept(${c}), highest ${top}`);
        counts[v]++;
        if (v === 'ok') recent[i % recent.length] = c;
      }
      // The run must have exercised every verdict, or it proves little.
      for (const v of ['ok', 'duplicate', 'too_old'] as const) assert.ok(counts[v] > ops / 50, `seed ${seed}: ${v} ${counts[v]}`);
      assert.ok(clears > 10, `seed ${seed}: only ${clears} jumps past the whole ring`);
    }
  });
});
