// Noise engine tests: the published cacophony/snow vectors for 25519_ChaChaPoly_BLAKE2s
// byte for byte, tampering and wrong-key failures, misuse, and an IKpsk2 round trip.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { describe, it } from 'node:test';
import {
  CipherState,
  HandshakeState,
  MAX_MESSAGE_BYTES,
  NoiseError,
  PROTOCOL_IKPSK2,
  type HandshakeOptions,
  type PatternName,
} from '../../src/secure/noise.js';
import { generateKeyPair, publicKeyOf, type KeyPair } from '../../src/secure/primitives.js';

interface VectorMessage {
  payload: string;
  ciphertext: string;
}

interface Vector {
  from: string;
  protocol_name: string;
  init_prologue: string;
  init_psks?: string[];
  init_static?: string;
  init_ephemeral: string;
  init_remote_static?: string;
  resp_prologue: string;
  resp_psks?: string[];
  resp_static?: string;
  resp_ephemeral?: string;
  resp_remote_static?: string;
  handshake_hash?: string;
  messages: VectorMessage[];
}

const SUITE_SUFFIX = '_25519_ChaChaPoly_BLAKE2s';
const vectorFile = JSON.parse(readFileSync(new URL('../vectors/noise-25519-chachapoly-blake2s.json', import.meta.url), 'utf8')) as {
  vectors: Vector[];
};
const vectors = vectorFile.vectors;

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const pair = (priv: string): KeyPair => ({ privateKey: hex(priv), publicKey: publicKeyOf(hex(priv)) });
const opt = <T>(v: string | undefined, f: (s: string) => T): T | undefined => (v === undefined ? undefined : f(v));

function patternOf(v: Vector): PatternName {
  assert.ok(v.protocol_name.startsWith('Noise_') && v.protocol_name.endsWith(SUITE_SUFFIX), v.protocol_name);
  // The engine validates the name at run time; the cast only names the claim.
  return v.protocol_name.slice('Noise_'.length, -SUITE_SUFFIX.length) as PatternName;
}

function vectorStates(v: Vector): { init: HandshakeState; resp: HandshakeState } {
  const pattern = patternOf(v);
  const init = new HandshakeState({
    pattern,
    initiator: true,
    prologue: hex(v.init_prologue),
    s: opt(v.init_static, pair),
    e: pair(v.init_ephemeral),
    rs: opt(v.init_remote_static, hex),
    psks: v.init_psks?.map(hex),
  });
  const resp = new HandshakeState({
    pattern,
    initiator: false,
    prologue: hex(v.resp_prologue),
    s: opt(v.resp_static, pair),
    e: opt(v.resp_ephemeral, pair),
    rs: opt(v.resp_remote_static, hex),
    psks: v.resp_psks?.map(hex),
  });
  return { init, resp };
}

/** The sender and receiver of message i: the sides alternate, initiator first. */
function turn(i: number, init: HandshakeState, resp: HandshakeState): [HandshakeState, HandshakeState] {
  return i % 2 === 0 ? [init, resp] : [resp, init];
}

function expectNoiseError(f: () => unknown, message?: string): void {
  assert.throws(f, (e: unknown) => e instanceof NoiseError, message);
}

describe('Noise published vectors (25519_ChaChaPoly_BLAKE2s)', () => {
  it('the vector file holds the selection the brief asks for', () => {
    const names = new Set(vectors.map((v) => v.protocol_name.slice('Noise_'.length, -SUITE_SUFFIX.length)));
    for (const p of ['NN', 'NK', 'XX', 'IK', 'IKpsk2', 'NNpsk0']) assert.ok(names.has(p), p);
    assert.ok(vectors.every((v) => v.protocol_name.endsWith(SUITE_SUFFIX)));
  });

  for (const v of vectors) {
    it(`${v.protocol_name} (${v.from})`, () => {
      const { init, resp } = vectorStates(v);
      assert.equal(init.protocolName, v.protocol_name);
      let i = 0;
      for (; !init.isComplete; i++) {
        const m = v.messages[i];
        assert.ok(m, `vector ends inside the handshake at message ${i}`);
        const [writer, reader] = turn(i, init, resp);
        const ct = writer.writeMessage(hex(m.payload));
        assert.equal(ct.toString('hex'), m.ciphertext, `handshake message ${i}`);
        assert.equal(reader.readMessage(ct).toString('hex'), m.payload);
      }
      assert.ok(resp.isComplete);
      assert.deepEqual(init.handshakeHash(), resp.handshakeHash());
      if (v.handshake_hash !== undefined) assert.equal(init.handshakeHash().toString('hex'), v.handshake_hash);
      if (v.init_static !== undefined && v.resp_remote_static === undefined) assert.deepEqual(resp.remoteStatic, publicKeyOf(hex(v.init_static)));
      if (v.resp_static !== undefined) assert.deepEqual(init.remoteStatic, publicKeyOf(hex(v.resp_static)));

      const [iSend, iRecv] = init.split();
      const [rRecv, rSend] = resp.split();
      assert.deepEqual(iSend.key, rRecv.key);
      assert.deepEqual(iRecv.key, rSend.key);
      const empty = Buffer.alloc(0);
      for (; i < v.messages.length; i++) {
        const m = v.messages[i] as VectorMessage;
        const [send, recv] = i % 2 === 0 ? [iSend, rRecv] : [rSend, iRecv];
        const ct = send.encryptWithAd(empty, hex(m.payload));
        assert.equal(ct.toString('hex'), m.ciphertext, `transport message ${i}`);
        assert.equal(recv.decryptWithAd(empty, ct).toString('hex'), m.payload);
      }
    });
  }
});

