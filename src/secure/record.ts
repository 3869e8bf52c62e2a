// SEALED records (docs/protocol.md): one AEAD record around zero or more
// whole frames, under a keypair made by one handshake.
//   length | version | type=SEALED | flags | reserved | receiver index (u32) | counter (u64) | ciphertext | tag (16)
// Nonce: 4 zero bytes and the counter; additional data: the 16 bytes from
// version to counter. The counter is the keypair's, shared by all links, so a
// (key, nonce) pair is never used for two plaintexts.
import { createCipheriv, createDecipheriv, type CipherGCMTypes } from 'node:crypto';
import { ProtocolError } from '../errors.js';
import { optionalAddon } from '../tun/loader.js';
import type { NativeAead } from '../tun/native.js';
import { FRAME_HEADER_BYTES, FrameType, readU64, writeFrameHeader, writeU64 } from '../protocol/frame.js';
import type { CipherName } from '../protocol/handshake.js';
import { TAG_BYTES } from './primitives.js';

export { TAG_BYTES };
/** Frame header + receiver index + counter in front of the ciphertext. */
export const SEALED_HEADER_BYTES = FRAME_HEADER_BYTES + 4 + 8;
/** Bytes a SEALED frame adds around its plaintext. */
export const SEALED_OVERHEAD_BYTES = SEALED_HEADER_BYTES + TAG_BYTES;

function nonceFor(counter: number): Buffer {
  const n = Buffer.alloc(12);
  writeU64(n, 4, counter);
  return n;
}

/** Seals `frames` as one SEALED frame for the receiver's `index`, numbered `counter`. */
export function sealRecord(cipher: CipherName, key: Buffer, index: number, counter: number, frames: Buffer): Buffer {
  const out = Buffer.allocUnsafe(SEALED_OVERHEAD_BYTES + frames.length);
  writeFrameHeader(out, 0, FrameType.Sealed, 12 + frames.length + TAG_BYTES);
  out.writeUInt32BE(index, FRAME_HEADER_BYTES);
  writeU64(out, FRAME_HEADER_BYTES + 4, counter);
  const c = createCipheriv(cipher as CipherGCMTypes, key, nonceFor(counter), { authTagLength: TAG_BYTES });
  c.setAAD(out.subarray(4, SEALED_HEADER_BYTES));
  const n = c.update(frames).copy(out, SEALED_HEADER_BYTES);
  c.final();
  c.getAuthTag().copy(out, SEALED_HEADER_BYTES + n);
  return out;
}

/** The receiver index and counter of a SEALED body (`buf[start..end)`, after the frame header). */
export function recordHeader(buf: Buffer, start: number, end: number): { index: number; counter: number } {
  if (end - start < 12 + TAG_BYTES) throw new ProtocolError('SEALED frame too short');
  return { index: buf.readUInt32BE(start), counter: readU64(buf, start + 4) };
}

/** Opens a SEALED body; undefined if it does not authenticate (tampered, or not this key). */
export function openRecord(cipher: CipherName, key: Buffer, counter: number, buf: Buffer, start: number, end: number): Buffer | undefined {
  const d = createDecipheriv(cipher as CipherGCMTypes, key, nonceFor(counter), { authTagLength: TAG_BYTES });
  d.setAAD(buf.subarray(start - 4, start + 12));
  d.setAuthTag(buf.subarray(end - TAG_BYTES, end));
  const plain = d.update(buf.subarray(start + 12, end - TAG_BYTES));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return plain;
}

/**
 * One direction's key of a keypair, set up once. With the addon, records are
 * sealed and opened in place through OpenSSL's EVP (one key schedule per
 * keypair, no allocation per record, no copy of the plaintext out); without
 * it, through node:crypto (sealRecord / openRecord). Both give the same bytes.
 */
export interface RecordKey {
  /**
   * As sealRecord; into the buffer `alloc` returns for the record's size, if
   * it returns one (the addon's path; node:crypto's allocates its own).
   */
  seal(index: number, counter: number, frames: Buffer, alloc?: RecordAlloc): Buffer;
  /**
   * As openRecord; the plaintext may be `buf` itself, decrypted in place (a
   * view, valid as long as `buf` is).
   */
  open(counter: number, buf: Buffer, start: number, end: number): Buffer | undefined;
  /**
   * Retires the key: the addon's cipher context is freed (OpenSSL cleanses
   * its key schedule). seal and open throw from then on. Idempotent. The key
   * Buffer given to recordKey is the caller's to zero.
   */
  destroy(): void;
}

/** A buffer of exactly `bytes` to seal a record into, or undefined (the sealer allocates one). */
export type RecordAlloc = (bytes: number) => Buffer | undefined;

type AeadClass = new (cipher: string, key: Buffer, encrypt: boolean) => NativeAead;
let aeadClass: AeadClass | null | undefined;
function nativeAead(): AeadClass | null {
  if (aeadClass === undefined) {
    const c = process.env['DPTCP_NATIVE_AEAD'] === '0' ? undefined : (optionalAddon()?.Aead as AeadClass | undefined);
    aeadClass = typeof c === 'function' ? c : null;
  }
  return aeadClass;
}

function destroyedError(what: 'seal' | 'open'): Error {
  return new Error(`${what}: the key was destroyed (its keypair is retired)`);
}

export function recordKey(cipher: CipherName, key: Buffer, encrypt: boolean): RecordKey {
  const Aead = nativeAead();
  if (Aead === null) {
    // node:crypto reads `key` on every call: once its owner zeroes it, it must not be used.
    let destroyed = false;
    return {
      seal(index, counter, frames) {
        if (destroyed) throw destroyedError('seal');
        return sealRecord(cipher, key, index, counter, frames);
      },
      open(counter, buf, start, end) {
        if (destroyed) throw destroyedError('open');
        return openRecord(cipher, key, counter, buf, start, end);
      },
      destroy() {
        destroyed = true;
      },
    };
  }
  const aead = new Aead(cipher, key, encrypt);
  return {
    seal(index, counter, frames, alloc) {
      const bytes = SEALED_OVERHEAD_BYTES + frames.length;
      const out = alloc?.(bytes) ?? Buffer.allocUnsafe(bytes);
      writeFrameHeader(out, 0, FrameType.Sealed, 12 + frames.length + TAG_BYTES);
      out.writeUInt32BE(index, FRAME_HEADER_BYTES);
      writeU64(out, FRAME_HEADER_BYTES + 4, counter);
      aead.seal(out, SEALED_HEADER_BYTES, frames.length, counter, 4, frames);
      return out;
    },
    open(counter, buf, start, end) {
      if (end - start < 12 + TAG_BYTES) return undefined;
      const textStart = start + 12;
      const textEnd = end - TAG_BYTES;
      return aead.open(buf, textStart, textEnd - textStart, counter, start - 4) ? buf.subarray(textStart, textEnd) : undefined;
    },
    destroy() {
      aead.destroy();
    },
  };
}
