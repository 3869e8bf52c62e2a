// An attacker that speaks dp-tcp's wire protocol (docs/protocol.md, v2): raw
// connections, frames in clear, INITIATIONs with a valid mac1 from any static
// key, a real handshake as a listed peer (the product's own Initiator and
// Keypair), records sealed around arbitrary plaintexts, and an on-path TCP
// relay that records, replays, injects, stalls and drops. The e2e tests drive
// it through attack.ts inside network namespaces.
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { PeerConfig, SecurityConfig } from '../../src/config/types.js';
import {
  encodeClose,
  encodeData,
  encodeFrame,
  encodeLinkDown,
  encodeToken,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  LENGTH_BYTES,
  readU64,
  writeFrameHeader,
  writeU64,
  type CloseCode,
} from '../../src/protocol/frame.js';
import type { LinkIntro, TunnelAddress } from '../../src/protocol/handshake.js';
import { identityOf, Initiator, type Established, type Identity } from '../../src/secure/handshake.js';
import type { Keypair } from '../../src/secure/keypair.js';
import { generateKeyPair, publicKeyOf } from '../../src/secure/primitives.js';
import { SEALED_HEADER_BYTES } from '../../src/secure/record.js';
import { VNET_HDR_BYTES } from '../../src/tun/vnet-hdr.js';
import { ipv4Udp } from './packets.js';

/** Far above any frame limit: the attacker reads whatever it is sent. */
const READ_MAX_FRAME_BYTES = 1 << 26;

export interface Frame {
  readonly type: number;
  /** The whole frame, length prefix included. */
  readonly bytes: Buffer;
}

/** Splits a byte stream into whole frames (the product's decoder, with a huge limit). */
export function frameSplitter(onFrame: (f: Frame) => void): FrameDecoder {
  return new FrameDecoder(READ_MAX_FRAME_BYTES, (type, buf, start, end) =>
    onFrame({ type, bytes: Buffer.from(buf.subarray(start - FRAME_HEADER_BYTES, end)) }),
  );
}

/** The body of a whole frame (after the 8-byte header). */
export function bodyOf(f: Frame): Buffer {
  return f.bytes.subarray(FRAME_HEADER_BYTES);
}

/** Receiver index and counter of a SEALED frame (whole frame bytes). */
export function sealedHeader(bytes: Buffer): { index: number; counter: number } {
  return { index: bytes.readUInt32BE(FRAME_HEADER_BYTES), counter: readU64(bytes, FRAME_HEADER_BYTES + 4) };
}

/** A frame of any type, length and version, exactly as given: for malformed input. */
export function rawFrame(type: number, body: Buffer, opts: { version?: number; length?: number } = {}): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_BYTES + body.length);
  writeFrameHeader(out, 0, type as FrameType, body.length);
  if (opts.version !== undefined) out[4] = opts.version;
  if (opts.length !== undefined) out.writeUInt32BE(opts.length >>> 0, 0);
  body.copy(out, FRAME_HEADER_BYTES);
  return out;
}

/** A SEALED frame with this header and random "ciphertext": what a stranger can forge. */
export function garbageSealed(index: number, counter: number, bytes = 64): Buffer {
  const body = randomBytes(12 + bytes);
  body.writeUInt32BE(index >>> 0, 0);
  writeU64(body, 4, counter);
  return encodeFrame(FrameType.Sealed, body);
}

/**
 * An IPv4/UDP packet to `dst:dport` with a recognisable payload, as a DATA
 * frame carries it: with offloads (the default) a virtio_net_hdr of zeros
 * (no GSO, no checksum to fill: the UDP checksum is 0, "none") comes first.
 */
export function udpPacket(src: string, dst: string, dport: number, payload: Buffer, offload = true): Buffer {
  const ip = ipv4Udp(src, dst, payload);
  ip.writeUInt16BE(dport, 22);
  return offload ? Buffer.concat([Buffer.alloc(VNET_HDR_BYTES), ip]) : ip;
}

