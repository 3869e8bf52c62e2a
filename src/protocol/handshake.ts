// Open mode's HELLO and WELCOME bodies (docs/protocol.md), and the tunnel
// address list that the keyed INITIATION carries too.
import { isIPv4, isIPv6 } from 'node:net';
import { ProtocolError } from '../errors.js';
import { encodeFrame, FrameType } from './frame.js';

export const HELLO_MAGIC = Buffer.from('DPT2', 'ascii');
export const SESSION_ID_BYTES = 16;

export interface TunnelAddress {
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefix: number;
}

export const CIPHERS = ['chacha20-poly1305', 'aes-256-gcm'] as const;

/** How a session spreads packets over its links (docs/protocol.md, "Scheduling modes"); the client's choice. */
export const SCHEDULING_MODES = ['duplicate', 'aggregate', 'adaptive'] as const;
export type SchedulingMode = (typeof SCHEDULING_MODES)[number];
export type CipherName = (typeof CIPHERS)[number];
export type Encryption = 'none' | CipherName;

/** What a client says about a link, in HELLO (open) or inside INITIATION (keyed). */
export interface LinkIntro {
  readonly sessionId: Buffer;
  /** Keyed mode: the data cipher; 'none' in open mode. */
  readonly encryption: Encryption;
  /** DATA carries a virtio_net_hdr before each packet (TUN offloads on). */
  readonly offload: boolean;
  /** The session's scheduling mode (flag bits 2-3). */
  readonly mode: SchedulingMode;
  readonly linkId: number;
  readonly linkCount: number;
  readonly addresses: readonly TunnelAddress[];
  /** The rate in kbit/s at which the server sends on this connection at most (flag bit 0); undefined: no pacing. */
  readonly paceKbit?: number | undefined;
}

/** The range of LinkIntro.paceKbit: 100 kbit/s to 10 Gbit/s (its bytes per second fit a C int). */
export const MIN_PACE_KBIT = 100;
export const MAX_PACE_KBIT = 10_000_000;

/** Open mode's HELLO is a LinkIntro in clear. */
export type Hello = LinkIntro;

export interface Welcome {
  /** Random u64 of the server's session, kept as 8 raw bytes. */
  readonly epoch: Buffer;
  readonly linkId: number;
}

const FLAG_PACE = 0x01;
const FLAG_OFFLOAD = 0x02;
const MODE_SHIFT = 2;

/** session id | flags | link id | link count | address count | addresses | [pace] */
export function encodeIntro(h: LinkIntro): Buffer {
  const cipherId = h.encryption === 'none' ? 0 : CIPHERS.indexOf(h.encryption) + 1;
  const pace = h.paceKbit !== undefined;
  if (pace && !validPace(h.paceKbit)) throw new RangeError(`pace ${h.paceKbit} kbit/s is outside ${MIN_PACE_KBIT}..${MAX_PACE_KBIT}`);
  const flags = (pace ? FLAG_PACE : 0) | (h.offload ? FLAG_OFFLOAD : 0) | (SCHEDULING_MODES.indexOf(h.mode) << MODE_SHIFT) | (cipherId << 4);
  const parts: Buffer[] = [h.sessionId, Buffer.from([flags])];
  const ids = Buffer.allocUnsafe(5);
  ids.writeUInt16BE(h.linkId, 0);
  ids.writeUInt16BE(h.linkCount, 2);
  ids.writeUInt8(h.addresses.length, 4);
  parts.push(ids);
  for (const a of h.addresses) parts.push(Buffer.from([a.family, a.prefix]), addressBytes(a));
  if (pace) {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(h.paceKbit as number, 0);
    parts.push(p);
  }
  return Buffer.concat(parts);
}

function validPace(kbit: number | undefined): boolean {
  return kbit !== undefined && Number.isInteger(kbit) && kbit >= MIN_PACE_KBIT && kbit <= MAX_PACE_KBIT;
}