function vectorNamed(protocol: string, from = 'cacophony'): Vector {
  const v = vectors.find((x) => x.protocol_name === `Noise_${protocol}${SUITE_SUFFIX}` && x.from === from);
  assert.ok(v, protocol);
  return v;
}

/** The number of handshake messages of the vector's pattern. */
function handshakeLength(v: Vector): number {
  const { init, resp } = vectorStates(v);
  let i = 0;
  for (; !init.isComplete; i++) {
    const [writer, reader] = turn(i, init, resp);
    reader.readMessage(writer.writeMessage(Buffer.alloc(0)));
  }
  return i;
}

/**
 * Replays the vector, flipping one bit of handshake message `k`, and returns the
 * message index at which the handshake failed. Unkeyed messages (NN's first) cannot
 * fail on the spot, but the flip changes h, so the next message cannot authenticate.
 */
function failureAfterFlip(v: Vector, k: number, byte: number, bit: number): number {
  const { init, resp } = vectorStates(v);
  for (let i = 0; !init.isComplete || !resp.isComplete; i++) {
    const [writer, reader] = turn(i, init, resp);
    const msg = writer.writeMessage(hex((v.messages[i] as VectorMessage).payload));
    if (i === k) msg[byte] = (msg[byte] as number) ^ (1 << bit);
    try {
      reader.readMessage(msg);
    } catch (e) {
      assert.ok(e instanceof NoiseError, `${String(e)} is not a NoiseError`);
      return i;
    }
  }
  return -1;
}