export const frames = {
  data: encodeData,
  ping: (token = 1): Buffer => encodeToken(FrameType.Ping, token),
  pong: (token = 1): Buffer => encodeToken(FrameType.Pong, token),
  linkDown: encodeLinkDown,
  /** A CLOSE of link `linkId` (docs/protocol.md: a receiver obeys only the CLOSE of the link that carries it). */
  close: (code: CloseCode, reason: string, linkId: number): Buffer => encodeClose(code, reason, linkId),
};

/** A client identity in the peer-key form (or a stranger's, with a key the server does not list). */
export function clientIdentity(privateKey: Buffer, serverPublicKey: Buffer, psk?: Buffer): Identity {
  const security: SecurityConfig = {
    mode: 'keys',
    privateKey,
    psk,
    encryption: 'chacha20-poly1305',
    serverPublicKey,
    peers: [] as PeerConfig[],
  };
  return identityOf(security, 'client') as Identity;
}

/** A fresh random static key: a stranger who knows the server's public key (it is not secret). */
export function strangerIdentity(serverPublicKey: Buffer): Identity {
  return clientIdentity(generateKeyPair().privateKey, serverPublicKey);
}

export function linkIntro(addresses: readonly TunnelAddress[], opts: Partial<LinkIntro> = {}): LinkIntro {
  return {
    sessionId: randomBytes(16),
    encryption: 'chacha20-poly1305',
    offload: true,
    mode: 'duplicate',
    linkId: 0,
    linkCount: 1,
    addresses,
    ...opts,
  };
}

export { publicKeyOf };

/** One raw TCP connection: what was written, every frame received, how it ended. */
export class RawConn {
  readonly frames: Frame[] = [];
  closed = false;
  /** Bytes received that did not form a frame the decoder accepted (then reading stops). */
  undecodable = false;
  written = 0;
  readonly socket: Socket;
  private readonly ready: Promise<void>;
  private readonly splitter = frameSplitter((f) => this.frames.push(f));
  private waiters: Array<() => void> = [];

