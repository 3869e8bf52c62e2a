// HELLO and WELCOME bodies of docs/protocol.md.
import { isIPv4, isIPv6 } from 'node:net';
import { ProtocolError } from '../errors.js';
import { NONCE_BYTES, PROOF_BYTES } from './auth.js';
import { encodeFrame, FrameType } from './frame.js';
import { CIPHERS, type CipherName } from './seal.js';

export const HELLO_MAGIC = Buffer.from('DPT1', 'ascii');
export const SESSION_ID_BYTES = 16;

export interface TunnelAddress {
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefix: number;
}

export type Encryption = 'none' | CipherName;

export interface Hello {
  readonly sessionId: Buffer;
  /** Fresh for every connection: the server's proof must cover it. */
  readonly nonce: Buffer;
  /** The client holds a pre-shared key and expects a CHALLENGE. */
  readonly auth: boolean;
  readonly encryption: Encryption;
  /** DATA carries a virtio_net_hdr before each packet (TUN offloads on). */
  readonly offload: boolean;
  readonly linkId: number;
  readonly linkCount: number;
  readonly addresses: readonly TunnelAddress[];
}

export interface Welcome {
  /** Random u64 of the server's session, kept as 8 raw bytes. */
  readonly epoch: Buffer;
  readonly linkId: number;
}

const FLAG_AUTH = 0x01;
const FLAG_OFFLOAD = 0x02;

function encryptionId(e: Encryption): number {
  return e === 'none' ? 0 : CIPHERS.indexOf(e) + 1;
}

export function encodeHello(h: Hello): Buffer {
  const flags = (h.auth ? FLAG_AUTH : 0) | (h.offload ? FLAG_OFFLOAD : 0) | (encryptionId(h.encryption) << 4);
  const parts: Buffer[] = [HELLO_MAGIC, h.sessionId, h.nonce, Buffer.from([flags])];
  const ids = Buffer.allocUnsafe(5);
  ids.writeUInt16BE(h.linkId, 0);
  ids.writeUInt16BE(h.linkCount, 2);
  ids.writeUInt8(h.addresses.length, 4);
  parts.push(ids);
  for (const a of h.addresses) {
    parts.push(Buffer.from([a.family, a.prefix]), addressBytes(a));
  }
  return encodeFrame(FrameType.Hello, Buffer.concat(parts));
}

export function decodeHello(buf: Buffer, start: number, end: number): Hello {
  if (!buf.subarray(start, start + 4).equals(HELLO_MAGIC)) throw new ProtocolError('HELLO without the DPT1 magic');
  let off = start + 4;
  const sessionId = Buffer.from(buf.subarray(off, off + SESSION_ID_BYTES));
  off += SESSION_ID_BYTES;
  const nonce = Buffer.from(buf.subarray(off, off + NONCE_BYTES));
  off += NONCE_BYTES;
  const flags = buf[off++] as number;
  const cipherId = flags >> 4;
  if ((flags & 0x0c) !== 0 || cipherId > CIPHERS.length) throw new ProtocolError(`HELLO flags 0x${flags.toString(16)} unknown`);
  const encryption: Encryption = cipherId === 0 ? 'none' : (CIPHERS[cipherId - 1] as CipherName);
  const linkId = buf.readUInt16BE(off);
  const linkCount = buf.readUInt16BE(off + 2);
  const count = buf.readUInt8(off + 4);
  off += 5;
  const addresses: TunnelAddress[] = [];
  for (let i = 0; i < count; i++) {
    if (off + 2 > end) throw new ProtocolError('HELLO address list is truncated');
    const family = buf[off];
    const prefix = buf[off + 1] as number;
    off += 2;
    const size = family === 4 ? 4 : family === 6 ? 16 : 0;
    if (size === 0) throw new ProtocolError(`HELLO address family ${family} is neither 4 nor 6`);
    if (off + size > end) throw new ProtocolError('HELLO address list is truncated');
    if (prefix > size * 8) throw new ProtocolError(`HELLO prefix length ${prefix} is out of range`);
    addresses.push({ family: family as 4 | 6, address: formatAddress(buf.subarray(off, off + size)), prefix });
    off += size;
  }
  if (off !== end) throw new ProtocolError('HELLO has trailing bytes');
  if (linkCount === 0 || linkId >= linkCount) throw new ProtocolError(`HELLO link id ${linkId} of ${linkCount}`);
  return {
    sessionId,
    nonce,
    auth: (flags & FLAG_AUTH) !== 0,
    offload: (flags & FLAG_OFFLOAD) !== 0,
    encryption,
    linkId,
    linkCount,
    addresses,
  };
}

/** CHALLENGE: the server's nonce and its proof of the key (server -> client). */
export function encodeChallenge(serverNonce: Buffer, serverMac: Buffer): Buffer {
  return encodeFrame(FrameType.Challenge, Buffer.concat([serverNonce, serverMac]));
}

export function decodeChallenge(buf: Buffer, start: number, end: number): { nonce: Buffer; mac: Buffer } {
  if (end - start !== NONCE_BYTES + PROOF_BYTES) throw new ProtocolError('CHALLENGE has the wrong size');
  return {
    nonce: Buffer.from(buf.subarray(start, start + NONCE_BYTES)),
    mac: Buffer.from(buf.subarray(start + NONCE_BYTES, end)),
  };
}

/** AUTH: the client's proof of the key (client -> server). */
export function encodeAuth(clientMac: Buffer): Buffer {
  return encodeFrame(FrameType.Auth, clientMac);
}

export function decodeAuth(buf: Buffer, start: number, end: number): Buffer {
  if (end - start !== PROOF_BYTES) throw new ProtocolError('AUTH has the wrong size');
  return Buffer.from(buf.subarray(start, end));
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

