// The cryptographic primitives of the secure channel, in one place: X25519,
// BLAKE2s (hash, HMAC, keyed 128-bit MAC), and the AEADs. node:crypto does
// most of it; @noble covers what Node 20 lacks (keyed BLAKE2s with a 16-byte
// output, XChaCha20-Poly1305).
import {
  createHash,
  type JsonWebKey,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { blake2s } from '@noble/hashes/blake2.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';

export const KEY_BYTES = 32;
export const HASH_BYTES = 32;
export const MAC_BYTES = 16;
export const TAG_BYTES = 16;

/** BLAKE2s-256 of the concatenation of `parts`. */
export function hash(...parts: Uint8Array[]): Buffer {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** HMAC-BLAKE2s (RFC 2104 over BLAKE2s-256), as Noise's HKDF uses it. */
export function hmac(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('blake2s256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Keyed BLAKE2s with a 16-byte output: WireGuard's MAC (mac1, mac2, cookies). */
export function mac(key: Uint8Array, data: Uint8Array): Buffer {
  return Buffer.from(blake2s(data, { key, dkLen: MAC_BYTES }));
}

export function equalConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// X25519 keys travel as 32 raw bytes; node:crypto wants key objects. Importing
// a raw private key (PKCS#8) costs about 0.4 ms, ten times a DH, so the key
// object is kept beside the Buffer that holds the key — weakly: when the
// handshake drops an ephemeral key, its key object goes with it (forward
// secrecy), while a static key's Buffer lives as long as the config does.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const keyObjects = new WeakMap<Uint8Array, KeyObject>();

function privateKeyObject(priv: Uint8Array): KeyObject {
  if (priv.length !== KEY_BYTES) throw new RangeError(`an X25519 private key is ${KEY_BYTES} bytes, got ${priv.length}`);
  let obj = keyObjects.get(priv);
  if (obj === undefined) {
    obj = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' });
    keyObjects.set(priv, obj);
  }
  return obj;
}

function publicKeyObject(pub: Uint8Array): KeyObject {
  if (pub.length !== KEY_BYTES) throw new RangeError(`an X25519 public key is ${KEY_BYTES} bytes, got ${pub.length}`);
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(pub).toString('base64url') }, format: 'jwk' });
}

/** A new X25519 private key (clamped, as RFC 7748 and `wg genkey` give them). */
export function generatePrivateKey(): Buffer {
  return generateKeyPair().privateKey;
}

export function publicKeyOf(priv: Uint8Array): Buffer {
  const jwk = createPublicKey(privateKeyObject(priv)).export({ format: 'jwk' });
  return Buffer.from(jwk.x as string, 'base64url');
}

export interface KeyPair {
  readonly privateKey: Buffer;
  readonly publicKey: Buffer;
}

export function generateKeyPair(): KeyPair {
  // The key comes out of the generator as JWK, never as a KeyObject that is exported afterwards:
  // exporting a freshly generated KeyObject lets a GC run inside the export finalize the
  // generator's job, which takes a lock the export holds (a deadlock seen in Node 20).
  // @types/node 20 lacks the 'jwk' overload that Node 20 has.
  const generate = generateKeyPairSync as unknown as (
    type: 'x25519',
    opts: { publicKeyEncoding: { format: 'jwk' }; privateKeyEncoding: { format: 'jwk' } },
  ) => { privateKey: JsonWebKey; publicKey: JsonWebKey };
  const { privateKey: jwk } = generate('x25519', { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } });
  const privateKey = Buffer.from(jwk.d as string, 'base64url');
  const publicKey = Buffer.from(jwk.x as string, 'base64url');
  // OpenSSL keeps the unclamped scalar; clamping is what X25519 applies anyway.
  privateKey[0] = (privateKey[0] as number) & 248;
  privateKey[31] = ((privateKey[31] as number) & 127) | 64;
  keyObjects.set(privateKey, createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: jwk.d as string, x: jwk.x as string }, format: 'jwk' }));
  return { privateKey, publicKey };
}

const ZERO_KEY = Buffer.alloc(KEY_BYTES);

/** X25519(priv, pub). Throws on an all-zero result (a low-order public key), as Noise allows. */
export function dh(priv: Uint8Array, pub: Uint8Array): Buffer {
  const out = diffieHellman({ privateKey: privateKeyObject(priv), publicKey: publicKeyObject(pub) });
  if (timingSafeEqual(out, ZERO_KEY)) throw new Error('X25519 produced the all-zero value (low-order public key)');
  return out;
}

/** XChaCha20-Poly1305 seal (24-byte nonce): the cookie reply. */
export function xaeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Buffer {
  return Buffer.from(xchacha20poly1305(key, nonce, ad).encrypt(plaintext));
}

/** XChaCha20-Poly1305 open; undefined if it does not authenticate. */
export function xaeadOpen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Buffer | undefined {
  try {
    return Buffer.from(xchacha20poly1305(key, nonce, ad).decrypt(ciphertext));
  } catch {
    return undefined;
  }
}
