// mac1/mac2 and the cookie reply, with a fake clock for the secret's lifetime.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  COOKIE_LATENCY_MS,
  COOKIE_REPLY_BYTES,
  COOKIE_SECRET_LIFETIME_MS,
  CookieChecker,
  CookieGenerator,
  MACS_BYTES,
} from '../../src/secure/cookie.js';
import { generateKeyPair, hash, mac } from '../../src/secure/primitives.js';

const server = generateKeyPair();
const CLIENT_A = Buffer.from([192, 0, 2, 7]);
const CLIENT_B = Buffer.from([192, 0, 2, 8]);
const CLIENT_V6 = Buffer.from('20010db8000000000000000000000007', 'hex');

/** A handshake-like message: a body and room for the macs. */
function message(bodyBytes = 116): Buffer {
  return Buffer.concat([randomBytes(bodyBytes), Buffer.alloc(MACS_BYTES)]);
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** Client and server sharing one fake clock; the client already holds a cookie for `source`. */
function withCookie(source: Buffer): { checker: CookieChecker; gen: CookieGenerator; advance: (ms: number) => void } {
  const c = clock();
  const checker = new CookieChecker(server.publicKey, { now: c.now });
  const gen = new CookieGenerator(server.publicKey, { now: c.now });
  const first = message();
  gen.addMacs(first);
  assert.equal(gen.consumeReply(checker.createReply(first, 1, source)), true);
  return { checker, gen, advance: c.advance };
}

describe('mac1', () => {
  it('is MAC(HASH("mac1----" | server public key), message before the macs)', () => {
    const gen = new CookieGenerator(server.publicKey);
    const msg = message();
    gen.addMacs(msg);
    const key = hash(Buffer.from('mac1----'), server.publicKey);
    const m1 = msg.length - MACS_BYTES;
    assert.deepEqual(msg.subarray(m1, m1 + 16), mac(key, msg.subarray(0, m1)));
    assert.deepEqual(msg.subarray(m1 + 16), Buffer.alloc(16), 'mac2 is zeros without a cookie');
  });

  it("accepts a message made for this server's key and nothing else", () => {
    const checker = new CookieChecker(server.publicKey);
    const msg = message(60);
    new CookieGenerator(server.publicKey).addMacs(msg);
    assert.equal(checker.checkMac1(msg), true);
    // Any bit of the body or of mac1 itself.
    for (let bit = 0; bit < (msg.length - 16) * 8; bit++) {
      const bad = Buffer.from(msg);
      bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
      assert.equal(checker.checkMac1(bad), false, `bit ${bit}`);
    }
    // mac2 is not covered by mac1 (it is added after, with the cookie).
    const m2 = Buffer.from(msg);
    m2[m2.length - 1] = (m2[m2.length - 1] as number) ^ 1;
    assert.equal(checker.checkMac1(m2), true);
    const other = message(60);
    new CookieGenerator(generateKeyPair().publicKey).addMacs(other);
    assert.equal(checker.checkMac1(other), false, "another server's key");
    assert.equal(checker.checkMac1(Buffer.alloc(MACS_BYTES - 1)), false, 'too short to hold macs');
  });

  it('refuses keys and messages of the wrong size', () => {
    assert.throws(() => new CookieChecker(Buffer.alloc(31)), RangeError);
    assert.throws(() => new CookieGenerator(Buffer.alloc(33)), RangeError);
    assert.throws(() => new CookieGenerator(server.publicKey).addMacs(Buffer.alloc(31)), RangeError);
  });
});

describe('cookie reply and mac2', () => {
  it('no mac2 is valid before the server has made a secret', () => {
    const checker = new CookieChecker(server.publicKey);
    const msg = message();
    new CookieGenerator(server.publicKey).addMacs(msg);
    assert.equal(checker.checkMac2(msg, CLIENT_A), false);
  });

  it('a reply is receiver index | nonce | sealed cookie, 60 bytes', () => {
    const checker = new CookieChecker(server.publicKey);
    const msg = message();
    new CookieGenerator(server.publicKey).addMacs(msg);
    const reply = checker.createReply(msg, 0xdeadbeef, CLIENT_A);
    assert.equal(reply.length, COOKIE_REPLY_BYTES);
    assert.equal(COOKIE_REPLY_BYTES, 60);
    assert.equal(reply.readUInt32BE(0), 0xdeadbeef);
    assert.notDeepEqual(checker.createReply(msg, 1, CLIENT_A).subarray(4, 28), reply.subarray(4, 28), 'a fresh nonce each time');
  });

  it('round trip: the cookie makes mac2 valid for that source only', () => {
    for (const source of [CLIENT_A, CLIENT_V6]) {
      const { checker, gen } = withCookie(source);
      const msg = message();
      gen.addMacs(msg);
      assert.equal(checker.checkMac1(msg), true);
      assert.equal(checker.checkMac2(msg, source), true);
      assert.equal(checker.checkMac2(msg, source === CLIENT_A ? CLIENT_B : Buffer.from(CLIENT_V6).fill(1, 15)), false, 'another source');
      for (const at of [0, 50, msg.length - 17, msg.length - 16, msg.length - 1]) {
        const bad = Buffer.from(msg);
        bad[at] = (bad[at] as number) ^ 0x80;
        assert.equal(checker.checkMac2(bad, source), false, `byte ${at} flipped (mac2 covers the body and mac1)`);
      }
    }
  });

  it('a second reply within the lifetime carries the same cookie', () => {
    const { checker, gen, advance } = withCookie(CLIENT_A);
    advance(60_000);
    const again = message();
    gen.addMacs(again);
    assert.equal(gen.consumeReply(checker.createReply(again, 2, CLIENT_A)), true);
    const msg = message();
    gen.addMacs(msg);
    assert.equal(checker.checkMac2(msg, CLIENT_A), true);
  });

  it("the server's secret expires, and a rotated secret refuses old cookies", () => {
    const { checker, gen, advance } = withCookie(CLIENT_A);
    // Client-side, the cookie is used up to 5 s before the server may drop it.
    advance(COOKIE_SECRET_LIFETIME_MS - COOKIE_LATENCY_MS - 1);
    const fresh = message();
    gen.addMacs(fresh);
    assert.equal(checker.checkMac2(fresh, CLIENT_A), true);
    advance(1);
    const stale = message();
    gen.addMacs(stale);
    assert.deepEqual(stale.subarray(stale.length - 16), Buffer.alloc(16), 'client stopped using its old cookie');
    // Server-side, a mac2 made with the old cookie (by a client ignoring its
    // clock) stops working once the secret is past its lifetime, even before
    // any new reply rotated it; then after one rotation, and after two.
    const late = Buffer.from(fresh);
    advance(COOKIE_LATENCY_MS);
    assert.equal(checker.checkMac2(late, CLIENT_A), true, 'the secret is exactly its lifetime old: still valid');
    advance(1);
    assert.equal(checker.checkMac2(late, CLIENT_A), false, 'secret older than its lifetime');
    checker.createReply(message(), 3, CLIENT_A);
    assert.equal(checker.checkMac2(late, CLIENT_A), false, 'after one rotation: no previous secret is kept (as wireguard-go)');
    advance(COOKIE_SECRET_LIFETIME_MS + 1);
    checker.createReply(message(), 4, CLIENT_A);
    assert.equal(checker.checkMac2(late, CLIENT_A), false, 'after two rotations');
    // And a new cookie works again.
    const retry = message();
    gen.addMacs(retry);
    assert.equal(gen.consumeReply(checker.createReply(retry, 5, CLIENT_A)), true);
    const ok = message();
    gen.addMacs(ok);
    assert.equal(checker.checkMac2(ok, CLIENT_A), true);
  });

  it('a custom secret lifetime is honoured', () => {
    const c = clock();
    const checker = new CookieChecker(server.publicKey, { now: c.now, secretLifetimeMs: 1000 });
    const gen = new CookieGenerator(server.publicKey, { now: c.now });
    const first = message();
    gen.addMacs(first);
    gen.consumeReply(checker.createReply(first, 1, CLIENT_A));
    const msg = message();
    gen.addMacs(msg);
    assert.equal(checker.checkMac2(msg, CLIENT_A), true);
    c.advance(1001);
    assert.equal(checker.checkMac2(msg, CLIENT_A), false);
  });

  it('a reply opens only with the mac1 of the last message sent, and only untouched', () => {
    const checker = new CookieChecker(server.publicKey);
    const gen = new CookieGenerator(server.publicKey);
    const a = message();
    assert.equal(gen.consumeReply(checker.createReply(a, 1, CLIENT_A)), false, 'nothing sent yet');
    gen.addMacs(a);
    const b = message();
    gen.addMacs(b);
    assert.equal(gen.consumeReply(checker.createReply(a, 1, CLIENT_A)), false, 'ad is the mac1 of an earlier message');
    const reply = checker.createReply(b, 1, CLIENT_A);
    for (const at of [4, 27, 28, 59]) {
      const bad = Buffer.from(reply);
      bad[at] = (bad[at] as number) ^ 1;
      assert.equal(gen.consumeReply(bad), false, `byte ${at} flipped`);
    }
    assert.equal(gen.consumeReply(reply.subarray(0, 59)), false, 'short');
    assert.equal(gen.consumeReply(Buffer.concat([reply, Buffer.alloc(1)])), false, 'long');
    const otherServer = new CookieChecker(generateKeyPair().publicKey);
    assert.equal(gen.consumeReply(otherServer.createReply(b, 1, CLIENT_A)), false, "another server's cookie key");
    // A refused reply leaves the generator without a cookie.
    const c = message();
    gen.addMacs(c);
    assert.deepEqual(c.subarray(c.length - 16), Buffer.alloc(16));
    assert.equal(gen.consumeReply(checker.createReply(c, 1, CLIENT_A)), true);
  });

  it('a source is an address: 4 or 16 bytes', () => {
    const checker = new CookieChecker(server.publicKey);
    const msg = message();
    assert.throws(() => checker.createReply(msg, 1, Buffer.alloc(6)), RangeError);
    assert.throws(() => checker.checkMac2(msg, Buffer.alloc(18)), RangeError);
  });
});
