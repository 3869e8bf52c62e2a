// The keyed handshake of docs/protocol.md: INITIATION, RESPONSE and COOKIE
// around Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s. The Initiator (client) and the
// Responder (server) turn frames into keypairs; what a session does with them
// is src/core's business. Nothing here changes state on an unauthenticated
// message: the responder's keypair waits for confirmation (keypair.ts).
import { randomBytes } from 'node:crypto';
import type { PeerConfig, SecurityConfig } from '../config/types.js';
import { ProtocolError } from '../errors.js';
import { encodeFrame, FRAME_HEADER_BYTES, FrameType } from '../protocol/frame.js';
import { decodeIntro, encodeIntro, type CipherName, type LinkIntro } from '../protocol/handshake.js';
import { CookieChecker, CookieGenerator, MACS_BYTES } from './cookie.js';
import { INITIATION_REPLAY_ENTRIES, INITIATION_REPLAY_WINDOW_MS } from './limits.js';
import { Keypair } from './keypair.js';
import { HandshakeState, NoiseError } from './noise.js';
import { hash, publicKeyOf, type KeyPair } from './primitives.js';

export const PROLOGUE = Buffer.from('dp-tcp v2', 'ascii');
const TIMESTAMP_BYTES = 12;
const EPOCH_BYTES = 8;

/** Who this side is and whom it accepts, derived once from the config. */
export interface Identity {
  readonly local: KeyPair;
  /** The Noise psk (32 bytes): derived from the configured psk, or zeros. */
  readonly psk: Buffer;
  readonly cipher: CipherName;
  /** Client: the server's static public key. */
  readonly serverPublic: Buffer;
  /** Server: the peers by base64 public key (replaced in place by a reload). */
  readonly peers: Map<string, PeerConfig>;
  /** 'psk': one shared identity; its peer may claim any client address of the tunnel network. */
  readonly shared: boolean;
}

function clamp(k: Buffer): Buffer {
  k[0] = (k[0] as number) & 248;
  k[31] = ((k[31] as number) & 127) | 64;
  return k;
}

