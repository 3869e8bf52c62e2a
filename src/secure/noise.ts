// The Noise Protocol Framework (revision 34) for the suite 25519 / ChaChaPoly /
// BLAKE2s: CipherState, SymmetricState and a HandshakeState that runs any of
// the twelve fundamental interactive patterns from their token lists, with psk
// modifiers. The product uses IKpsk2, WireGuard's handshake; the other patterns
// cost one table row each and let the published test vectors check the engine.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { dh, generateKeyPair, hash, hmac, HASH_BYTES, KEY_BYTES, TAG_BYTES, type KeyPair } from './primitives.js';

/** Every Noise failure: bad MAC, wrong length, low-order key, misuse of the API. */
export class NoiseError extends Error {
  readonly code = 'ERR_NOISE';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NoiseError';
  }
}

export const PROTOCOL_IKPSK2 = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';

/**
 * Noise's limit on any message, tag included. Enforced here on handshake messages;
 * CipherState leaves transport sizes to the record layer that frames them.
 */
export const MAX_MESSAGE_BYTES = 65_535;
const DH_BYTES = KEY_BYTES;
const PSK_BYTES = 32;
const SUITE = '25519_ChaChaPoly_BLAKE2s';

type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss' | 'psk';

interface Pattern {
  /** Pre-message keys: what the initiator's and the responder's peer knows in advance. */
  readonly preInitiator: readonly Token[];
  readonly preResponder: readonly Token[];
  /** Messages alternate initiator -> responder, responder -> initiator, ... */
  readonly messages: readonly (readonly Token[])[];
}

// Section 7.4 of the specification, the interactive fundamental patterns.
const BASE_PATTERNS = {
  NN: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee']] },
  NK: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es'], ['e', 'ee']] },
  NX: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee', 's', 'es']] },
  XN: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee'], ['s', 'se']] },
  XK: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es'], ['e', 'ee'], ['s', 'se']] },
  XX: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']] },
  KN: { preInitiator: ['s'], preResponder: [], messages: [['e'], ['e', 'ee', 'se']] },
  KK: { preInitiator: ['s'], preResponder: ['s'], messages: [['e', 'es', 'ss'], ['e', 'ee', 'se']] },
  KX: { preInitiator: ['s'], preResponder: [], messages: [['e'], ['e', 'ee', 'se', 's', 'es']] },
  IN: { preInitiator: [], preResponder: [], messages: [['e', 's'], ['e', 'ee', 'se']] },
  IK: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es', 's', 'ss'], ['e', 'ee', 'se']] },
  IX: { preInitiator: [], preResponder: [], messages: [['e', 's'], ['e', 'ee', 'se', 's', 'es']] },
} as const satisfies Record<string, Pattern>;

export type BasePattern = keyof typeof BASE_PATTERNS;
type PskModifier = `psk${0 | 1 | 2 | 3}`;
/**
 * A fundamental pattern with psk modifiers in increasing order, e.g. 'IKpsk2', 'NNpsk0+psk2'.
 * The type spells out up to two; the engine takes any number (snow's NXpsk0+psk1+psk2).
 */
export type PatternName = BasePattern | `${BasePattern}${PskModifier}` | `${BasePattern}${PskModifier}+${PskModifier}`;

interface ResolvedPattern extends Pattern {
  readonly pskCount: number;
}

/** Applies the psk modifiers (section 9.2): psk0 opens the first message, pskN closes message N. */
function resolvePattern(name: string): ResolvedPattern {
  const m = /^([NKXI][NKX])((?:psk\d+)(?:\+psk\d+)*)?$/.exec(name);
  const base = m?.[1] === undefined ? undefined : (BASE_PATTERNS as Record<string, Pattern>)[m[1]];
  if (m === null || base === undefined) throw new NoiseError(`unsupported handshake pattern ${JSON.stringify(name)}`);
  const messages = base.messages.map((tokens) => [...tokens]);
  const modifiers = m[2] === undefined ? [] : m[2].split('+').map((p) => Number(p.slice(3)));
  let last = -1;
  for (const at of modifiers) {
    // Increasing order keeps one spelling per pattern, as the specification writes them.
    if (at <= last || at > messages.length) throw new NoiseError(`bad psk modifiers in ${JSON.stringify(name)}`);
    last = at;
    if (at === 0) messages[0]?.unshift('psk');
    else messages[at - 1]?.push('psk');
  }
  return { ...base, messages, pskCount: modifiers.length };
}

