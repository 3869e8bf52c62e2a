// SEALED records through the addon's AEAD (OpenSSL EVP, in place) are the
// same bytes as through node:crypto, open each other's records, and refuse
// any change to the ciphertext, the tag, the header or the counter.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { CipherName } from '../../src/protocol/handshake.js';
import { FRAME_HEADER_BYTES } from '../../src/protocol/frame.js';
import { openRecord, recordKey, sealRecord, SEALED_OVERHEAD_BYTES } from '../../src/secure/record.js';
import { loadAddon } from '../../src/tun/loader.js';

const CIPHERS: CipherName[] = ['aes-256-gcm', 'chacha20-poly1305'];
const BIG = 2 ** 53 - 1;

describe('record keys (native AEAD)', () => {
  it('the addon has Aead (without it records go through node:crypto, and these tests would test that)', () => {
    assert.equal(typeof loadAddon().Aead, 'function');
  });

  for (const cipher of CIPHERS) {
    it(`${cipher}: the same record bytes as node:crypto, for any length and counter; each opens the other's`, () => {
      const key = randomBytes(32);
      const sealer = recordKey(cipher, key, true);
      const opener = recordKey(cipher, key, false);
      for (const [len, counter] of [[0, 0], [1, 1], [100, 2 ** 32 + 5], [32 * 1024, BIG], [65_000, 77]] as const) {
        const frames = randomBytes(len);
        const a = sealer.seal(0xdeadbeef, counter, frames);
        const b = sealRecord(cipher, key, 0xdeadbeef, counter, frames);
        assert.ok(a.equals(b), `len ${len}, counter ${counter}`);
        const body = FRAME_HEADER_BYTES;
        assert.ok(openRecord(cipher, key, counter, a, body, a.length)?.equals(frames), 'node:crypto opens the native record');
        const copy = Buffer.from(b);
        const plain = opener.open(counter, copy, body, copy.length);
        assert.ok(plain?.equals(frames), 'the native key opens the node:crypto record');
        assert.equal(plain?.buffer, copy.buffer, 'in place: the plaintext is a view of the record');
      }
    });

    it(`${cipher}: a changed bit anywhere (header, text, tag), another counter or another key: refused`, () => {
      const key = randomBytes(32);
      const sealer = recordKey(cipher, key, true);
      const opener = recordKey(cipher, key, false);
      const rec = sealer.seal(7, 1000, randomBytes(300));
      const body = FRAME_HEADER_BYTES;
      assert.ok(opener.open(1000, Buffer.from(rec), body, rec.length), 'the record as sealed opens');
      // From the version byte on: the length is the framing's, not authenticated (a wrong one breaks the stream).
      for (const at of [4, 5, 8, 12, 20, 100, rec.length - 17, rec.length - 1]) {
        const bad = Buffer.from(rec);
        bad[at] = (bad[at] as number) ^ 0x01;
        assert.equal(opener.open(1000, bad, body, bad.length), undefined, `bit flipped at ${at}`);
      }
      assert.equal(opener.open(1001, Buffer.from(rec), body, rec.length), undefined, 'another counter (nonce)');
      assert.equal(recordKey(cipher, randomBytes(32), false).open(1000, Buffer.from(rec), body, rec.length), undefined, 'another key');
      assert.equal(opener.open(1000, Buffer.alloc(10 + SEALED_OVERHEAD_BYTES - 20), body, 10), undefined, 'too short to hold a tag');
    });
  }

  it('the native key checks what it is given: bounds, counter, direction, a destroyed key', () => {
    const { Aead } = loadAddon();
    const key = randomBytes(32);
    const seal = new Aead('aes-256-gcm', key, true);
    const buf = Buffer.alloc(64);
    assert.throws(() => seal.seal(buf, 16, 40, 0, 0), RangeError, 'text and tag past the end');
    assert.throws(() => seal.seal(buf, 16, 8, -1, 0), RangeError, 'negative counter');
    assert.throws(() => seal.seal(buf, 16, 8, 2 ** 53, 0), RangeError, 'counter beyond 2^53 - 1');
    assert.throws(() => seal.seal(buf, 16, 8, 1.5, 0), RangeError, 'fractional counter');
    assert.throws(() => seal.seal(buf, 16, 8, 1, 60), RangeError, 'additional data past the end');
    assert.throws(() => seal.seal(buf, 16, 8, 1, 0, Buffer.alloc(9)), RangeError, 'source of another length');
    assert.throws(() => seal.seal(buf, 16, -1, 1, 0, Buffer.alloc(0)), /record bounds or counter out of range/, 'a negative length, with a source: the bounds are checked first');
    assert.throws(() => seal.seal(buf, 16, 8, 1, 0, buf.subarray(20, 28)), /overlaps/, 'a source that overlaps the text without being it');
    seal.seal(buf, 16, 8, 1, 0, buf.subarray(16, 24)); // the text itself: in place
    const src = randomBytes(8);
    const a = Buffer.alloc(40);
    const b = Buffer.alloc(40);
    src.copy(b, 16);
    seal.seal(a, 16, 8, 3, 0, src);
    seal.seal(b, 16, 8, 3, 0);
    assert.ok(a.equals(b), 'sealing from a source gives what sealing in place gives');
    assert.throws(() => new Aead('aes-128-gcm', key, true), TypeError, 'unknown cipher');
    assert.throws(() => new Aead('aes-256-gcm', key.subarray(0, 16), true), RangeError, 'short key');
    assert.throws(() => seal.open(buf, 16, 8, 1, 0), /this key seals/);
    seal.seal(buf, 16, 8, 1, 0);
    seal.destroy();
    assert.throws(() => seal.seal(buf, 16, 8, 1, 0), /destroyed/);
  });
});
