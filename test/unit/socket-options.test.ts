import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIN_PACED_UNSENT_BYTES, PACED_UNSENT_MS, pacedNotsentLowat } from '../../src/core/socket-options.js';

describe('paced link sockets', () => {
  it('hold PACED_UNSENT_MS of unsent data at their rate, between the floor and the configured bound', () => {
    assert.equal(PACED_UNSENT_MS, 3);
    // 45 Mbit/s: 5.625 MB/s, 3 ms of it.
    assert.equal(pacedNotsentLowat(45_000, 131_072), 16_875);
    assert.equal(pacedNotsentLowat(100, 131_072), MIN_PACED_UNSENT_BYTES, 'a slow link keeps a few segments');
    assert.equal(pacedNotsentLowat(10_000_000, 131_072), 131_072, 'a fast one never more than configured');
    assert.equal(pacedNotsentLowat(45_000, 8192), 8192);
  });
});