describe('Noise rejects', () => {
  // Every byte of the product's pattern; a sample (every 5th byte, which still
  // lands in each key, tag and payload) of the others to keep the suite fast.
  for (const [protocol, from, stride] of [
    ['IKpsk2', 'cacophony', 1],
    ['NNpsk0', 'cacophony', 5],
    ['IK', 'cacophony', 5],
    ['XX', 'cacophony', 5],
    ['NN', 'cacophony', 5],
    ['IKpsk0+psk2', 'snow', 5],
  ] as const) {
    it(`a flipped bit in any ${protocol} handshake message (every ${stride === 1 ? '' : `${stride}th `}byte)`, () => {
      const v = vectorNamed(protocol, from);
      for (let k = 0; k < handshakeLength(v); k++) {
        const len = (v.messages[k] as VectorMessage).ciphertext.length / 2;
        for (let byte = k % stride; byte < len; byte += stride) {
          const failedAt = failureAfterFlip(v, k, byte, byte % 8);
          assert.ok(failedAt >= k, `flip in message ${k} byte ${byte} went unnoticed`);
          // Only a message sent before any key exists may pass, and then the very next one fails.
          if (failedAt !== k) assert.equal(failedAt, k + 1, `message ${k} byte ${byte}`);
        }
      }
    });
  }

  it('an IK initiator holding the wrong responder static', () => {
    const v = vectorNamed('IK');
    const { resp } = vectorStates(v);
    const init = new HandshakeState({
      pattern: 'IK',
      initiator: true,
      prologue: hex(v.init_prologue),
      s: pair(v.init_static ?? ''),
      rs: generateKeyPair().publicKey,
    });
    const m1 = init.writeMessage(Buffer.from('hello'));
    expectNoiseError(() => resp.readMessage(m1));
    expectNoiseError(() => resp.writeMessage(Buffer.alloc(0)), 'a failed state stays dead');
  });

  it('an IKpsk2 responder with another psk', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const init = new HandshakeState({ pattern: 'IKpsk2', initiator: true, prologue: Buffer.alloc(0), s: a, rs: b.publicKey, psks: [Buffer.alloc(32, 1)] });
    const resp = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue: Buffer.alloc(0), s: b });
    resp.readMessage(init.writeMessage(Buffer.alloc(0)));
    resp.setPsks([Buffer.alloc(32, 2)]);
    expectNoiseError(() => init.readMessage(resp.writeMessage(Buffer.alloc(0))));
  });

  /**
   * Runs `work` with every HMAC output (Noise's HKDF: chaining keys, handshake
   * keys, split keys) and every X25519 output captured, as primitives.ts gets
   * them from node:crypto.
   */
  function capturingSecrets(work: () => void): Buffer[] {
    const captured: Buffer[] = [];
    const createHmac = crypto.createHmac;
    const diffieHellman = crypto.diffieHellman;
    crypto.createHmac = ((...args: Parameters<typeof createHmac>) => {
      const h = createHmac(...args);
      const digest = h.digest.bind(h) as () => Buffer;
      (h as unknown as { digest: () => Buffer }).digest = () => {
        const out = digest();
        captured.push(out);
        return out;
      };
      return h;
    }) as typeof createHmac;
    crypto.diffieHellman = ((o: Parameters<typeof diffieHellman>[0]) => {
      const out = diffieHellman(o);
      captured.push(out);
      return out;
    }) as typeof diffieHellman;
    syncBuiltinESMExports();
    try {
      work();
    } finally {
      crypto.createHmac = createHmac;
      crypto.diffieHellman = diffieHellman;
      syncBuiltinESMExports();
    }
    return captured;
  }

  it('a finished handshake leaves no chaining key, handshake key or DH output in memory (zeroed), and its split keys work', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const psk = Buffer.alloc(32, 9);
    let states: CipherState[] = [];
    const secrets = capturingSecrets(() => {
      const init = new HandshakeState({ pattern: 'IKpsk2', initiator: true, prologue: Buffer.alloc(0), s: a, rs: b.publicKey, psks: [psk] });
      const resp = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue: Buffer.alloc(0), s: b, psks: [psk] });
      resp.readMessage(init.writeMessage(Buffer.from('hello')));
      init.readMessage(resp.writeMessage(Buffer.alloc(0)));
      states = [...init.split(), ...resp.split()];
    });
    assert.ok(secrets.length >= 20, `HKDF and DH outputs were captured (${secrets.length})`);
    const left = secrets.filter((b) => b.some((x) => x !== 0));
    assert.equal(left.length, 0, `${left.length} of ${secrets.length} HKDF/DH outputs not zeroed`);
    const [i2r, r2i, rRecv, rSend] = states as [CipherState, CipherState, CipherState, CipherState];
    assert.equal(rRecv.decryptWithAd(Buffer.alloc(0), i2r.encryptWithAd(Buffer.alloc(0), Buffer.from('data'))).toString(), 'data', 'initiator to responder');
    assert.equal(r2i.decryptWithAd(Buffer.alloc(0), rSend.encryptWithAd(Buffer.alloc(0), Buffer.from('back'))).toString(), 'back', 'and back');
    assert.equal(psk[0], 9, "the caller's psk is left as it was");
  });

  it('a handshake that fails zeroes what it had derived', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const init = new HandshakeState({ pattern: 'IKpsk2', initiator: true, prologue: Buffer.alloc(0), s: a, rs: b.publicKey, psks: [Buffer.alloc(32, 1)] });
    const resp = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue: Buffer.alloc(0), s: b, psks: [Buffer.alloc(32, 2)] });
    resp.readMessage(init.writeMessage(Buffer.alloc(0)));
    const m2 = resp.writeMessage(Buffer.alloc(0)); // psk2: the psk is mixed in only now
    const secrets = capturingSecrets(() => expectNoiseError(() => init.readMessage(m2)));
    assert.ok(secrets.length >= 8, `captured (${secrets.length})`);
    assert.equal(secrets.filter((s) => s.some((x) => x !== 0)).length, 0, 'every HKDF/DH output of the failed read is zeroed');
  });

  it('a handshake given up unfinished (abandon: its connection closed, or another INITIATION sent) zeroes what it had derived, and cannot go on', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const init = new HandshakeState({ pattern: 'IKpsk2', initiator: true, prologue: Buffer.alloc(0), s: a, rs: b.publicKey, psks: [Buffer.alloc(32, 1)] });
    const secrets = capturingSecrets(() => init.writeMessage(Buffer.alloc(0)));
    assert.ok(secrets.some((x) => x.some((y) => y !== 0)), 'the INITIATION leaves a chaining key in the state');
    init.abandon();
    assert.equal(secrets.filter((x) => x.some((y) => y !== 0)).length, 0, 'every HKDF/DH output zeroed');
    expectNoiseError(() => init.readMessage(Buffer.alloc(48)));
  });

  it('a wiped CipherState has a zero key and refuses to work (it does not fall back to passing data through)', () => {
    const c = new CipherState(Buffer.alloc(32, 5));
    const key = c.key as Buffer;
    c.wipe();
    assert.ok(key.every((x) => x === 0), 'key zeroed');
    expectNoiseError(() => c.encryptWithAd(Buffer.alloc(0), Buffer.from('x')));
    expectNoiseError(() => c.decryptWithAd(Buffer.alloc(0), Buffer.alloc(20)));
  });

  it('a different prologue', () => {
    const v = vectorNamed('IKpsk2');
    const { init } = vectorStates(v);
    const resp = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue: Buffer.from('other'), s: pair(v.resp_static ?? ''), psks: v.resp_psks?.map(hex) });
    expectNoiseError(() => resp.readMessage(init.writeMessage(Buffer.alloc(0))));
  });

  // All-zero output for every one of these (RFC 7748 section 6.1; libsodium's list):
  // 0, 1, the two points of order 8, and p-1, p, p+1 as non-canonical encodings.
  const lowOrder = [
    '0000000000000000000000000000000000000000000000000000000000000000',
    '0100000000000000000000000000000000000000000000000000000000000000',
    'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
    '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  ].map(hex);

  it('a low-order ephemeral from the initiator (IKpsk2 responder)', () => {
    const v = vectorNamed('IKpsk2');
    for (const point of lowOrder) {
      const { init, resp } = vectorStates(v);
      const m1 = init.writeMessage(Buffer.alloc(0));
      point.copy(m1, 0);
      expectNoiseError(() => resp.readMessage(m1), point.toString('hex'));
    }
  });

  it('a low-order ephemeral from the responder (NN initiator) and a low-order static (IK)', () => {
    const v = vectorNamed('NN');
    for (const point of lowOrder) {
      const { init, resp } = vectorStates(v);
      resp.readMessage(init.writeMessage(Buffer.alloc(0)));
      const m2 = resp.writeMessage(Buffer.alloc(0));
      point.copy(m2, 0);
      expectNoiseError(() => init.readMessage(m2), point.toString('hex'));
      // IK with a low-order responder static fails before anything is sent.
      const ik = new HandshakeState({ pattern: 'IK', initiator: true, prologue: Buffer.alloc(0), s: generateKeyPair(), rs: point });
      expectNoiseError(() => ik.writeMessage(Buffer.alloc(0)), point.toString('hex'));
    }
  });

  it('truncated and oversized messages', () => {
    const v = vectorNamed('IKpsk2');
    const full = hex((v.messages[0] as VectorMessage).ciphertext);
    for (const len of [0, 1, 31, 32, 63, 95, full.length - 1]) {
      const { resp } = vectorStates(v);
      expectNoiseError(() => resp.readMessage(full.subarray(0, len)), `length ${len}`);
    }
    const { resp } = vectorStates(v);
    expectNoiseError(() => resp.readMessage(Buffer.alloc(MAX_MESSAGE_BYTES + 1)));
  });

  it('misuse', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const base: HandshakeOptions = { pattern: 'IKpsk2', initiator: true, prologue: Buffer.alloc(0), s: a, rs: b.publicKey };
    for (const pattern of ['ZZ', 'IKpsk9', 'IKpsk3', 'IKpsk2+psk0', 'IKpsk2+psk2', 'IKpsk', 'N', 'IK1'] as PatternName[]) {
      expectNoiseError(() => new HandshakeState({ ...base, pattern }), pattern);
    }
    expectNoiseError(() => new HandshakeState({ ...base, s: undefined }), 'IK initiator without s');
    expectNoiseError(() => new HandshakeState({ ...base, rs: undefined }), 'IK initiator without rs');
    expectNoiseError(() => new HandshakeState({ ...base, initiator: false, s: b }), 'IK responder given rs');
    expectNoiseError(() => new HandshakeState({ ...base, rs: Buffer.alloc(31) }), 'short rs');
    expectNoiseError(() => new HandshakeState({ ...base, psks: [Buffer.alloc(16)] }), 'short psk');
    expectNoiseError(() => new HandshakeState({ ...base, psks: [Buffer.alloc(32), Buffer.alloc(32)] }), 'too many psks');
    expectNoiseError(() => new CipherState(Buffer.alloc(16)), 'short cipher key');

    const init = new HandshakeState(base);
    expectNoiseError(() => init.readMessage(Buffer.alloc(200)), 'reading out of turn');
    expectNoiseError(() => init.split(), 'split before the end');
    const resp = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue: Buffer.alloc(0), s: b });
    expectNoiseError(() => resp.writeMessage(Buffer.alloc(0)), 'writing out of turn');
    // e (32), the encrypted s (48) and the payload's tag (16) leave 65439 bytes of payload.
    const room = MAX_MESSAGE_BYTES - 32 - 48 - 16;
    expectNoiseError(() => init.writeMessage(Buffer.alloc(room + 1)), 'payload over the limit');
    const m1 = init.writeMessage(Buffer.alloc(room));
    assert.equal(m1.length, MAX_MESSAGE_BYTES);
    resp.readMessage(m1);
    expectNoiseError(() => resp.writeMessage(Buffer.alloc(0)), 'psk not set');
    expectNoiseError(() => resp.writeMessage(Buffer.alloc(0)), 'and the state is dead after it');
  });
});

