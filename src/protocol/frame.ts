// Framing of docs/protocol.md: u32 length, then version, type, flags, reserved.
import { ProtocolError, VersionError } from '../errors.js';

export const PROTOCOL_VERSION = 2;
/** Bytes of the length prefix. */
export const LENGTH_BYTES = 4;
/** Length prefix plus version, type, flags, reserved. */
export const FRAME_HEADER_BYTES = 8;
/** Frame header plus the u64 sequence number. */
export const DATA_HEADER_BYTES = 16;
/** A 64 KiB offloaded packet with its virtio_net_hdr, sealed, with room to spare. */
export const DEFAULT_MAX_FRAME_BYTES = 66_000;

export const FrameType = {
  Hello: 1,
  Welcome: 2,
  Data: 3,
  Ping: 4,
  Pong: 5,
  Close: 6,
  LinkDown: 7,
  Initiation: 8,
  Response: 9,
  Sealed: 10,
  Cookie: 11,
  Ack: 12,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const FRAME_TYPE_NAMES: Record<number, string> = {
  1: 'HELLO',
  2: 'WELCOME',
  3: 'DATA',
  4: 'PING',
  5: 'PONG',
  6: 'CLOSE',
  7: 'LINKDOWN',
  8: 'INITIATION',
  9: 'RESPONSE',
  10: 'SEALED',
  11: 'COOKIE',
  12: 'ACK',
};

/** Smallest body (after the 4 header bytes) each type may have. */
const MIN_BODY: Record<number, number> = {
  1: 4 + 16 + 1 + 2 + 2 + 1,
  2: 10,
  3: 9,
  4: 8,
  5: 8,
  6: 4,
  7: 2,
  // Sizes of the keyed handshake are checked exactly by src/secure/handshake.ts.
  8: 4 + 32 + 48 + 16 + 32,
  9: 4 + 4 + 32 + 16,
  10: 4 + 8 + 16,
  11: 4 + 24 + 32,
  12: 10,
};

export const CloseCode = {
  Shutdown: 1,
  ProtocolError: 2,
  Replaced: 3,
  SessionRetired: 4,
  HandshakeRefused: 5,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * Called once per complete frame. `buf[start..end)` is the body after the
 * 8-byte header. The bytes are valid during the call only: `buf` may be the
 * decoder's gathering buffer or a read buffer that the next read overwrites,
 * so a receiver that keeps any of them copies them.
 */
export type FrameHandler = (type: FrameType, buf: Buffer, start: number, end: number) => void;

/**
 * Reassembles frames from a TCP byte stream. A frame inside one chunk is
 * handed on as a view of that chunk (no copy); a frame split across chunks is
 * gathered into one buffer the decoder keeps and reuses (grown to the largest
 * frame seen, no more than the maximum), so a peer feeding one byte at a time
 * costs linear, not quadratic, work and a busy link allocates nothing per frame.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(LENGTH_BYTES);
  private headerFill = 0;
  /** The frame being gathered lies in gather[0..partialTotal); null: none. */
  private partial: Buffer | null = null;
  private partialFill = 0;
  private partialTotal = 0;
  /**
   * Two, used in turn: a frame completed from one may still be waiting with
   * its receiver (until the end of the chunk) when the chunk's last frame
   * starts gathering in the other.
   */
  private readonly gather: [Buffer | null, Buffer | null] = [null, null];
  private gatherTurn = 0;

  constructor(
    private maxFrameBytes: number,
    private readonly onFrame: FrameHandler,
  ) {}

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.headerFill + this.partialFill;
  }

  /** Forgets any partial frame. */
  reset(): void {
    this.headerFill = 0;
    this.partial = null;
    this.partialFill = 0;
  }

  /**
   * What the frame held in part needs to be whole: 0 when none is held (the
   * next byte starts a frame), -1 when not known yet (only part of its
   * length field is here).
   */
  get needBytes(): number {
    if (this.headerFill > 0) return -1;
    return this.partial === null ? 0 : this.partialTotal - this.partialFill;
  }

  /** The longest frame accepted now. */
  get maxBytes(): number {
    return this.maxFrameBytes;
  }

  /** Before a link is authenticated only small frames are accepted. */
  setMaxFrameBytes(n: number): void {
    this.maxFrameBytes = n;
  }

  /** Throws ProtocolError on a malformed frame; the stream is then unusable. */
  push(chunk: Buffer): void {
    let off = 0;
    const len = chunk.length;
    if (this.headerFill > 0) {
      const take = Math.min(LENGTH_BYTES - this.headerFill, len);
      chunk.copy(this.header, this.headerFill, 0, take);
      this.headerFill += take;
      off = take;
      if (this.headerFill < LENGTH_BYTES) return;
      this.headerFill = 0;
      const total = this.frameTotal(this.header.readUInt32BE(0));
      this.partial = this.gatherBuffer(total);
      this.partialTotal = total;
      this.header.copy(this.partial, 0);
      this.partialFill = LENGTH_BYTES;
    }
    if (this.partial !== null) {
      const p = this.partial;
      const total = this.partialTotal;
      const take = Math.min(total - this.partialFill, len - off);
      chunk.copy(p, this.partialFill, off, off + take);
      this.partialFill += take;
      off += take;
      if (this.partialFill < total) return;
      this.partial = null;
      this.partialFill = 0;
      this.emit(p, 0, total);
    }
    while (off < len) {
      if (len - off < LENGTH_BYTES) {
        chunk.copy(this.header, 0, off, len);
        this.headerFill = len - off;
        return;
      }
      const total = this.frameTotal(chunk.readUInt32BE(off));
      if (len - off >= total) {
        this.emit(chunk, off, off + total);
        off += total;
      } else {
        const p = this.gatherBuffer(total);
        chunk.copy(p, 0, off, len);
        this.partial = p;
        this.partialTotal = total;
        this.partialFill = len - off;
        return;
      }
    }
  }

  /** The next gathering buffer, at least `total` bytes (a frame's length was checked against the maximum). */
  private gatherBuffer(total: number): Buffer {
    const i = (this.gatherTurn ^= 1);
    let g = this.gather[i] ?? null;
    if (g === null || g.length < total) this.gather[i] = g = Buffer.allocUnsafeSlow(total);
    return g;
  }

  private frameTotal(length: number): number {
    if (length < FRAME_HEADER_BYTES - LENGTH_BYTES) {
      throw new ProtocolError(`frame length ${length} is shorter than a frame header`);
    }
    if (length > this.maxFrameBytes) {
      throw new ProtocolError(`frame length ${length} exceeds the maximum of ${this.maxFrameBytes}`);
    }
    return LENGTH_BYTES + length;
  }

  private emit(buf: Buffer, start: number, end: number): void {
    checkedEmit(buf, start, end, this.onFrame);
  }
}