/** Every field checked; the whole of buf[start..end) must be used. */
export function decodeIntro(buf: Buffer, start: number, end: number): LinkIntro {
  if (end - start < SESSION_ID_BYTES + 6) throw new ProtocolError('link introduction is truncated');
  let off = start;
  const sessionId = Buffer.from(buf.subarray(off, off + SESSION_ID_BYTES));
  off += SESSION_ID_BYTES;
  const flags = buf[off++] as number;
  const cipherId = flags >> 4;
  const modeId = (flags >> MODE_SHIFT) & 3;
  if (cipherId > CIPHERS.length || modeId >= SCHEDULING_MODES.length) {
    throw new ProtocolError(`link flags 0x${flags.toString(16)} unknown`);
  }
  const mode = SCHEDULING_MODES[modeId] as SchedulingMode;
  const encryption: Encryption = cipherId === 0 ? 'none' : (CIPHERS[cipherId - 1] as CipherName);
  const linkId = buf.readUInt16BE(off);
  const linkCount = buf.readUInt16BE(off + 2);
  const count = buf.readUInt8(off + 4);
  off += 5;
  const addresses: TunnelAddress[] = [];
  for (let i = 0; i < count; i++) {
    if (off + 2 > end) throw new ProtocolError('address list is truncated');
    const family = buf[off];
    const prefix = buf[off + 1] as number;
    off += 2;
    const size = family === 4 ? 4 : family === 6 ? 16 : 0;
    if (size === 0) throw new ProtocolError(`address family ${family} is neither 4 nor 6`);
    if (off + size > end) throw new ProtocolError('address list is truncated');
    if (prefix > size * 8) throw new ProtocolError(`prefix length ${prefix} is out of range`);
    addresses.push({ family: family as 4 | 6, address: formatAddress(buf.subarray(off, off + size)), prefix });
    off += size;
  }
  let paceKbit: number | undefined;
  if ((flags & FLAG_PACE) !== 0) {
    if (off + 4 > end) throw new ProtocolError('pace is truncated');
    paceKbit = buf.readUInt32BE(off);
    off += 4;
    if (!validPace(paceKbit)) throw new ProtocolError(`pace ${paceKbit} kbit/s is outside ${MIN_PACE_KBIT}..${MAX_PACE_KBIT}`);
  }
  if (off !== end) throw new ProtocolError('link introduction has trailing bytes');
  if (linkCount === 0 || linkCount > 16 || linkId >= linkCount) throw new ProtocolError(`link id ${linkId} of ${linkCount}`);
  return { sessionId, offload: (flags & FLAG_OFFLOAD) !== 0, mode, encryption, linkId, linkCount, addresses, ...(paceKbit === undefined ? {} : { paceKbit }) };
}

export function encodeHello(h: Hello): Buffer {
  return encodeFrame(FrameType.Hello, Buffer.concat([HELLO_MAGIC, encodeIntro({ ...h, encryption: 'none' })]));
}

export function decodeHello(buf: Buffer, start: number, end: number): Hello {
  if (!buf.subarray(start, start + 4).equals(HELLO_MAGIC)) throw new ProtocolError('HELLO without the DPT2 magic');
  const h = decodeIntro(buf, start + 4, end);
  if (h.encryption !== 'none') throw new ProtocolError('HELLO names a cipher: open mode has none');
  return h;
}

export function encodeWelcome(w: Welcome): Buffer {
  const body = Buffer.allocUnsafe(10);
  w.epoch.copy(body, 0, 0, 8);
  body.writeUInt16BE(w.linkId, 8);
  return encodeFrame(FrameType.Welcome, body);
}

export function decodeWelcome(buf: Buffer, start: number, end: number): Welcome {
  if (end - start !== 10) throw new ProtocolError(`WELCOME body of ${end - start} bytes, expected 10`);
  return { epoch: Buffer.from(buf.subarray(start, start + 8)), linkId: buf.readUInt16BE(start + 8) };
}

/** An address as the 4 or 16 bytes of the wire (and of IP headers). */
export function addressBytes(a: TunnelAddress): Buffer {
  if (a.family === 4 && isIPv4(a.address)) return Buffer.from(a.address.split('.').map(Number));
  if (a.family === 6 && isIPv6(a.address)) return ipv6Bytes(a.address);
  throw new TypeError(`'${a.address}' is not an IPv${a.family} address`);
}

export function ipv6Bytes(addr: string): Buffer {
  const out = Buffer.alloc(16);
  let s = addr;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4?.[1]) {
    const b = v4[1].split('.').map(Number) as [number, number, number, number];
    s = s.slice(0, -v4[1].length) + `${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const [head = '', tail] = s.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export function formatAddress(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // Shorten the longest run of zero groups, as RFC 5952 asks.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