/** The 12-byte ChaChaPoly nonce: four zero bytes, then the 64-bit counter little-endian. */
function nonceBytes(n: number): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeUInt32LE(n >>> 0, 4);
  iv.writeUInt32LE(Math.floor(n / 0x1_0000_0000), 8);
  return iv;
}

/** A key and a counter (section 5.1). Without a key it passes data through, as Noise requires. */
export class CipherState {
  #key: Buffer | undefined;
  #n = 0;
  #wiped = false;

  constructor(key?: Buffer) {
    if (key !== undefined && key.length !== KEY_BYTES) throw new NoiseError(`a cipher key is ${KEY_BYTES} bytes, got ${key.length}`);
    this.#key = key === undefined ? undefined : Buffer.from(key);
  }

  hasKey(): boolean {
    return this.#key !== undefined;
  }

  get nonce(): number {
    return this.#n;
  }

  /** The raw key, for handing the transport keys to a record layer. */
  get key(): Buffer | undefined {
    return this.#key;
  }

  /** Zeroes the key and refuses any further use (without a key it would pass data through). */
  wipe(): void {
    this.#key?.fill(0);
    this.#key = undefined;
    this.#wiped = true;
  }

  #passThrough(data: Buffer): Buffer {
    if (this.#wiped) throw new NoiseError('cipher state used after it was wiped');
    return data;
  }

