import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TokenBucket } from '../../src/token-bucket.js';

test('a token bucket gives its burst, then its rate, and never more than its burst', () => {
  const b = new TokenBucket(4, 1 / 10, 0); // 4 at once, then one per 10 ms
  for (let i = 0; i < 4; i++) assert.equal(b.take(1, 0), true, `burst token ${i}`);
  assert.equal(b.take(1, 0), false, 'empty after the burst');
  assert.equal(b.take(1, 9), false, 'not yet a whole token');
  assert.equal(b.take(1, 10), true, 'one token per 10 ms');
  assert.equal(b.take(1, 10), false);
  // A long idle refills to the burst, not beyond.
  assert.equal(b.available(10_000), 4);
  assert.equal(b.take(5, 10_000), false, 'more than the burst is never there');
  assert.equal(b.available(10_000), 4, 'a refused take takes nothing');
  assert.equal(b.take(4, 10_000), true);
});

test('a token bucket counts each millisecond once, whatever order the times come in', () => {
  const b = new TokenBucket(100, 1, 0);
  assert.equal(b.take(100, 1000), true);
  // A time before the last one seen (a cached timestamp) adds nothing...
  assert.equal(b.available(900), 0);
  // ...and the 100 ms between it and the last one are not counted again.
  assert.equal(b.available(1000), 0);
  assert.equal(b.available(1050), 50);
});

test('a token bucket takes fractional amounts (bytes at a rate per ms)', () => {
  const b = new TokenBucket(1000, 0.5, 0);
  assert.equal(b.take(999.5, 0), true);
  assert.equal(b.take(1, 0), false);
  assert.equal(b.take(1, 1), true, '0.5 left + 0.5 per ms');
});