describe('CipherState', () => {
  it('advances the nonce only on success and passes data through without a key', () => {
    const k = Buffer.alloc(32, 7);
    const a = new CipherState(k);
    const b = new CipherState(k);
    const ad = Buffer.from('ad');
    const c0 = a.encryptWithAd(ad, Buffer.from('zero'));
    const c1 = a.encryptWithAd(ad, Buffer.from('one'));
    assert.equal(a.nonce, 2);
    const bad = Buffer.from(c0);
    bad[0] = (bad[0] as number) ^ 1;
    expectNoiseError(() => b.decryptWithAd(ad, bad));
    expectNoiseError(() => b.decryptWithAd(ad, c0.subarray(0, 15)));
    expectNoiseError(() => b.decryptWithAd(Buffer.from('other'), c0));
    assert.equal(b.nonce, 0);
    assert.equal(b.decryptWithAd(ad, c0).toString(), 'zero');
    expectNoiseError(() => b.decryptWithAd(ad, c0), 'a replay is the wrong nonce');
    assert.equal(b.decryptWithAd(ad, c1).toString(), 'one');
    assert.deepEqual(b.key, k);

    const none = new CipherState();
    assert.equal(none.hasKey(), false);
    assert.equal(none.key, undefined);
    assert.equal(none.encryptWithAd(ad, Buffer.from('clear')).toString(), 'clear');
  });
});

