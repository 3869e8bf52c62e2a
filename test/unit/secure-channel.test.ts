// The keyed handshake (src/secure/handshake.ts), keypairs and their ring
// (keypair.ts) and admission (admission.ts), as pure functions: no sockets.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { PeerConfig, SecurityConfig } from '../../src/config/types.js';
import { ProtocolError } from '../../src/errors.js';
import { encodeData, encodeToken, FRAME_HEADER_BYTES, FrameType } from '../../src/protocol/frame.js';
import type { LinkIntro } from '../../src/protocol/handshake.js';
import { Admission, prefixOf, sourceBytes } from '../../src/secure/admission.js';
import { identityOf, Initiator, Responder, TAI64N_WHITENER, tai64n, type Identity } from '../../src/secure/handshake.js';
import { Keypair, KeyRing } from '../../src/secure/keypair.js';
import { FAIL_LIMIT, MAX_KEYPAIRS, MAX_PENDING_PER_PREFIX, MAX_PENDING_PER_SOURCE, MAX_TRACKED_SOURCES, REJECT_AFTER_TIME_MS } from '../../src/secure/limits.js';
import { generateKeyPair } from '../../src/secure/primitives.js';
import { keyedPair, KEYS_BASE } from '../helpers/identities.js';
import { numbered } from '../helpers/packets.js';

const { server, client: alice, serverId, clientId: aliceId } = keyedPair([{ family: 4, address: '10.0.0.2', prefix: 32 }], 'alice');
const peer = serverId.peers.values().next().value as PeerConfig;
const BASE = KEYS_BASE;

const intro: LinkIntro = {
  sessionId: randomBytes(16),
  encryption: 'chacha20-poly1305',
  offload: false,
  mode: 'duplicate',
  linkId: 0,
  linkCount: 2,
  addresses: [{ family: 4, address: '10.0.0.2', prefix: 24 }],
};
const SOURCE = Buffer.from([10, 0, 1, 2]);
const body = (f: Buffer): [Buffer, number, number] => [f, FRAME_HEADER_BYTES, f.length];

/** One whole handshake; returns both keypairs. */
function handshake(init: Initiator, resp: Responder, linkId = 0): { client: Keypair; server: Keypair; epoch: Buffer } {
  const f = init.initiation({ ...intro, linkId });
  assert.equal(resp.precheck(...body(f), SOURCE, false), 'ok');
  const r = resp.read(...body(f));
  assert.equal(r.peer.publicKey.length, 32);
  const epoch = randomBytes(8);
  const { frame, keypair } = resp.respond(r, epoch, linkId, () => false);
  const est = init.response(...body(frame));
  assert.deepEqual(est.epoch, epoch);
  return { client: est.keypair, server: keypair, epoch };
}

