// Who is on this tunnel, in one table: the configured peers (a server with
// peer keys), every session with the peer it belongs to, which sessions are
// confirmed, and what each confirmed session holds (its tunnel addresses)
// and receives (cryptokey routing: the longest allowed prefix holding a
// packet's destination). The handshake (roles/server.ts) asks it who may
// join and who must go; the data path (tunnel.ts) asks it where a packet
// goes. A session is here from its first handshake message until it is
// removed; it takes addresses and routes only once confirmed, so a session
// whose handshake is not confirmed yet takes nothing from anyone.
import type { PeerConfig } from '../config/types.js';
import { ipv6Bytes, type TunnelAddress } from '../protocol/handshake.js';
import { AllowedIps } from './allowed-ips.js';
import type { Session } from './session.js';

/** One configured peer as `dp-tcp status` lists it. */
export interface PeerView {
  name: string;
  /** First 8 characters of the base64 public key. */
  key: string;
  allowedIps: string[];
  /** Its confirmed session, if it has one. */
  session: string | null;
}

export class Registry {
  /** Configured peers by base64 public key (peer keys); the handshake's Responder reads this map. */
  peers = new Map<string, PeerConfig>();
  /** Every session, confirmed or not. */
  readonly sessions = new Set<Session>();
  /** Sessions by peer key and session id (open and shared-key modes: one anonymous peer). */
  private readonly byKey = new Map<string, Session>();
  private readonly peerOfSession = new Map<Session, PeerConfig | undefined>();
  private readonly unconfirmed = new Set<Session>();
  /** Confirmed sessions by each of their tunnel addresses. */
  private readonly byAddress = new Map<string, Session>();
  private readonly routes = new AllowedIps<Session>();

  get size(): number {
    return this.sessions.size;
  }

  /** The session a peer opened with this id, if it is still here. */
  find(peer: PeerConfig | undefined, sessionId: Buffer): Session | undefined {
    return this.byKey.get(sessionKey(peer, sessionId));
  }

  /** A new session of `peer`, not confirmed yet (routes nothing). */
  add(s: Session, peer: PeerConfig | undefined): void {
    this.sessions.add(s);
    this.byKey.set(sessionKey(peer, s.sessionId), s);
    this.peerOfSession.set(s, peer);
    this.unconfirmed.add(s);
  }

  peerOf(s: Session): PeerConfig | undefined {
    return this.peerOfSession.get(s);
  }

  /** The peer's config was replaced (a reload): the session keeps its place. */
  setPeer(s: Session, peer: PeerConfig | undefined): void {
    if (this.peerOfSession.has(s)) this.peerOfSession.set(s, peer);
  }

  isConfirmed(s: Session): boolean {
    return this.sessions.has(s) && !this.unconfirmed.has(s);
  }

  /** Sessions of this peer (by key; undefined: the anonymous peer), confirmed or not. */
  sessionsOf(peer: PeerConfig | undefined): Session[] {
    const out: Session[] = [];
    for (const [s, p] of this.peerOfSession) if (samePeer(p, peer)) out.push(s);
    return out;
  }

  /** Sessions of this peer whose handshake is not confirmed yet. */
  unconfirmedOf(peer: PeerConfig | undefined): number {
    let n = 0;
    for (const s of this.unconfirmed) if (samePeer(this.peerOfSession.get(s), peer)) n++;
    return n;
  }

  /**
   * The session is confirmed: it holds its tunnel addresses and receives the
   * packets whose destination lies in `prefixes`. Again later (a reload
   * changed its allowed_ips): its routes are replaced.
   */
  confirm(s: Session, prefixes: readonly TunnelAddress[]): void {
    if (!this.sessions.has(s)) return;
    this.unconfirmed.delete(s);
    this.routes.removeValue(s);
    for (const a of s.peerAddresses) this.byAddress.set(addressKey(a), s);
    for (const p of prefixes) this.routes.insert(p, s);
  }

  /**
   * The one confirmed session, with the prefixes it routes, when there is
   * exactly one: then every packet whose destination lies in them is its
   * (the native send path routes so); undefined when there are none or several.
   */
  sole(): { session: Session; prefixes: readonly TunnelAddress[] } | undefined {
    if (this.sessions.size - this.unconfirmed.size !== 1) return undefined;
    for (const s of this.sessions) if (!this.unconfirmed.has(s)) return { session: s, prefixes: this.routes.prefixes(s) };
    return undefined;
  }

  /** The confirmed session holding one of these tunnel addresses, if any. */
  holder(addresses: readonly TunnelAddress[]): Session | undefined {
    for (const a of addresses) {
      const s = this.byAddress.get(addressKey(a));
      if (s) return s;
    }
    return undefined;
  }

  /** The session whose prefixes hold the destination of the IP packet at `buf[offset]`. */
  route(buf: Buffer, offset: number): Session | undefined {
    return this.routes.route(buf, offset);
  }

  /** Forgets the session everywhere (the caller closes it). */
  remove(s: Session): void {
    if (!this.sessions.delete(s)) return;
    const key = sessionKey(this.peerOfSession.get(s), s.sessionId);
    if (this.byKey.get(key) === s) this.byKey.delete(key);
    this.peerOfSession.delete(s);
    this.unconfirmed.delete(s);
    this.routes.removeValue(s);
    for (const a of s.peerAddresses) {
      const k = addressKey(a);
      if (this.byAddress.get(k) === s) this.byAddress.delete(k);
    }
  }

  /** Every configured peer with its confirmed session: `dp-tcp status`'s peer list. */
  listPeers(): PeerView[] {
    return [...this.peers.values()].map((p) => {
      let session: string | null = null;
      for (const s of this.sessionsOf(p)) if (!this.unconfirmed.has(s)) session = s.idHex;
      return {
        name: p.name,
        key: p.publicKey.toString('base64').slice(0, 8),
        allowedIps: p.allowedIps.map((a) => `${a.address}/${a.prefix}`),
        session,
      };
    });
  }
}

/** Same peer: the same public key (configs are replaced by a reload), or both anonymous. */
export function samePeer(a: PeerConfig | undefined, b: PeerConfig | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.publicKey.equals(b.publicKey));
}

function sessionKey(peer: PeerConfig | undefined, sessionId: Buffer): string {
  return `${peer ? peer.publicKey.toString('base64') : ''}/${sessionId.toString('hex')}`;
}

function addressKey(a: TunnelAddress): string {
  return a.family === 4 ? `4:${a.address}` : `6:${ipv6Bytes(a.address).toString('hex')}`;
}
