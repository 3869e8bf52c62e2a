// SEALED frames: one AEAD record around one or more whole frames (a whole TUN
// batch, shared by all links, is sealed once).
//   length | version | type=SEALED | flags | reserved | counter (u64) | ciphertext | tag (16)
// The 12-byte nonce is 4 zero bytes and the counter; the additional data is
// the 12 bytes from version to counter. Each direction of a session has its own
// key and its own counter, so a (key, nonce) pair is never used twice.
import { createCipheriv, createDecipheriv, type CipherGCMTypes } from 'node:crypto';
import { ProtocolError } from '../errors.js';
import { FRAME_HEADER_BYTES, FrameType, readU64, writeFrameHeader, writeU64 } from './frame.js';

export const CIPHERS = ['chacha20-poly1305', 'aes-256-gcm'] as const;
export type CipherName = (typeof CIPHERS)[number];
export const TAG_BYTES = 16;
/** Frame header + counter in front of the ciphertext. */
export const SEALED_HEADER_BYTES = FRAME_HEADER_BYTES + 8;

function nonceFor(counter: number): Buffer {
  const n = Buffer.alloc(12);
  writeU64(n, 4, counter);
  return n;
}

export class Sealer {
  private counter = 0;

  constructor(
    private readonly cipher: CipherName,
    private readonly key: Buffer,
  ) {}

  /** Seals `frames` (whole frames) into one SEALED frame. */
  seal(frames: Buffer): Buffer {
    const counter = ++this.counter;
    const out = Buffer.allocUnsafe(SEALED_HEADER_BYTES + frames.length + TAG_BYTES);
    writeFrameHeader(out, 0, FrameType.Sealed, 8 + frames.length + TAG_BYTES);
    writeU64(out, FRAME_HEADER_BYTES, counter);
    const c = createCipheriv(this.cipher as CipherGCMTypes, this.key, nonceFor(counter), { authTagLength: TAG_BYTES });
    c.setAAD(out.subarray(4, SEALED_HEADER_BYTES));
    const n = c.update(frames).copy(out, SEALED_HEADER_BYTES);
    c.final();
    c.getAuthTag().copy(out, SEALED_HEADER_BYTES + n);
    return out;
  }
}

export class Opener {
  constructor(
    private readonly cipher: CipherName,
    private readonly key: Buffer,
  ) {}

  /**
   * Opens the body of a SEALED frame (`buf[start..end)`, after the frame
   * header); returns the inner frames. Throws ProtocolError if it was tampered with.
   */
  open(buf: Buffer, start: number, end: number): Buffer {
    if (end - start < 8 + TAG_BYTES) throw new ProtocolError('SEALED frame too short');
    const counter = readU64(buf, start);
    const d = createDecipheriv(this.cipher as CipherGCMTypes, this.key, nonceFor(counter), { authTagLength: TAG_BYTES });
    d.setAAD(buf.subarray(start - 4, start + 8));
    d.setAuthTag(buf.subarray(end - TAG_BYTES, end));
    const plain = d.update(buf.subarray(start + 8, end - TAG_BYTES));
    try {
      d.final();
    } catch {
      throw new ProtocolError('SEALED frame failed authentication (tampered, or the wrong key)');
    }
    return plain;
  }
}