  constructor(host: string, port: number, localAddress?: string) {
    this.socket = connect({ host, port, ...(localAddress ? { localAddress } : {}), noDelay: true });
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
      // destroy() before the connection is made emits no error: without this, connected() would never settle.
      this.socket.once('close', () => reject(new Error('closed before it was connected')));
    });
    this.socket.on('data', (d: Buffer) => {
      if (this.undecodable) return;
      try {
        this.splitter.push(d);
      } catch {
        this.undecodable = true;
      }
      this.wake();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  connected(): Promise<void> {
    return this.ready;
  }

  /** Resolves once the bytes are handed to the kernel; returns how many. */
  async write(buf: Buffer): Promise<number> {
    await this.ready;
    if (this.socket.destroyed) return 0;
    return await new Promise<number>((resolve) =>
      this.socket.write(buf, (err) => {
        if (!err) this.written += buf.length;
        resolve(err ? 0 : buf.length);
      }),
    );
  }

  /** The first frame received (from index `from` on) that `pred` accepts; undefined on close or timeout. */
  async next(pred: (f: Frame) => boolean, timeoutMs: number, from = 0): Promise<Frame | undefined> {
    const t0 = Date.now();
    for (;;) {
      const f = this.frames.slice(from).find(pred);
      if (f || this.closed || Date.now() - t0 > timeoutMs) return f;
      await new Promise<void>((r) => {
        const timer = setTimeout(r, Math.max(1, timeoutMs - (Date.now() - t0)));
        this.waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }

  async waitClosed(timeoutMs: number): Promise<boolean> {
    await this.next(() => false, timeoutMs);
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

export interface HandshakeResult extends Established {
  readonly cookieRounds: number;
}

/**
 * A real handshake as a client: INITIATION, COOKIE rounds if the server is
 * under load, RESPONSE. Throws with what the server said if it refused.
 */
export async function handshake(conn: RawConn, id: Identity, intro: LinkIntro, timeoutMs = 3000): Promise<HandshakeResult> {
  const initiator = new Initiator(id);
  let from = conn.frames.length;
  await conn.write(initiator.initiation(intro));
  for (let round = 0; round <= 3; round++) {
    const f = await conn.next((x) => x.type === FrameType.Response || x.type === FrameType.Cookie || x.type === FrameType.Close, timeoutMs, from);
    if (f === undefined) throw new Error(conn.closed ? 'closed by the server during the handshake' : 'no answer to INITIATION');
    from = conn.frames.indexOf(f) + 1;
    const b = f.bytes;
    if (f.type === FrameType.Close) throw new Error(`refused: ${closeReason(f)}`);
    if (f.type === FrameType.Cookie) {
      if (!initiator.cookie(b, FRAME_HEADER_BYTES, b.length)) throw new Error('COOKIE does not authenticate');
      await conn.write(initiator.initiation(intro));
      continue;
    }
    return { ...initiator.response(b, FRAME_HEADER_BYTES, b.length), cookieRounds: round };
  }
  throw new Error('too many COOKIE rounds');
}

/** Opens a SEALED frame received under `kp`: its inner frames, or undefined if it does not authenticate. */
export function openSealed(kp: Keypair, f: Frame): Frame[] | undefined {
  const b = f.bytes;
  const { counter } = sealedHeader(b);
  const plain = kp.open(counter, b, FRAME_HEADER_BYTES, b.length);
  if (plain === undefined) return undefined;
  const out: Frame[] = [];
  let off = 0;
  while (off + LENGTH_BYTES <= plain.length) {
    const len = plain.readUInt32BE(off);
    const end = Math.min(plain.length, off + LENGTH_BYTES + len);
    out.push({ type: plain[off + 5] ?? -1, bytes: Buffer.from(plain.subarray(off, end)) });
    off = end;
  }
  return out;
}

/** Offset of the reason in a CLOSE frame: after the code (u16) and the link id (u16). */
const CLOSE_REASON_OFFSET = FRAME_HEADER_BYTES + 4;

/** The reason of a CLOSE frame (whole frame bytes). */
export function closeReason(f: Frame): string {
  return f.bytes.toString('utf8', CLOSE_REASON_OFFSET);
}

/** The code and the link id a CLOSE frame names (0xffff: any, a refusal during the handshake). */
export function closeHeader(f: Frame): { code: number; linkId: number } {
  return { code: f.bytes.readUInt16BE(FRAME_HEADER_BYTES), linkId: f.bytes.readUInt16BE(FRAME_HEADER_BYTES + 2) };
}

export { SEALED_HEADER_BYTES };

// ---------------------------------------------------------------------------
// The on-path relay.

export type Direction = 'c2s' | 's2c';

export interface RelayLinkSpec {
  /** Where clients connect: the relay listens here. */
  readonly listen: { host: string; port: number };
  /** Where the server is, and the relay's source address towards it. */
  readonly target: { host: string; port: number; local?: string };
}

export interface Recorded {
  /** Position in the capture, from 0. */
  readonly n: number;
  readonly t: number;
  /** Relay link number, 1-based, and the connection number on it (1-based, counts every accepted connection). */
  readonly link: number;
  readonly conn: number;
  readonly dir: Direction;
  readonly type: number;
  readonly bytes: Buffer;
  /** Written on to its destination (not stalled, dropped or rewritten). */
  forwarded: boolean;
}

interface Pair {
  readonly link: number;
  readonly conn: number;
  readonly client: Socket;
  readonly server: Socket;
  stalled: boolean;
  closed: boolean;
}

interface Rewrite {
  readonly link: number;
  readonly dir: Direction;
  readonly type: number;
  /** Replace with this recorded frame, or drop when undefined. */
  readonly with: Buffer | undefined;
  remaining: number;
  /** Frames this rule actually rewrote or dropped. */
  applied: number;
}

export interface ReplayFilter {
  /** Frames recorded in this direction (the direction they travelled then). */
  readonly dir: Direction;
  readonly types?: readonly number[];
  readonly link?: number;
  readonly conn?: number;
  readonly since?: number;
  readonly until?: number;
  readonly minBytes?: number;
  readonly maxBytes?: number;
  /** Only frames that were forwarded (true), or only those that were not (false). */
  readonly forwarded?: boolean;
}

/**
 * A man in the middle for every link: accepts the client's connection,
 * dials the server, and forwards whole frames both ways while recording them.
 * Frames are forwarded one by one, so anything it injects lands on a frame
 * boundary, exactly where a forged frame would have to be.
 */
export class Relay {
  readonly capture: Recorded[] = [];
  private readonly servers: Server[] = [];
  private readonly pairs: Pair[] = [];
  private readonly accepted: number[];
  private readonly rewrites: Rewrite[] = [];
  private readonly t0 = Date.now();

  constructor(private readonly links: readonly RelayLinkSpec[]) {
    this.accepted = links.map(() => 0);
  }

  async start(): Promise<void> {
    for (const [i, spec] of this.links.entries()) {
      const server = createServer((s) => this.accept(i + 1, s));
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: spec.listen.host, port: spec.listen.port, exclusive: true }, () => resolve());
      });
    }
  }

  private accept(link: number, client: Socket): void {
    const spec = this.links[link - 1] as RelayLinkSpec;
    const conn = ++this.accepted[link - 1]!;
    client.setNoDelay(true);
    const server = connect({ host: spec.target.host, port: spec.target.port, ...(spec.target.local ? { localAddress: spec.target.local } : {}), noDelay: true });
    const pair: Pair = { link, conn, client, server, stalled: false, closed: false };
    this.pairs.push(pair);
    const end = (): void => {
      if (pair.closed) return;
      pair.closed = true;
      client.destroy();
      server.destroy();
    };
    const pipe = (from: Socket, to: Socket, dir: Direction): void => {
      const splitter = frameSplitter((f) => this.forward(pair, to, dir, f));
      from.on('data', (d: Buffer) => {
        try {
          splitter.push(d);
        } catch {
          end();
        }
      });
      from.on('error', end);
      from.on('close', end);
    };
    pipe(client, server, 'c2s');
    pipe(server, client, 's2c');
  }

  private forward(pair: Pair, to: Socket, dir: Direction, f: Frame): void {
    const rec: Recorded = { n: this.capture.length, t: Date.now() - this.t0, link: pair.link, conn: pair.conn, dir, type: f.type, bytes: f.bytes, forwarded: false };
    this.capture.push(rec);
    if (pair.stalled || pair.closed) return;
    const rule = this.rewrites.find((r) => r.remaining > 0 && r.link === pair.link && r.dir === dir && r.type === f.type);
    if (rule) {
      rule.remaining--;
      rule.applied++;
      if (rule.with !== undefined) to.write(rule.with);
      return;
    }
    rec.forwarded = true;
    to.write(f.bytes);
  }

  /** Live connection pairs of a link (newest last). */
  live(link: number): Pair[] {
    return this.pairs.filter((p) => p.link === link && !p.closed);
  }

  status(): { links: Array<{ link: number; live: number; accepted: number }>; captured: number } {
    return {
      links: this.links.map((_, i) => ({ link: i + 1, live: this.live(i + 1).length, accepted: this.accepted[i] as number })),
      captured: this.capture.length,
    };
  }

  /** Drops the link's TCP connections (both halves): the client redials through the relay. */
  kill(link: number): number {
    const l = this.live(link);
    for (const p of l) {
      p.closed = true;
      p.client.destroy();
      p.server.destroy();
    }
    return l.length;
  }

  /** Stops forwarding on the link's current connections (both directions) while still recording: a blackhole in the middle. */
  stall(link: number, on: boolean): number {
    const l = this.live(link);
    for (const p of l) p.stalled = on;
    return l.length;
  }

  /** Writes bytes into the newest live connection of `link`, towards the server (c2s) or the client (s2c). */
  async inject(link: number, dir: Direction, bytes: Buffer): Promise<number> {
    const p = this.live(link).at(-1);
    if (p === undefined) return 0;
    const to = dir === 'c2s' ? p.server : p.client;
    return await new Promise<number>((resolve) => to.write(bytes, (err) => resolve(err ? 0 : bytes.length)));
  }

  select(f: ReplayFilter): Recorded[] {
    return this.capture.filter(
      (r) =>
        r.dir === f.dir &&
        (f.types === undefined || f.types.includes(r.type)) &&
        (f.link === undefined || r.link === f.link) &&
        (f.conn === undefined || r.conn === f.conn) &&
        (f.since === undefined || r.n >= f.since) &&
        (f.until === undefined || r.n < f.until) &&
        (f.minBytes === undefined || r.bytes.length >= f.minBytes) &&
        (f.maxBytes === undefined || r.bytes.length <= f.maxBytes) &&
        (f.forwarded === undefined || r.forwarded === f.forwarded),
    );
  }

  /** Writes recorded frames again, in recorded order, into `link`'s newest connection towards the same side. */
  async replay(link: number, f: ReplayFilter): Promise<{ frames: number; bytes: number; written: number; sizes: Record<number, number> }> {
    const chosen = this.select(f);
    const sizes: Record<number, number> = {};
    for (const r of chosen) sizes[r.bytes.length] = (sizes[r.bytes.length] ?? 0) + 1;
    const bytes = Buffer.concat(chosen.map((r) => r.bytes));
    const written = chosen.length === 0 ? 0 : await this.inject(link, f.dir, bytes);
    return { frames: chosen.length, bytes: bytes.length, written, sizes };
  }

  /**
   * The next `count` frames of `type` going `dir` on `link` are replaced by the
   * oldest recorded frame of that type and direction (or dropped if `drop`).
   */
  rewrite(link: number, dir: Direction, type: number, count: number, drop: boolean): { armed: boolean; replacement: number } {
    const old = this.capture.find((r) => r.dir === dir && r.type === type);
    if (!drop && old === undefined) return { armed: false, replacement: -1 };
    this.rewrites.push({ link, dir, type, with: drop ? undefined : old?.bytes, remaining: count, applied: 0 });
    return { armed: true, replacement: old?.n ?? -1 };
  }

  rewritesApplied(): number {
    return this.rewrites.reduce((a, r) => a + r.applied, 0);
  }

  /**
   * Opens a new connection of its own to the server of `link` (from the
   * relay's address) and writes the given recorded frames there: a replayed
   * handshake. Returns the types of the frames the server answered with and
   * whether it closed the connection.
   */
  async replayOnNewConnection(link: number, ns: readonly number[], waitMs: number): Promise<{ written: number; answered: number[]; closed: boolean }> {
    const spec = this.links[link - 1] as RelayLinkSpec;
    const c = new RawConn(spec.target.host, spec.target.port, spec.target.local);
    try {
      await c.connected();
      const bytes = Buffer.concat(ns.map((n) => (this.capture[n] as Recorded).bytes));
      const written = await c.write(bytes);
      await c.waitClosed(waitMs);
      return { written, answered: c.frames.map((f) => f.type), closed: c.closed };
    } finally {
      c.destroy();
    }
  }

  close(): void {
    for (const s of this.servers) s.close();
    for (const p of this.pairs) {
      p.client.destroy();
      p.server.destroy();
    }
  }
}

/**
 * (direction, receiver index, counter) seen with two different ciphertexts:
 * a nonce reused under one key. Identical copies (one per link) are expected
 * and are not reuse.
 */
export function nonceReuse(capture: readonly Pick<Recorded, 'dir' | 'type' | 'bytes'>[]): {
  records: number;
  distinct: number;
  indexes: Record<Direction, number>;
  reused: string[];
} {
  const seen = new Map<string, Buffer>();
  const indexes: Record<Direction, Set<number>> = { c2s: new Set(), s2c: new Set() };
  const reused: string[] = [];
  let records = 0;
  for (const r of capture) {
    if (r.type !== FrameType.Sealed) continue;
    records++;
    const { index, counter } = sealedHeader(r.bytes);
    indexes[r.dir].add(index);
    const key = `${r.dir}/${index}/${counter}`;
    const prev = seen.get(key);
    if (prev === undefined) seen.set(key, r.bytes);
    else if (!prev.equals(r.bytes)) reused.push(key);
  }
  return { records, distinct: seen.size, indexes: { c2s: indexes.c2s.size, s2c: indexes.s2c.size }, reused };
}