describe('keyed handshake', () => {
  it('an initiator picks a local index its side\'s keypairs do not hold (a reused one would push the older keypair out)', () => {
    const init = new Initiator(aliceId);
    const offered: number[] = [];
    const f = init.initiation(intro, (i) => offered.push(i) <= 3);
    assert.equal(offered.length, 4, 'three indices in use were passed over');
    assert.equal(f.readUInt32BE(8), offered[3], 'the fourth is the one sent');
    const { keypair } = new Responder(serverId).respond(new Responder(serverId).read(...body(f)), Buffer.alloc(8), 0, () => false);
    assert.equal(keypair.remoteIndex, offered[3]);
  });

  it('an INITIATION given up (its connection closed, or another sent) is wiped: a RESPONSE to it is refused', () => {
    const resp = new Responder(serverId);
    const init = new Initiator(aliceId);
    const answer = (f: Buffer): Buffer => resp.respond(resp.read(...body(f)), Buffer.alloc(8), 0, () => false).frame;
    const r1 = answer(init.initiation(intro));
    init.abandon();
    assert.equal(init.answers(...body(r1)), false);
    assert.throws(() => init.response(...body(r1)), /RESPONSE without an INITIATION/);
    // A new INITIATION gives up the one before: only its own RESPONSE completes.
    const r2 = answer(init.initiation({ ...intro, sessionId: randomBytes(16) }));
    const f3 = init.initiation({ ...intro, sessionId: randomBytes(16) });
    assert.throws(() => init.response(...body(r2)), /RESPONSE to another INITIATION/);
    assert.equal(init.response(...body(answer(f3))).keypair.confirmed, true);
  });

  it('INITIATION and RESPONSE give matching keypairs; the responder learns the peer and the intro', () => {
    const resp = new Responder(serverId);
    const init = new Initiator(aliceId);
    const f = init.initiation(intro);
    const r = resp.read(...body(f));
    assert.deepEqual(r.intro.sessionId, intro.sessionId);
    assert.deepEqual(r.intro.addresses, intro.addresses);
    const { frame, keypair } = resp.respond(r, Buffer.alloc(8, 7), 0, () => false);
    const est = init.response(...body(frame));
    assert.equal(keypair.confirmed, false, 'the responder waits for the first record');
    assert.equal(est.keypair.confirmed, true);
    const record = est.keypair.seal(encodeToken(FrameType.Ping, 1));
    const ring = new KeyRing();
    ring.add(keypair);
    const opened = ring.open(...body(record), 0);
    assert.ok(typeof opened !== 'string');
    assert.equal(opened.confirmedNow, true);
    assert.equal(ring.sending, keypair, 'confirmed: the server seals with it now');
  });

  it('the intro\'s pace travels inside the INITIATION; one out of range is refused as malformed', () => {
    const resp = new Responder(serverId);
    const init = new Initiator(aliceId);
    const f = init.initiation({ ...intro, paceKbit: 11_250 });
    assert.equal(resp.read(...body(f)).intro.paceKbit, 11_250);
    assert.equal(resp.read(...body(new Initiator(aliceId).initiation(intro))).intro.paceKbit, undefined, 'no pace: not paced');
    assert.throws(() => init.initiation({ ...intro, paceKbit: 50 }), RangeError, 'the client never sends one out of range');
  });

  it('a stranger (unknown static key), a wrong server key and a wrong psk are all refused', () => {
    const resp = new Responder(serverId);
    const mallory = identityOf({ ...BASE, privateKey: generateKeyPair().privateKey, serverPublicKey: server.publicKey }, 'client') as Identity;
    const fm = new Initiator(mallory).initiation(intro);
    assert.equal(resp.precheck(...body(fm), SOURCE, false), 'ok', 'the server key is public: mac1 passes');
    assert.throws(() => resp.read(...body(fm)), /unknown peer key/);

    const wrongServer = identityOf({ ...BASE, privateKey: alice.privateKey, serverPublicKey: generateKeyPair().publicKey }, 'client') as Identity;
    const fw = new Initiator(wrongServer).initiation(intro);
    assert.equal(resp.precheck(...body(fw), SOURCE, false), 'bad_mac1', 'not made for this server: refused before any DH');
    assert.throws(() => resp.read(...body(fw)), ProtocolError);

    const pskServer = new Responder(identityOf({ ...BASE, privateKey: server.privateKey, peers: [peer], psk: Buffer.from('server side secret!!') }, 'server') as Identity);
    const init = new Initiator(identityOf({ ...BASE, privateKey: alice.privateKey, serverPublicKey: server.publicKey, psk: Buffer.from('client side secret!!') }, 'client') as Identity);
    const r = pskServer.read(...body(init.initiation(intro)));
    const { frame } = pskServer.respond(r, Buffer.alloc(8), 0, () => false);
    assert.throws(() => init.response(...body(frame)), /does not authenticate/);
  });

  it('a replayed INITIATION is refused; concurrent ones of several links are not', () => {
    const resp = new Responder(serverId);
    const init = new Initiator(aliceId);
    const f0 = init.initiation({ ...intro, linkId: 0 });
    const f1 = new Initiator(aliceId).initiation({ ...intro, linkId: 1 });
    // Out of order across links: both accepted.
    resp.read(...body(f1));
    resp.read(...body(f0));
    assert.throws(() => resp.read(...body(f0)), /replayed/);
    assert.throws(() => resp.read(...body(f1)), /replayed/);
  });

  it('replays are refused per peer, whatever the session id, however many INITIATIONs came since', () => {
    const resp = new Responder(serverId);
    const captured = [0, 1, 0].map((linkId) => new Initiator(aliceId).initiation({ ...intro, linkId }));
    for (const f of captured) resp.read(...body(f));
    // A flood of the peer's own new sessions (the table was per session id, bounded, and forgot
    // the first one after 8,192 others), and far more than the 64 stamps it keeps.
    for (let i = 0; i < 8200; i++) resp.read(...body(new Initiator(aliceId).initiation({ ...intro, sessionId: randomBytes(16) })));
    for (const f of captured) assert.throws(() => resp.read(...body(f)), /replayed/, 'let go of, still refused');
    // A new one is still taken, and ones of several links out of order near the newest too.
    const a = new Initiator(aliceId).initiation({ ...intro, linkId: 0 });
    const b = new Initiator(aliceId).initiation({ ...intro, linkId: 1 });
    resp.read(...body(b));
    resp.read(...body(a));
  });

  it('answered INITIATIONs nobody confirms cannot push the sending keypair out of the ring', () => {
    const resp = new Responder(serverId);
    const ring = new KeyRing();
    const { client, server: first } = handshake(new Initiator(aliceId), resp);
    ring.add(first);
    const opened = ring.open(...body(client.seal(encodeToken(FrameType.Ping, 1))), 0);
    assert.ok(typeof opened !== 'string' && opened.confirmedNow);
    assert.equal(ring.sending, first);
    for (let i = 0; i < MAX_KEYPAIRS * 3; i++) ring.add(handshake(new Initiator(aliceId), resp).server);
    assert.equal(ring.size, MAX_KEYPAIRS);
    assert.equal(ring.sending, first, 'still sealing with the confirmed keypair');
    const next = ring.open(...body(client.seal(encodeToken(FrameType.Ping, 2))), 0);
    assert.ok(typeof next !== 'string', 'and still opening its records');
  });

  it('every bit of an INITIATION matters: a flipped bit fails mac1 or the Noise message', () => {
    const resp = new Responder(serverId);
    const f = new Initiator(aliceId).initiation(intro);
    for (let i = 4; i < f.length - 16; i += 7) {
      const bad = Buffer.from(f);
      bad[i] = (bad[i] as number) ^ 0x10;
      assert.equal(resp.precheck(...body(bad), SOURCE, false), 'bad_mac1', `byte ${i}`);
    }
  });

  it('under load an INITIATION needs a cookie; the client gets one and gets in', () => {
    const resp = new Responder(serverId);
    const init = new Initiator(aliceId);
    const f = init.initiation(intro);
    assert.equal(resp.precheck(...body(f), SOURCE, true), 'needs_cookie');
    const cookie = resp.cookieReply(...body(f), SOURCE);
    assert.equal(cookie[5], FrameType.Cookie);
    assert.equal(init.cookie(...body(cookie)), true);
    const again = init.initiation(intro);
    assert.equal(resp.precheck(...body(again), SOURCE, true), 'ok');
    assert.equal(resp.precheck(...body(again), Buffer.from([10, 0, 1, 3]), true), 'needs_cookie', 'a cookie is bound to its source');
  });

  it('the psk form: one derived identity, the same on both sides; another psk fails', () => {
    const psk = (k: string): SecurityConfig => ({ ...BASE, mode: 'psk', psk: Buffer.from(k) });
    const s = identityOf(psk('a shared key of the group'), 'server') as Identity;
    const c = identityOf(psk('a shared key of the group'), 'client') as Identity;
    assert.ok(s.shared && c.shared);
    handshake(new Initiator(c), new Responder(s));
    const other = identityOf(psk('not the key of the group'), 'client') as Identity;
    const f = new Initiator(other).initiation(intro);
    assert.equal(new Responder(s).precheck(...body(f), SOURCE, false), 'bad_mac1');
  });

  it('the psk form keeps replays apart per session: every client is the same peer, with its own clock', () => {
    const psk: SecurityConfig = { ...BASE, mode: 'psk', psk: Buffer.from('a shared key of the group') };
    const resp = new Responder(identityOf(psk, 'server') as Identity);
    const c = identityOf(psk, 'client') as Identity;
    // One client's INITIATION, older than the 100 that other clients' sessions bring in before it arrives.
    const late = new Initiator(c).initiation({ ...intro, sessionId: randomBytes(16) });
    for (let i = 0; i < 100; i++) resp.read(...body(new Initiator(c).initiation({ ...intro, sessionId: randomBytes(16) })));
    resp.read(...body(late));
    assert.throws(() => resp.read(...body(late)), /replayed/);
  });

  it('an INITIATION timestamp shows the clock in steps of 2^24 ns, and still increases with every handshake', () => {
    const nanos = (t: Buffer): bigint => BigInt(t.readUInt32BE(8));
    const seconds = (t: Buffer): bigint => t.readBigUInt64BE(0) - 0x4000_0000_0000_000an;
    // Far ahead of the clock, so no stamp made earlier in this process is newer. 2e12 ms is a whole second.
    const base = 2e12 + 1e6 * 60;
    const first = tai64n(base + 123.456);
    assert.equal(seconds(first), BigInt(base / 1000));
    assert.equal(nanos(first) & TAI64N_WHITENER, 0n, 'the low 24 bits of the nanoseconds are cleared');
    assert.equal(nanos(first), 117_440_512n, '123 ms whitened down to 7 * 2^24 ns');
    // Two more links handshake in the same 16.8 ms step: one nanosecond apart, so neither is a replay of the first.
    const second = tai64n(base + 125);
    const third = tai64n(base + 130);
    assert.equal(nanos(second), nanos(first) + 1n);
    assert.equal(nanos(third), nanos(first) + 2n);
    // The next step starts on its own boundary.
    const later = tai64n(base + 140);
    assert.equal(nanos(later), 134_217_728n);
  });
});

