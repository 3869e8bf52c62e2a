// A keypair its ring lets go of (evicted, expired, cleared) is retired: its
// raw keys are zeroed, its native AEAD contexts destroyed (OpenSSL cleanses
// the key schedules), and sealing or opening with it fails with a clear
// error, never a crash and never a record under a zero key.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { CipherName } from '../../src/protocol/handshake.js';
import { FRAME_HEADER_BYTES } from '../../src/protocol/frame.js';
import { Keypair, KeyRing } from '../../src/secure/keypair.js';
import { MAX_KEYPAIRS, REJECT_AFTER_TIME_MS } from '../../src/secure/limits.js';
import { recordKey } from '../../src/secure/record.js';
import { loadAddon } from '../../src/tun/loader.js';

const ZERO = Buffer.alloc(32);

/** A keypair on its own keys, and those keys (the Buffers it holds). */
function keypair(index: number, cipher: CipherName, confirmed: boolean, nowMs = 0): { kp: Keypair; send: Buffer; recv: Buffer } {
  const send = randomBytes(32);
  const recv = randomBytes(32);
  return { kp: new Keypair(index, index + 1000, cipher, send, recv, confirmed, nowMs), send, recv };
}

function assertRetired(k: { kp: Keypair; send: Buffer; recv: Buffer }): void {
  assert.equal(k.kp.retired, true);
  assert.ok(k.send.equals(ZERO), 'send key zeroed');
  assert.ok(k.recv.equals(ZERO), 'receive key zeroed');
  assert.throws(() => k.kp.seal(Buffer.alloc(10)), /keypair retired/);
  assert.throws(() => k.kp.open(0, Buffer.alloc(64), FRAME_HEADER_BYTES, 64), /keypair retired/);
  assert.equal(k.kp.usable(0), false);
  assert.equal(k.kp.canSeal(0), false);
  // Under the keypair's guard, its record keys themselves refuse: the native context is gone.
  const inner = k.kp as unknown as { sealer: { seal: (i: number, c: number, f: Buffer) => Buffer }; opener: { open: (c: number, b: Buffer, s: number, e: number) => unknown } };
  assert.throws(() => inner.sealer.seal(1, 0, Buffer.alloc(10)), /the key was destroyed/);
  assert.throws(() => inner.opener.open(0, Buffer.alloc(64), FRAME_HEADER_BYTES, 64), /the key was destroyed/);
}

describe('retired keypairs', () => {
  it('the addon has Aead (these tests are of the native keys)', () => {
    assert.equal(typeof loadAddon().Aead, 'function');
  });

  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const) {
    it(`${cipher}: evicted from a full ring: keys zeroed, native keys destroyed, seal and open refused; the sending keypair untouched`, () => {
      const ring = new KeyRing();
      const current = keypair(1, cipher, true);
      ring.add(current.kp);
      const others = [];
      for (let i = 0; i < MAX_KEYPAIRS; i++) {
        const k = keypair(100 + i, cipher, false);
        others.push(k);
        ring.add(k.kp);
      }
      assert.equal(ring.size, MAX_KEYPAIRS);
      // The oldest unconfirmed one went.
      const evicted = others[0] as (typeof others)[number];
      assert.equal(ring.has(evicted.kp.localIndex), false);
      assertRetired(evicted);
      for (const k of others.slice(1)) assert.equal(k.kp.retired, false);
      assert.equal(current.kp.retired, false);
      assert.ok(ring.seal(Buffer.alloc(10), 0) !== undefined, 'the ring still seals with its current keypair');
    });
  }

  it('expired keypairs are retired; clear() retires every one', () => {
    const ring = new KeyRing();
    const old = keypair(1, 'aes-256-gcm', true, 0);
    const young = keypair(2, 'aes-256-gcm', true, REJECT_AFTER_TIME_MS);
    ring.add(old.kp);
    ring.add(young.kp);
    ring.expire(REJECT_AFTER_TIME_MS + 1);
    assertRetired(old);
    assert.equal(young.kp.retired, false);
    assert.equal(ring.sending, young.kp);
    ring.clear();
    assertRetired(young);
    assert.equal(ring.size, 0);
    assert.equal(ring.seal(Buffer.alloc(10), REJECT_AFTER_TIME_MS + 1), undefined, 'nothing left to seal with');
  });

  it('another keypair under an index already in the ring: the one it replaces is retired', () => {
    const ring = new KeyRing();
    const a = keypair(7, 'aes-256-gcm', true);
    const b = keypair(7, 'aes-256-gcm', true, 1);
    ring.add(a.kp);
    ring.add(b.kp);
    assertRetired(a);
    assert.equal(ring.sending, b.kp);
    ring.add(b.kp); // the same keypair again: kept
    assert.equal(b.kp.retired, false);
  });

  it('a destroyed record key: seal and open throw a clear error, twice over, and destroy() again is harmless', () => {
    const key = randomBytes(32);
    const sealer = recordKey('chacha20-poly1305', key, true);
    const opener = recordKey('chacha20-poly1305', key, false);
    const rec = sealer.seal(5, 0, Buffer.from('hello'));
    sealer.destroy();
    opener.destroy();
    opener.destroy();
    for (let i = 0; i < 2; i++) {
      assert.throws(() => sealer.seal(5, 1, Buffer.from('again')), /seal: the key was destroyed/);
      assert.throws(() => opener.open(0, rec, FRAME_HEADER_BYTES, rec.length), /open: the key was destroyed/);
    }
  });
});