/** Writes a frame header for a body of `bodyBytes` at `buf[off]`. */
export function writeFrameHeader(buf: Buffer, off: number, type: FrameType, bodyBytes: number): void {
  buf.writeUInt32BE(FRAME_HEADER_BYTES - LENGTH_BYTES + bodyBytes, off);
  buf[off + 4] = PROTOCOL_VERSION;
  buf[off + 5] = type;
  buf[off + 6] = 0;
  buf[off + 7] = 0;
}

/** DATA flags bit 0: sent on one link only (striped): the receiver releases it in sequence order. */
export const DATA_IN_ORDER = 0x01;

/** Writes a DATA header (frame header + seq) in front of a packet of `packetBytes`. */
export function writeDataHeader(buf: Buffer, off: number, seq: number, packetBytes: number, flags = 0): void {
  writeFrameHeader(buf, off, FrameType.Data, 8 + packetBytes);
  buf[off + 6] = flags;
  writeU64(buf, off + 8, seq);
}

/**
 * u64 as two u32 halves: sequence numbers stay below 2^53, exact in a double.
 * Below 2^32 (every sequence number for a long while) writeU64 and readU64 do
 * no floating-point arithmetic: until V8 compiles them, each such result is a
 * heap number allocated per packet, and a field that once holds one (the
 * eliminator's) allocates on every read.
 */
export function writeU64(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32BE(v > 0xffff_ffff ? Math.floor(v / 0x1_0000_0000) : 0, off);
  buf.writeUInt32BE(v >>> 0, off + 4);
}

export function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32BE(off);
  const lo = buf.readUInt32BE(off + 4);
  return hi === 0 ? lo : hi * 0x1_0000_0000 + lo;
}

/**
 * If `buf` is a run of whole frames (as this side builds them: each length
 * at least a header's, the last ending exactly at the end of `buf`), the end
 * of the frame that holds byte `pos` and how many whole frames follow it;
 * otherwise the end of `buf` and none.
 */
export function frameAfter(buf: Buffer, pos: number): { end: number; following: number } {
  let off = 0;
  let end = -1;
  let following = 0;
  while (off + LENGTH_BYTES <= buf.length) {
    const length = buf.readUInt32BE(off);
    if (length < FRAME_HEADER_BYTES - LENGTH_BYTES) break;
    off += LENGTH_BYTES + length;
    if (end >= 0) following++;
    else if (off > pos) end = off;
  }
  if (off !== buf.length || end < 0) return { end: buf.length, following: 0 };
  return { end, following };
}

