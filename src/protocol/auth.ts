// Link authentication and session keys, as in docs/protocol.md: a mutual
// HMAC-SHA256 challenge over fresh nonces from both sides, and per-session,
// per-direction AEAD keys derived with HKDF.
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

export const NONCE_BYTES = 16;
export const PROOF_BYTES = 32;
export const KEY_BYTES = 32;

const SERVER_LABEL = Buffer.from('dp-tcp v1 server proof', 'ascii');
const CLIENT_LABEL = Buffer.from('dp-tcp v1 client proof', 'ascii');

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** The server's proof: binds the client's whole HELLO (with its nonce) and the server nonce. */
export function serverProof(psk: Buffer, helloBody: Buffer, serverNonce: Buffer): Buffer {
  return createHmac('sha256', psk).update(SERVER_LABEL).update(helloBody).update(serverNonce).digest();
}

/** The client's proof: binds the same, plus the server's proof. */
export function clientProof(psk: Buffer, helloBody: Buffer, serverNonce: Buffer, serverMac: Buffer): Buffer {
  return createHmac('sha256', psk).update(CLIENT_LABEL).update(helloBody).update(serverNonce).update(serverMac).digest();
}

/** Constant-time comparison of two proofs. */
export function proofsEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export type Direction = 'c2s' | 's2c';

/** One AEAD key per session and direction: a new session id or server epoch gives new keys. */
export function sessionKey(psk: Buffer, sessionId: Buffer, epoch: Buffer, dir: Direction): Buffer {
  const salt = Buffer.concat([sessionId, epoch]);
  return Buffer.from(hkdfSync('sha256', psk, salt, `dp-tcp v1 ${dir}`, KEY_BYTES));
}