  // The counter is a JS number: exact to 2^53, far past any rekey limit, and
  // short of Noise's reserved 2^64-1, so reaching the end is an error here.
  #nextNonce(): Buffer {
    if (this.#n >= Number.MAX_SAFE_INTEGER) throw new NoiseError('nonce exhausted');
    return nonceBytes(this.#n);
  }

  encryptWithAd(ad: Buffer, plaintext: Buffer): Buffer {
    if (this.#key === undefined) return this.#passThrough(plaintext);
    const c = createCipheriv('chacha20-poly1305', this.#key, this.#nextNonce(), { authTagLength: TAG_BYTES });
    c.setAAD(ad, { plaintextLength: plaintext.length });
    const out = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
    this.#n++;
    return out;
  }

  /** Throws NoiseError if the ciphertext does not authenticate; the nonce advances only on success. */
  decryptWithAd(ad: Buffer, ciphertext: Buffer): Buffer {
    if (this.#key === undefined) return this.#passThrough(ciphertext);
    if (ciphertext.length < TAG_BYTES) throw new NoiseError(`ciphertext of ${ciphertext.length} bytes is shorter than its tag`);
    const body = ciphertext.subarray(0, ciphertext.length - TAG_BYTES);
    const d = createDecipheriv('chacha20-poly1305', this.#key, this.#nextNonce(), { authTagLength: TAG_BYTES });
    d.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_BYTES));
    d.setAAD(ad, { plaintextLength: body.length });
    let out: Buffer;
    try {
      out = Buffer.concat([d.update(body), d.final()]);
    } catch (e) {
      throw new NoiseError('message does not authenticate', { cause: e });
    }
    this.#n++;
    return out;
  }
}

const ONE = Buffer.of(1);
const TWO = Buffer.of(2);
const THREE = Buffer.of(3);

/** HKDF (section 4.3) with HMAC-BLAKE2s, two 32-byte outputs. */
function hkdf2(ck: Buffer, ikm: Buffer): [Buffer, Buffer] {
  const prk = hmac(ck, ikm);
  const o1 = hmac(prk, ONE);
  const o2 = hmac(prk, o1, TWO);
  prk.fill(0);
  return [o1, o2];
}

/** HKDF with three outputs, for MixKeyAndHash. */
function hkdf3(ck: Buffer, ikm: Buffer): [Buffer, Buffer, Buffer] {
  const prk = hmac(ck, ikm);
  const o1 = hmac(prk, ONE);
  const o2 = hmac(prk, o1, TWO);
  const o3 = hmac(prk, o2, THREE);
  prk.fill(0);
  return [o1, o2, o3];
}

/**
 * ck, h and the handshake's CipherState (section 5.2). Each chaining key and
 * handshake key is zeroed once the next replaces it, and the last ones by
 * wipe() (after split(), or when the handshake fails); h stays (no key is
 * derived from it alone, and handshakeHash() reads it).
 */
class SymmetricState {
  ck: Buffer;
  h: Buffer;
  cipher = new CipherState();

  constructor(protocolName: string) {
    const name = Buffer.from(protocolName, 'ascii');
    this.h = name.length <= HASH_BYTES ? Buffer.concat([name], HASH_BYTES) : hash(name);
    this.ck = Buffer.from(this.h);
  }

  mixKey(ikm: Buffer): void {
    const [ck, k] = hkdf2(this.ck, ikm);
    this.#rekey(ck, k);
  }

  /** The next ck and handshake key in place of the last ones, which are zeroed. */
  #rekey(ck: Buffer, k: Buffer): void {
    this.ck.fill(0);
    this.ck = ck;
    this.cipher.wipe();
    this.cipher = new CipherState(k);
    k.fill(0); // the CipherState holds a copy
  }

  wipe(): void {
    this.ck.fill(0);
    this.cipher.wipe();
  }

  mixHash(data: Buffer): void {
    this.h = hash(this.h, data);
  }

  mixKeyAndHash(ikm: Buffer): void {
    const [ck, th, k] = hkdf3(this.ck, ikm);
    this.mixHash(th);
    th.fill(0);
    this.#rekey(ck, k);
  }

  encryptAndHash(plaintext: Buffer): Buffer {
    const ct = this.cipher.encryptWithAd(this.h, plaintext);
    this.mixHash(ct);
    return ct;
  }

  decryptAndHash(ciphertext: Buffer): Buffer {
    const pt = this.cipher.decryptWithAd(this.h, ciphertext);
    this.mixHash(ciphertext);
    return pt;
  }

  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf2(this.ck, Buffer.alloc(0));
    const states: [CipherState, CipherState] = [new CipherState(k1), new CipherState(k2)];
    // The CipherStates hold copies; these would stay in the heap until collected.
    k1.fill(0);
    k2.fill(0);
    this.wipe();
    return states;
  }
}

export interface HandshakeOptions {
  pattern: PatternName;
  initiator: boolean;
  prologue: Buffer;
  /** Local static key pair. */
  s?: KeyPair;
  /** Local ephemeral: only for test vectors; normally generated. */
  e?: KeyPair;
  /** Remote static known in advance (IK, NK, KK, ...). */
  rs?: Buffer;
  /** 32-byte psks in order of use; may instead be given later with setPsks(). */
  psks?: Buffer[];
}

function checkKey(what: string, key: Buffer): Buffer {
  if (key.length !== KEY_BYTES) throw new NoiseError(`${what} is ${KEY_BYTES} bytes, got ${key.length}`);
  return key;
}

/** One side of a handshake (section 5.3). After any failure the state is dead and refuses further use. */
export class HandshakeState {
  readonly protocolName: string;
  readonly #pattern: ResolvedPattern;
  readonly #initiator: boolean;
  readonly #ss: SymmetricState;
  readonly #s: KeyPair | undefined;
  #e: KeyPair | undefined;
  /** #e was generated here (not given for test vectors): its private key is ours to zero. */
  #eOwned = false;
  #rs: Buffer | undefined;
  #re: Buffer | undefined;
  #psks: Buffer[] | undefined;
  #pskIndex = 0;
  #message = 0;
  #dead = false;
  #splitDone = false;
  /** Bytes each message adds to its payload, known in advance so an oversized payload fails before any state changes. */
  readonly #overheads: number[];