describe('keypairs and the ring', () => {
  it('a record under one keypair opens once; its copy on another link is a duplicate, not an error', () => {
    const { client, server: sk } = handshake(new Initiator(aliceId), new Responder(serverId));
    const ring = new KeyRing();
    ring.add(sk);
    const rec = client.seal(encodeData(1, numbered(1)));
    assert.notEqual(typeof ring.open(...body(rec), 0), 'string');
    assert.equal(ring.open(...body(rec), 0), 'duplicate');
    const tampered = Buffer.from(rec);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
    const fresh = client.seal(encodeData(2, numbered(2)));
    const t2 = Buffer.from(fresh);
    t2[30] = (t2[30] as number) ^ 1;
    assert.throws(() => ring.open(...body(t2), 0), /failed authentication/);
    assert.notEqual(typeof ring.open(...body(fresh), 0), 'string', 'a forgery does not burn the real counter');
    const unknown = Buffer.from(fresh);
    unknown.writeUInt32BE((unknown.readUInt32BE(8) + 1) >>> 0, 8);
    assert.equal(ring.open(...body(unknown), 0), 'unknown_key');
  });

  it('counters never repeat under one key across rehandshakes and new links; old records stay readable', () => {
    const resp = new Responder(serverId);
    const serverRing = new KeyRing();
    const clientRing = new KeyRing();
    const seen = new Map<string, string>();
    let delivered = 0;
    for (let round = 0; round < 6; round++) {
      const { client, server: sk } = handshake(new Initiator(aliceId), resp, round % 2);
      serverRing.add(sk);
      clientRing.add(client);
      const inFlight: Buffer[] = [];
      for (let i = 0; i < 50; i++) {
        const rec = clientRing.seal(encodeData(round * 100 + i + 1, numbered(i)), 0) as Buffer;
        const key = `${rec.readUInt32BE(8)}:${rec.readBigUInt64BE(12)}`;
        assert.ok(!seen.has(key), `(index, counter) ${key} sealed twice`);
        seen.set(key, rec.toString('hex'));
        inFlight.push(rec);
      }
      // Delivered after the next handshake started: still accepted.
      for (const rec of inFlight) if (typeof serverRing.open(...body(rec), 0) !== 'string') delivered++;
    }
    assert.equal(delivered, 300);
    assert.ok(serverRing.size <= MAX_KEYPAIRS);
  });

  it('keypairs expire: nothing seals or opens past REJECT_AFTER_TIME', () => {
    const { client, server: sk } = handshake(new Initiator(aliceId), new Responder(serverId));
    const ring = new KeyRing();
    ring.add(client);
    assert.ok(ring.seal(Buffer.alloc(0), REJECT_AFTER_TIME_MS / 2));
    assert.equal(ring.seal(Buffer.alloc(0), client.createdMs + REJECT_AFTER_TIME_MS + 1), undefined);
    const sring = new KeyRing();
    sring.add(sk);
    const rec = client.seal(Buffer.alloc(0));
    assert.equal(sring.open(...body(rec), sk.createdMs + REJECT_AFTER_TIME_MS + 1), 'expired');
    sring.expire(sk.createdMs + REJECT_AFTER_TIME_MS + 1);
    assert.equal(sring.size, 0);
  });
});