function derivedPair(label: string, psk: Buffer): KeyPair {
  const privateKey = clamp(hash(Buffer.from(label, 'ascii'), psk));
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

/** The keyed identity of a config in psk or keys mode (undefined in open mode). */
export function identityOf(security: SecurityConfig, role: 'client' | 'server'): Identity | undefined {
  if (security.mode === 'open' || security.encryption === 'none') return undefined;
  const psk = security.psk === undefined ? Buffer.alloc(32) : hash(Buffer.from('dp-tcp v2 psk', 'ascii'), security.psk);
  if (security.mode === 'psk') {
    const server = derivedPair('dp-tcp v2 psk-mode server', security.psk as Buffer);
    const client = derivedPair('dp-tcp v2 psk-mode client', security.psk as Buffer);
    const peer: PeerConfig = { name: 'psk', publicKey: client.publicKey, allowedIps: [] };
    return {
      local: role === 'server' ? server : client,
      psk,
      cipher: security.encryption,
      serverPublic: server.publicKey,
      peers: new Map([[client.publicKey.toString('base64'), peer]]),
      shared: true,
    };
  }
  const local = { privateKey: security.privateKey as Buffer, publicKey: publicKeyOf(security.privateKey as Buffer) };
  return {
    local,
    psk,
    cipher: security.encryption,
    serverPublic: role === 'server' ? local.publicKey : (security.serverPublicKey as Buffer),
    peers: new Map(security.peers.map((p) => [p.publicKey.toString('base64'), p])),
    shared: false,
  };
}

let lastStamp = 0n;

/**
 * The nanoseconds a timestamp drops (2^24 - 1: it counts in steps of about
 * 16.8 ms), as WireGuard's does: the server needs only the order, and a finer
 * clock would tell whoever reads INITIATIONs (the server, a psk holder) more
 * of the client's clock than that.
 */
export const TAI64N_WHITENER = 0xff_ffffn;

/** TAI64N of now, whitened, strictly increasing within this process (several links handshake at once: +1 ns each). */
export function tai64n(nowMs = Date.now()): Buffer {
  const exact = BigInt(Math.floor(nowMs)) * 1_000_000n;
  let ns = exact - ((exact % 1_000_000_000n) & TAI64N_WHITENER);
  if (ns <= lastStamp) ns = lastStamp + 1n;
  lastStamp = ns;
  const out = Buffer.allocUnsafe(TIMESTAMP_BYTES);
  out.writeBigUInt64BE(0x4000_0000_0000_000an + ns / 1_000_000_000n, 0);
  out.writeUInt32BE(Number(ns % 1_000_000_000n), 8);
  return out;
}

function stampMs(t: Buffer): number {
  return Number(t.readBigUInt64BE(0) - 0x4000_0000_0000_000an) * 1000 + t.readUInt32BE(8) / 1e6;
}

/** A random local index that `taken` does not hold (a reused one would push the older keypair out of the ring). */
function freeIndex(taken: (index: number) => boolean): number {
  let index = randomBytes(4).readUInt32BE(0);
  while (taken(index)) index = randomBytes(4).readUInt32BE(0);
  return index;
}

/** The bytes mac1/mac2 cover and sit at the end of: from `version` to the end of the frame. */
function macRegion(buf: Buffer, start: number, end: number): Buffer {
  return buf.subarray(start - (FRAME_HEADER_BYTES - 4), end);
}

export interface Established {
  readonly keypair: Keypair;
  readonly epoch: Buffer;
  readonly linkId: number;
}

/** Client side of one connection's handshakes. */
export class Initiator {
  private hs: HandshakeState | undefined;
  private index = 0;
  private readonly cookies: CookieGenerator;

  constructor(private readonly id: Identity) {
    this.cookies = new CookieGenerator(id.serverPublic);
  }

  /**
   * A new INITIATION frame (new ephemeral, new timestamp); a previous one is abandoned.
   * `taken`: indices of this side's keypairs still in use, which the new one must not reuse
   * (the ring would drop the older keypair, and records in flight under it would fail).
   */
  initiation(intro: LinkIntro, taken: (index: number) => boolean = () => false): Buffer {
    this.abandon();
    const hs = new HandshakeState({
      pattern: 'IKpsk2',
      initiator: true,
      prologue: PROLOGUE,
      s: this.id.local,
      rs: this.id.serverPublic,
      psks: [this.id.psk],
    });
    this.index = freeIndex(taken);
    const msg = hs.writeMessage(Buffer.concat([tai64n(), encodeIntro({ ...intro, encryption: this.id.cipher })]));
    this.hs = hs;
    const body = Buffer.alloc(4 + msg.length + MACS_BYTES);
    body.writeUInt32BE(this.index, 0);
    msg.copy(body, 4);
    const frame = encodeFrame(FrameType.Initiation, body);
    this.cookies.addMacs(frame.subarray(4));
    return frame;
  }

  /** Gives up the INITIATION under way, if any: its ephemeral key and chaining key are zeroed (a late RESPONSE to it is refused). */
  abandon(): void {
    this.hs?.abandon();
    this.hs = undefined;
  }

  /**
   * Whether a RESPONSE names this initiator's last INITIATION (its receiver
   * index): one that does not answers an earlier one, given up since.
   */
  answers(buf: Buffer, start: number, end: number): boolean {
    return this.hs !== undefined && end - start >= 8 && buf.readUInt32BE(start + 4) === this.index;
  }

  /** RESPONSE to the INITIATION sent last: the new keypair, confirmed. Throws ProtocolError. */
  response(buf: Buffer, start: number, end: number): Established {
    const hs = this.hs;
    if (hs === undefined) throw new ProtocolError('RESPONSE without an INITIATION');
    if (end - start !== 8 + 32 + EPOCH_BYTES + 2 + 16) throw new ProtocolError('RESPONSE has the wrong size');
    const senderIndex = buf.readUInt32BE(start);
    if (buf.readUInt32BE(start + 4) !== this.index) throw new ProtocolError('RESPONSE to another INITIATION');
    let payload: Buffer;
    try {
      payload = hs.readMessage(Buffer.from(buf.subarray(start + 8, end)));
    } catch (e) {
      if (e instanceof NoiseError) throw new ProtocolError("the server's RESPONSE does not authenticate: it does not hold the configured server key (or the psk differs)");
      throw e;
    }
    this.hs = undefined;
    const [send, recv] = hs.split();
    const keypair = new Keypair(this.index, senderIndex, this.id.cipher, send.key as Buffer, recv.key as Buffer, true);
    return { keypair, epoch: Buffer.from(payload.subarray(0, EPOCH_BYTES)), linkId: payload.readUInt16BE(EPOCH_BYTES) };
  }

  /** COOKIE: keeps the cookie for the next INITIATION; false if it does not authenticate. */
  cookie(buf: Buffer, start: number, end: number): boolean {
    return this.cookies.consumeReply(Buffer.from(buf.subarray(start, end)));
  }
}

/** An INITIATION the responder has read: who sent it and what it asks for. */
export interface InitiationRead {
  readonly peer: PeerConfig;
  readonly intro: LinkIntro;
  readonly senderIndex: number;
  readonly timestamp: Buffer;
  readonly hs: HandshakeState;
}

export type Precheck = 'ok' | 'bad_mac1' | 'needs_cookie';

/** Server side: checks, reads and answers INITIATIONs. Holds no per-connection state. */
export class Responder {
  private readonly cookies: CookieChecker;
  private readonly replay = new InitiationReplay();

  constructor(private readonly id: Identity) {
    this.cookies = new CookieChecker(id.local.publicKey);
  }

  /** The cheap checks, before any Diffie-Hellman: mac1 always, mac2 when under load. */
  precheck(buf: Buffer, start: number, end: number, source: Buffer, underLoad: boolean): Precheck {
    const region = macRegion(buf, start, end);
    if (!this.cookies.checkMac1(region)) return 'bad_mac1';
    if (underLoad && !this.cookies.checkMac2(region, source)) return 'needs_cookie';
    return 'ok';
  }

  /** COOKIE frame answering this INITIATION. */
  cookieReply(buf: Buffer, start: number, end: number, source: Buffer): Buffer {
    return encodeFrame(FrameType.Cookie, this.cookies.createReply(macRegion(buf, start, end), buf.readUInt32BE(start), source));
  }

  /** Reads the Noise message; throws ProtocolError naming what is wrong (unknown key, replay, bad intro). */
  read(buf: Buffer, start: number, end: number): InitiationRead {
    const hs = new HandshakeState({ pattern: 'IKpsk2', initiator: false, prologue: PROLOGUE, s: this.id.local });
    let payload: Buffer;
    try {
      payload = hs.readMessage(Buffer.from(buf.subarray(start + 4, end - MACS_BYTES)));
    } catch (e) {
      if (e instanceof NoiseError) throw new ProtocolError('INITIATION does not decrypt: not made for this server key');
      throw e;
    }
    try {
      const rs = hs.remoteStatic as Buffer;
      const peer = this.id.peers.get(rs.toString('base64'));
      if (peer === undefined) throw new ProtocolError(`unknown peer key ${rs.toString('base64').slice(0, 8)}…: not in peers`);
      if (payload.length < TIMESTAMP_BYTES) throw new ProtocolError('INITIATION payload too short');
      const timestamp = Buffer.from(payload.subarray(0, TIMESTAMP_BYTES));
      const intro = decodeIntro(payload, TIMESTAMP_BYTES, payload.length);
      // The shared-key form: every client is the same "peer", each with its own clock (see InitiationReplay).
      if (!this.replay.accept(rs, this.id.shared ? intro.sessionId : undefined, timestamp)) {
        throw new ProtocolError('INITIATION replayed (its timestamp was seen or is too old)');
      }
      return { peer, intro, senderIndex: buf.readUInt32BE(start), timestamp, hs };
    } catch (e) {
      hs.abandon(); // refused after it decrypted: what the read derived is wiped
      throw e;
    }
  }

  /** RESPONSE frame and the new, unconfirmed keypair. `taken`: indexes already in use by the session. */
  respond(r: InitiationRead, epoch: Buffer, linkId: number, taken: (index: number) => boolean): { frame: Buffer; keypair: Keypair } {
    r.hs.setPsks([this.id.psk]);
    const payload = Buffer.allocUnsafe(EPOCH_BYTES + 2);
    epoch.copy(payload, 0, 0, EPOCH_BYTES);
    payload.writeUInt16BE(linkId, EPOCH_BYTES);
    const msg = r.hs.writeMessage(payload);
    const index = freeIndex(taken);
    const head = Buffer.allocUnsafe(8);
    head.writeUInt32BE(index, 0);
    head.writeUInt32BE(r.senderIndex, 4);
    const [recv, send] = r.hs.split();
    const keypair = new Keypair(index, r.senderIndex, this.id.cipher, send.key as Buffer, recv.key as Buffer, false);
    return { frame: encodeFrame(FrameType.Response, Buffer.concat([head, msg])), keypair };
  }
}

/**
 * Replayed INITIATIONs: per peer, the newest timestamp and the recently
 * accepted ones. Several links handshake at once and TCP may deliver them out
 * of order, so a strictly increasing rule (WireGuard's, for one UDP flow)
 * would refuse good ones; a window and a set of seen stamps refuse exact
 * replays and old ones instead. With peer keys, one entry per peer ever configured (never evicted:
 * an entry per (peer, session id) in a bounded table (as it was) could be
 * pushed out by a peer making new sessions, and a captured INITIATION of a
 * live session was then taken again). A restarted client's stamps are newer
 * (TAI64N, wall clock), so a new session id needs no entry of its own.
 */
class InitiationReplay {
  private readonly byPeer = new Map<string, { newestMs: number; seen: string[]; floor: string }>();
  /**
   * In the shared-key form every client presents the same static key, each with its own clock:
   * one entry per peer would refuse a client whose clock is behind another's. There the key is
   * the peer and session id, and the table is bounded, oldest entry first (a psk holder can
   * impersonate the others anyway: docs/security.md).
   */
  private static readonly MAX_ENTRIES = 8192;

  /** `sessionId`: given in the shared-key form only (entries per peer and session, bounded). */
  accept(peer: Buffer, sessionId: Buffer | undefined, stamp: Buffer): boolean {
    const key = sessionId === undefined ? peer.toString('base64') : peer.toString('base64') + sessionId.toString('hex');
    const ms = stampMs(stamp);
    // Hex of a fixed-width big-endian stamp: string order is time order.
    const hex = stamp.toString('hex');
    let e = this.byPeer.get(key);
    if (e === undefined) {
      if (sessionId !== undefined && this.byPeer.size >= InitiationReplay.MAX_ENTRIES) this.byPeer.delete(this.byPeer.keys().next().value as string);
      e = { newestMs: ms, seen: [], floor: '' };
      this.byPeer.set(key, e);
    }
    // At or below `floor` (a stamp the list of seen ones has let go): whether it was seen is
    // no longer known, so it is refused.
    if (ms < e.newestMs - INITIATION_REPLAY_WINDOW_MS || hex <= e.floor || e.seen.includes(hex)) return false;
    e.seen.push(hex);
    if (e.seen.length > INITIATION_REPLAY_ENTRIES) {
      let low = 0;
      for (let i = 1; i < e.seen.length; i++) if ((e.seen[i] as string) < (e.seen[low] as string)) low = i;
      const gone = e.seen.splice(low, 1)[0] as string;
      if (gone > e.floor) e.floor = gone;
    }
    if (ms > e.newestMs) e.newestMs = ms;
    return true;
  }
}