  constructor(opts: HandshakeOptions) {
    this.#pattern = resolvePattern(opts.pattern);
    this.#initiator = opts.initiator;
    this.protocolName = `Noise_${opts.pattern}_${SUITE}`;
    this.#s = opts.s === undefined ? undefined : { privateKey: checkKey('s private key', opts.s.privateKey), publicKey: checkKey('s public key', opts.s.publicKey) };
    this.#e = opts.e === undefined ? undefined : { privateKey: checkKey('e private key', opts.e.privateKey), publicKey: checkKey('e public key', opts.e.publicKey) };
    this.#rs = opts.rs === undefined ? undefined : checkKey('remote static key', opts.rs);
    if (opts.psks !== undefined) this.setPsks(opts.psks);

    const mine = (i: number): boolean => (i % 2 === 0) === this.#initiator;
    const needsS = this.#pattern.messages.some((m, i) => mine(i) && m.includes('s')) || (this.#initiator ? this.#pattern.preInitiator : this.#pattern.preResponder).includes('s');
    if (needsS && this.#s === undefined) throw new NoiseError(`${opts.pattern} needs a local static key`);
    const knowsRs = (this.#initiator ? this.#pattern.preResponder : this.#pattern.preInitiator).includes('s');
    if (knowsRs && this.#rs === undefined) throw new NoiseError(`${opts.pattern} needs the remote static key in advance`);
    if (!knowsRs && this.#rs !== undefined) throw new NoiseError(`${opts.pattern} learns the remote static key from the handshake`);

    this.#ss = new SymmetricState(this.protocolName);
    this.#ss.mixHash(opts.prologue);
    // Pre-messages hash the keys the peers know already, initiator's first (section 7.1).
    for (const [tokens, ofInitiator] of [[this.#pattern.preInitiator, true], [this.#pattern.preResponder, false]] as const) {
      for (const t of tokens) {
        const key = ofInitiator === this.#initiator ? this.#s?.publicKey : this.#rs;
        if (t !== 's' || key === undefined) throw new NoiseError(`unsupported pre-message token ${t}`);
        this.#ss.mixHash(key);
      }
    }
    this.#overheads = this.#computeOverheads();
  }

  #computeOverheads(): number[] {
    const psk = this.#pattern.pskCount > 0;
    let keyed = false;
    return this.#pattern.messages.map((tokens) => {
      let bytes = 0;
      for (const t of tokens) {
        if (t === 'e') {
          bytes += DH_BYTES;
          keyed ||= psk;
        } else if (t === 's') {
          bytes += DH_BYTES + (keyed ? TAG_BYTES : 0);
        } else {
          keyed = true;
        }
      }
      return bytes + (keyed ? TAG_BYTES : 0);
    });
  }

  /** Psks in order of use; an IKpsk2 responder sets them once message 1 has named the peer. */
  setPsks(psks: Buffer[]): void {
    if (psks.length !== this.#pattern.pskCount) throw new NoiseError(`this pattern uses ${this.#pattern.pskCount} psks, got ${psks.length}`);
    for (const p of psks) if (p.length !== PSK_BYTES) throw new NoiseError(`a psk is ${PSK_BYTES} bytes, got ${p.length}`);
    this.#psks = psks.map((p) => Buffer.from(p));
  }

  get remoteStatic(): Buffer | undefined {
    return this.#rs;
  }

  get remoteEphemeral(): Buffer | undefined {
    return this.#re;
  }

  get isComplete(): boolean {
    return this.#message === this.#pattern.messages.length;
  }

  /** h: after the handshake, a value both sides share that names this session (channel binding). */
  handshakeHash(): Buffer {
    return Buffer.from(this.#ss.h);
  }

  /**
   * [initiator -> responder, responder -> initiator]. Once only: a second pair
   * would start at nonce 0 again under the same keys.
   */
  split(): [CipherState, CipherState] {
    if (this.#dead) throw new NoiseError('handshake failed earlier');
    if (!this.isComplete) throw new NoiseError('split() before the handshake is complete');
    if (this.#splitDone) throw new NoiseError('split() called twice');
    this.#splitDone = true;
    return this.#ss.split();
  }

  writeMessage(payload: Buffer): Buffer {
    const tokens = this.#nextTokens(true);
    const overhead = this.#overheads[this.#message] ?? 0;
    if (payload.length + overhead > MAX_MESSAGE_BYTES) {
      throw new NoiseError(`handshake payload of ${payload.length} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte message limit`);
    }
    return this.#guard(() => {
      const out: Buffer[] = [];
      for (const t of tokens) {
        if (t === 'e') {
          if (this.#e === undefined) {
            this.#e = generateKeyPair();
            this.#eOwned = true;
          }
          out.push(this.#e.publicKey);
          this.#mixEphemeral(this.#e.publicKey);
        } else if (t === 's') {
          out.push(this.#ss.encryptAndHash(this.#need(this.#s, 's').publicKey));
        } else {
          this.#mixToken(t);
        }
      }
      out.push(this.#ss.encryptAndHash(payload));
      this.#advance();
      return Buffer.concat(out);
    });
  }

  /** Returns the payload. Throws NoiseError, after which this state is dead. */
  readMessage(message: Buffer): Buffer {
    const tokens = this.#nextTokens(false);
    return this.#guard(() => {
      if (message.length > MAX_MESSAGE_BYTES) throw new NoiseError(`message of ${message.length} bytes exceeds ${MAX_MESSAGE_BYTES}`);
      const min = this.#overheads[this.#message] ?? 0;
      if (message.length < min) throw new NoiseError(`handshake message ${this.#message + 1} is ${message.length} bytes, shorter than ${min}`);
      let at = 0;
      for (const t of tokens) {
        if (t === 'e') {
          this.#re = Buffer.from(message.subarray(at, at + DH_BYTES));
          at += DH_BYTES;
          this.#mixEphemeral(this.#re);
        } else if (t === 's') {
          const len = DH_BYTES + (this.#ss.cipher.hasKey() ? TAG_BYTES : 0);
          this.#rs = this.#ss.decryptAndHash(Buffer.from(message.subarray(at, at + len)));
          at += len;
        } else {
          this.#mixToken(t);
        }
      }
      const payload = this.#ss.decryptAndHash(message.subarray(at));
      this.#advance();
      return payload;
    });
  }

  // Once the last message is through, nothing needs the ephemeral secret or the
  // psks again: they are zeroed and dropped, out of long-lived session objects.
  #advance(): void {
    this.#message++;
    if (this.isComplete) this.#forgetSecrets();
  }

  /** Gives the handshake up unfinished: its secrets are zeroed, as after a failure, and any further use throws. */
  abandon(): void {
    this.#dead = true;
    this.#forgetSecrets();
    this.#ss.wipe();
  }

  /**
   * Zeroes the ephemeral private key (one generated here; node:crypto's key
   * object for it lives until collected) and this state's copies of the psks.
   * The static key is the caller's.
   */
  #forgetSecrets(): void {
    if (this.#eOwned) this.#e?.privateKey.fill(0);
    this.#e = undefined;
    for (const p of this.#psks ?? []) p.fill(0);
    this.#psks = undefined;
  }

  #nextTokens(writing: boolean): readonly Token[] {
    if (this.#dead) throw new NoiseError('handshake failed earlier');
    const tokens = this.#pattern.messages[this.#message];
    if (tokens === undefined) throw new NoiseError('handshake already complete');
    if ((this.#message % 2 === 0) !== (this.#initiator === writing)) {
      throw new NoiseError(`not this side's turn to ${writing ? 'write' : 'read'} message ${this.#message + 1}`);
    }
    return tokens;
  }

  /** Runs one message's processing; any failure kills the state and surfaces as NoiseError. */
  #guard<T>(work: () => T): T {
    try {
      return work();
    } catch (e) {
      this.abandon();
      throw e instanceof NoiseError ? e : new NoiseError(e instanceof Error ? e.message : String(e), { cause: e });
    }
  }

  // With a psk the `e` token also keys the cipher (section 9.2), so nothing is
  // sent in clear after a psk and the ephemeral is bound to it.
  #mixEphemeral(pub: Buffer): void {
    this.#ss.mixHash(pub);
    if (this.#pattern.pskCount > 0) this.#ss.mixKey(pub);
  }

  #mixToken(t: Token): void {
    const i = this.#initiator;
    switch (t) {
      case 'ee':
        return this.#mixShared(this.#dh(this.#e, this.#re));
      case 'es':
        return this.#mixShared(i ? this.#dh(this.#e, this.#rs) : this.#dh(this.#s, this.#re));
      case 'se':
        return this.#mixShared(i ? this.#dh(this.#s, this.#re) : this.#dh(this.#e, this.#rs));
      case 'ss':
        return this.#mixShared(this.#dh(this.#s, this.#rs));
      case 'psk': {
        const psk = this.#psks?.[this.#pskIndex];
        if (psk === undefined) throw new NoiseError('psk needed but not set (setPsks)');
        this.#pskIndex++;
        return this.#ss.mixKeyAndHash(psk);
      }
      default:
        throw new NoiseError(`token ${t} is not a key agreement`);
    }
  }

  /** MixKey(DH output), then the output is zeroed. */
  #mixShared(shared: Buffer): void {
    try {
      this.#ss.mixKey(shared);
    } finally {
      shared.fill(0);
    }
  }

  #dh(local: KeyPair | undefined, remote: Buffer | undefined): Buffer {
    try {
      return dh(this.#need(local, 'local key').privateKey, this.#need(remote, 'remote key'));
    } catch (e) {
      if (e instanceof NoiseError) throw e;
      throw new NoiseError('X25519 failed (low-order or invalid public key)', { cause: e });
    }
  }

  #need<T>(v: T | undefined, what: string): T {
    if (v === undefined) throw new NoiseError(`${what} missing at this point of the pattern`);
    return v;
  }
}
