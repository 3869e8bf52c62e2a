// SEALED records (docs/protocol.md): one AEAD record around zero or more
// whole frames, under a keypair made by one handshake.
//   length | version | type=SEALED | flags | reserved | receiver index (u32) | counter (u64) | ciphertext | tag (16)
// Nonce: 4 zero bytes and the counter; additional data: the 16 bytes from
// version to counter. The counter is the keypair's, shared by all links, so a
// (key, nonce) pair is never used for two plaintexts.
import { createCipheriv, createDecipheriv, type CipherGCMTypes } from 'node:crypto';
import { ProtocolError } from '../errors.js';
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