describe('admission', () => {
  it('a flood from one prefix never evicts a newcomer from another, and never refuses a newcomer', () => {
    const evicted: number[] = [];
    const a = new Admission<number>(64, (c) => evicted.push(c));
    let n = 0;
    // 2000 connections from 500 addresses of 10.9.0.0/16 (two /24s are hit hardest).
    for (let i = 0; i < 2000; i++) assert.equal(a.admit(n++, Buffer.from([10, 9, i % 4, (i * 7) % 125]), 0), undefined);
    const real = n++;
    assert.equal(a.admit(real, Buffer.from([192, 168, 1, 2]), 0), undefined);
    for (let i = 0; i < 500; i++) a.admit(n++, Buffer.from([10, 9, 7, i % 250]), 0);
    assert.ok(!evicted.includes(real), 'the real client kept its slot');
    assert.ok(a.size <= 64);
    assert.ok(a.stats.evicted.pending_full > 0);
  });

  it('per-source and per-prefix bounds evict the oldest of that group', () => {
    const evicted: number[] = [];
    const a = new Admission<number>(1000, (c) => evicted.push(c));
    for (let i = 0; i < MAX_PENDING_PER_SOURCE + 2; i++) a.admit(i, Buffer.from([10, 0, 0, 1]), 0);
    assert.deepEqual(evicted, [0, 1]);
    evicted.length = 0;
    for (let i = 0; i < MAX_PENDING_PER_PREFIX + 1; i++) a.admit(100 + i, Buffer.from([10, 0, 5, i]), 0);
    assert.deepEqual(evicted, [100]);
  });

  it('too many failures block a source for a while; others are not affected', () => {
    const a = new Admission<number>(10, () => {});
    const bad = Buffer.from([10, 0, 0, 66]);
    let blocked = false;
    for (let i = 0; i < FAIL_LIMIT; i++) blocked = a.failed(bad, 1000) || blocked;
    assert.ok(!blocked, `${FAIL_LIMIT} failures in the window are not yet a flood`);
    assert.ok(a.failed(bad, 1000), 'one more is');
    assert.equal(a.admit(1, bad, 2000), 'blocked');
    assert.equal(a.admit(2, Buffer.from([10, 0, 0, 67]), 2000), undefined);
    assert.equal(a.admit(3, bad, 1000 + 20_000), undefined, 'the block ends');
  });

  it('a full failure table forgets sources that are not blocked, never a blocked one', () => {
    const a = new Admission<number>(10, () => {});
    const bad = Buffer.from([10, 0, 0, 66]);
    for (let i = 0; i <= FAIL_LIMIT; i++) a.failed(bad, 1000);
    // More sources failing within the window than the table holds.
    for (let i = 0; i < MAX_TRACKED_SOURCES + 100; i++) a.failed(Buffer.from([172, 16, i >> 8, i & 0xff]), 1500);
    assert.equal(a.admit(1, bad, 2000), 'blocked', 'still blocked');
  });

  it('addresses and prefixes', () => {
    assert.deepEqual(sourceBytes('::ffff:10.1.2.3'), Buffer.from([10, 1, 2, 3]));
    assert.equal(prefixOf(Buffer.from([10, 1, 2, 3])), prefixOf(Buffer.from([10, 1, 2, 200])));
    assert.notEqual(prefixOf(Buffer.from([10, 1, 2, 3])), prefixOf(Buffer.from([10, 1, 3, 3])));
    assert.equal(sourceBytes('fd00::1').length, 16);
  });
});