describe('IKpsk2 round trip', () => {
  it('random keys; the responder picks the psk after message 1; both splits match', () => {
    const initiatorStatic = generateKeyPair();
    const responderStatic = generateKeyPair();
    const psk = generateKeyPair().privateKey;
    const prologue = Buffer.from('dp-tcp test');
    const init = new HandshakeState({ pattern: 'IKpsk2', initiator: true, prologue, s: initiatorStatic, rs: responderStatic.publicKey, psks: [psk] });
    const resp = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue, s: responderStatic });
    assert.equal(init.protocolName, PROTOCOL_IKPSK2);

    assert.equal(resp.readMessage(init.writeMessage(Buffer.from('timestamp'))).toString(), 'timestamp');
    assert.deepEqual(resp.remoteStatic, initiatorStatic.publicKey);
    assert.equal(resp.isComplete, false);
    resp.setPsks([psk]);
    const m2 = resp.writeMessage(Buffer.alloc(0));
    assert.equal(m2.length, 32 + 16, "e and the empty payload's tag");
    assert.equal(init.readMessage(m2).length, 0);
    assert.ok(init.isComplete && resp.isComplete);
    assert.deepEqual(init.remoteEphemeral, m2.subarray(0, 32));
    assert.deepEqual(init.handshakeHash(), resp.handshakeHash());

    const [i1, i2] = init.split();
    const [r1, r2] = resp.split();
    assert.ok(i1.key && i2.key);
    assert.deepEqual(i1.key, r1.key);
    assert.deepEqual(i2.key, r2.key);
    assert.notDeepEqual(i1.key, i2.key);
    expectNoiseError(() => init.split(), 'a second split would reuse nonces');
    const ad = Buffer.alloc(0);
    assert.equal(r1.decryptWithAd(ad, i1.encryptWithAd(ad, Buffer.from('up'))).toString(), 'up');
    assert.equal(i2.decryptWithAd(ad, r2.encryptWithAd(ad, Buffer.from('down'))).toString(), 'down');
  });
});