/** Largest sequence number or counter a peer may send: exact in a double. */
export const MAX_SAFE_U64 = Number.MAX_SAFE_INTEGER;

/**
 * Walks the whole frames inside a sealed record's plaintext. Every length is
 * checked against the bytes left and `maxFrameBytes` before it is used; a
 * record that does not end exactly at a frame boundary is a ProtocolError.
 */
export function forEachFrame(plain: Buffer, maxFrameBytes: number, onFrame: FrameHandler): void {
  let off = 0;
  while (off < plain.length) {
    if (plain.length - off < FRAME_HEADER_BYTES) throw new ProtocolError('sealed record ends inside a frame header');
    const length = plain.readUInt32BE(off);
    if (length < FRAME_HEADER_BYTES - LENGTH_BYTES || length > maxFrameBytes) {
      throw new ProtocolError(`inner frame length ${length} is out of range`);
    }
    const end = off + LENGTH_BYTES + length;
    if (end > plain.length) throw new ProtocolError(`inner frame of ${length} bytes runs past the end of its record`);
    checkedEmit(plain, off, end, onFrame);
    off = end;
  }
}

function checkedEmit(buf: Buffer, start: number, end: number, onFrame: FrameHandler): void {
  const version = buf[start + 4];
  const type = buf[start + 5] as number;
  if (version !== PROTOCOL_VERSION) throw new VersionError(version as number);
  const min = MIN_BODY[type];
  if (min === undefined) throw new ProtocolError(`unknown frame type ${type}`);
  const bodyStart = start + FRAME_HEADER_BYTES;
  if (end - bodyStart < min) {
    throw new ProtocolError(`${FRAME_TYPE_NAMES[type]} frame body of ${end - bodyStart} bytes is too short`);
  }
  onFrame(type as FrameType, buf, bodyStart, end);
}

/** A peer's text (a CLOSE reason) made safe to log: no control characters, bounded. */
export function sanitizeText(text: string, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

export function encodeFrame(type: FrameType, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  writeFrameHeader(out, 0, type, body.length);
  body.copy(out, FRAME_HEADER_BYTES);
  return out;
}

export function encodeData(seq: number, packet: Buffer): Buffer {
  const out = Buffer.allocUnsafe(DATA_HEADER_BYTES + packet.length);
  writeDataHeader(out, 0, seq, packet.length);
  packet.copy(out, DATA_HEADER_BYTES);
  return out;
}

export function encodeToken(type: typeof FrameType.Ping | typeof FrameType.Pong, token: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 8);
  writeFrameHeader(out, 0, type, 8);
  writeU64(out, FRAME_HEADER_BYTES, token);
  return out;
}

const MAX_REASON_BYTES = 200;

/** CLOSE names the link it closes: a sealed CLOSE moved to another link by someone on the path is ignored. */
export const CLOSE_ANY_LINK = 0xffff;

export function encodeClose(code: CloseCode, reason: string, linkId = CLOSE_ANY_LINK): Buffer {
  let text = Buffer.from(reason, 'utf8');
  if (text.length > MAX_REASON_BYTES) {
    // Cut before a character, not inside one: back over UTF-8 continuation bytes (10xxxxxx).
    let cut = MAX_REASON_BYTES;
    while (cut > 0 && ((text[cut] as number) & 0xc0) === 0x80) cut--;
    text = text.subarray(0, cut);
  }
  const body = Buffer.allocUnsafe(4 + text.length);
  body.writeUInt16BE(code, 0);
  body.writeUInt16BE(linkId < 0 ? CLOSE_ANY_LINK : linkId, 2);
  text.copy(body, 4);
  return encodeFrame(FrameType.Close, body);
}

/** ACK: the link it is about and the bytes read from its connection so far (aggregate and adaptive sessions). */
export function encodeAck(linkId: number, bytes: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 10);
  writeFrameHeader(out, 0, FrameType.Ack, 10);
  out.writeUInt16BE(linkId, FRAME_HEADER_BYTES);
  writeU64(out, FRAME_HEADER_BYTES + 2, bytes);
  return out;
}

export function encodeLinkDown(linkId: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 2);
  writeFrameHeader(out, 0, FrameType.LinkDown, 2);
  out.writeUInt16BE(linkId, FRAME_HEADER_BYTES);
  return out;
}

/** The reason is the peer's text: sanitized, bounded. */
export function decodeClose(buf: Buffer, start: number, end: number): { code: number; linkId: number; reason: string } {
  return {
    code: buf.readUInt16BE(start),
    linkId: buf.readUInt16BE(start + 2),
    reason: sanitizeText(buf.toString('utf8', start + 4, Math.min(end, start + 4 + MAX_REASON_BYTES))),
  };
}
