// The server obtains links by accepting them: one listener per configured
// link. Admission (src/secure/admission.ts) bounds what strangers can hold;
// the handshake (open: HELLO; keyed: INITIATION, checked cheaply first) names
// the peer and session; a keyed link joins its session only once its keypair
// is confirmed by an authentic record (docs/protocol.md).
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { PeerConfig, ServerConfig, ServerLimits, ServerLinkConfig } from '../config/types.js';
import { DpError, errorMessage, isSystemError, ProtocolError, VersionError } from '../errors.js';
import type { Logger } from '../log.js';
import { CloseCode, FrameType } from '../protocol/frame.js';
import { addressBytes, decodeHello, encodeWelcome, type LinkIntro } from '../protocol/handshake.js';
import { hostPrefixes, inPrefix } from '../core/ip.js';
import { Link, type LinkHandler } from '../core/link.js';
import { samePeer, type PeerView } from '../core/registry.js';
import type { Session } from '../core/session.js';
import { paceLink, tuneLinkSocket } from '../core/socket-options.js';
import type { Tunnel } from '../core/tunnel.js';
import { Admission, sourceBytes, type AdmissionStats } from '../secure/admission.js';
import { identityOf, Responder, type Identity, type InitiationRead } from '../secure/handshake.js';
import { KeyRing, type Keypair } from '../secure/keypair.js';
import { FIRST_MESSAGE_TIMEOUT_MS, HANDSHAKE_MAX_FRAME_BYTES, MAX_COOKIES_PER_CONNECTION } from '../secure/limits.js';
import { TokenBucket } from '../token-bucket.js';


export type { ServerLimits };

/** Why handshakes were refused, by reason. */
export type RefusalReason =
  | 'bad_mac1'
  | 'unknown_peer'
  | 'replay'
  | 'malformed'
  | 'mismatch'
  | 'address'
  | 'full'
  | 'timeout'
  | 'rekey_rate'
  | 'handshake_rate'
  | 'cookie_rounds';

export class ServerStats {
  handshakesRefused = 0;
  refused: Record<RefusalReason, number> = {
    bad_mac1: 0,
    unknown_peer: 0,
    replay: 0,
    malformed: 0,
    mismatch: 0,
    address: 0,
    full: 0,
    timeout: 0,
    rekey_rate: 0,
    handshake_rate: 0,
    cookie_rounds: 0,
  };
  handshakesCompleted = 0;
}

/** Sessions of one peer (peer keys) whose first handshake is not confirmed yet. */
const MAX_UNCONFIRMED_PER_PEER = 2;

/** Refusals of input that did not authenticate: no CLOSE is sent back. */
const UNANSWERED = new Set<RefusalReason>(['bad_mac1', 'unknown_peer', 'replay', 'malformed', 'timeout', 'cookie_rounds']);

/** A rekey INITIATION on an up link is answered at most this often. */
const REKEY_MIN_INTERVAL_MS = 1000;
/**
 * INITIATIONs on new connections of one peer (peer keys): a burst of this
 * many (a client's 16 links all redialling at once, four times), then one per
 * HANDSHAKE_INTERVAL_MS. Each costs the server four Diffie-Hellmans (0.9 ms),
 * and one that names a link of an up session replaces that connection and
 * moves what it held to the others: without a bound, one peer's handshakes
 * took the server's one thread from every other client (review). WireGuard
 * answers one per 20 ms per peer.
 */
const HANDSHAKE_BURST = 64;
const HANDSHAKE_INTERVAL_MS = 50;

export class ServerRole {
  readonly stats = new ServerStats();
  readonly identity: Identity | undefined;
  private readonly responder: Responder | undefined;
  private readonly admission: Admission<Link>;
  private readonly servers: Server[] = [];
  private readonly lastRekey = new WeakMap<Link, number>();
  /** Per peer (peer keys): INITIATIONs it may still make now, as of `at` (HANDSHAKE_BURST at most). */
  private readonly handshakeTokens = new WeakMap<PeerConfig, TokenBucket>();
  private readonly lastWarn = new Map<RefusalReason, number>();
  /** Connections closed to make room, for their peer's handshake rate, or unheard as their source is blocked: their close is not a failure of their source. */
  private readonly evicted = new WeakSet<Link>();
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly config: ServerConfig,
    readonly tunnel: Tunnel,
    private readonly log: Logger,
    private readonly limits: ServerLimits = config.limits,
  ) {
    this.identity = identityOf(config.security, 'server');
    this.responder = this.identity ? new Responder(this.identity) : undefined;
    // Peer keys: the registry holds the peer list the Responder reads (one map, replaced in place on reload).
    if (this.identity && !this.identity.shared) tunnel.registry.peers = this.identity.peers;
    this.admission = new Admission<Link>(limits.maxPending, (link, reason) => {
      // Made room for a newcomer: no fault of its source (a flood evicting a real client's
      // connections must not get that client blocked), and a stranger is told nothing.
      this.evicted.add(link);
      if (this.identity !== undefined) link.destroy(`evicted: ${reason}`);
      else link.close(CloseCode.HandshakeRefused, `evicted: ${reason}`);
    });
  }

  get admissionStats(): AdmissionStats {
    return this.admission.stats;
  }

  /** Listens on every configured address; rejects with a clear DpError if one is unusable. */
  async start(): Promise<void> {
    for (const cfg of this.config.links) {
      const server = createServer((socket) => this.accept(socket, cfg));
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) => reject(describeListenError(e, cfg)));
        server.listen({ host: cfg.listenAddress, port: cfg.listenPort, exclusive: true }, () => {
          server.removeAllListeners('error');
          server.on('error', (err) => this.log.error('listener error', { link: cfg.name, error: errorMessage(err) }));
          resolve();
        });
      });
      this.log.info('listening', { link: cfg.name, address: `${cfg.listenAddress}:${cfg.listenPort}` });
    }
    this.idleTimer = setInterval(() => this.expireIdle(), Math.min(5000, this.config.timing.sessionIdleMs / 2));
    this.idleTimer.unref();
  }

  private accept(socket: Socket, cfg: ServerLinkConfig): void {
    const t = this.config.timing;
    let source: Buffer;
    try {
      source = sourceBytes(socket.remoteAddress ?? '');
    } catch {
      socket.destroy();
      return;
    }
    const link = new Link(
      socket,
      {
        id: -1,
        name: cfg.name,
        maxFrameBytes: t.maxFrameBytes,
        queueMaxBytes: t.queueMaxBytes,
        queueMaxAgeMs: t.queueMaxAgeMs,
        keepaliveIntervalMs: t.keepaliveIntervalMs,
        deadIntervalMs: t.deadIntervalMs,
      },
      new Handshake(this, cfg, source),
      this.log.child(cfg.name),
    );
    link.path = `${cfg.id} ${socket.remoteAddress ?? ''}`;
    if (this.closed) {
      link.destroy('server shutting down');
      return;
    }
    if (this.admission.admit(link, source, performance.now()) !== undefined) {
      // Refused unheard: no failure of its source (counted, a client's redials while its address
      // is blocked kept it blocked).
      this.evicted.add(link);
      link.destroy('blocked: too many failed handshakes');
      return;
    }
    tuneLinkSocket(socket, t, this.log);
    link.setMaxFrameBytes(HANDSHAKE_MAX_FRAME_BYTES);
    // A connection that says nothing goes soon; one that never completes, at the deadline.
    // Each verdict waits for the loop turn's poll phase: on a busy server the client's message
    // may be waiting unread when the timer fires, and a refusal counts against its address.
    const first = setTimeout(() => {
      setImmediate(() => {
        if (link.state === 'handshaking' && link.id < 0) this.refuse(link, 'timeout', 'no handshake message in time');
      });
    }, Math.min(FIRST_MESSAGE_TIMEOUT_MS, t.handshakeTimeoutMs));
    const deadline = setTimeout(() => {
      setImmediate(() => {
        if (link.state === 'handshaking') this.refuse(link, 'timeout', 'handshake not completed in time');
      });
    }, t.handshakeTimeoutMs);
    first.unref();
    deadline.unref();
    socket.once('close', () => {
      clearTimeout(first);
      clearTimeout(deadline);
    });
  }

  /** The address rules of docs/protocol.md; a reason when the intro may not join. */
  private checkIntro(h: LinkIntro, peer: PeerConfig | undefined): string | undefined {
    const offload = this.config.tunnel.offload;
    if (h.offload !== offload) {
      const say = (b: boolean): string => (b ? 'on' : 'off');
      return `offload mismatch: the server has offload ${say(offload)}, the client ${say(h.offload)} (tunnel_device.offload must match)`;
    }
    const encryption = this.config.security.encryption;
    if (h.encryption !== encryption) return `encryption mismatch: the server uses ${encryption}, the client ${h.encryption}`;
    if (h.linkCount > this.limits.maxLinksPerSession) {
      return `${h.linkCount} connections (links × connections_per_link): this server takes at most ${this.limits.maxLinksPerSession} per client (server.limits.max_links_per_session)`;
    }
    const own = this.config.tunnel.addresses;
    if (h.addresses.length === 0) return 'no tunnel address: a client must name the address it sends from';
    for (const a of h.addresses) {
      const inNet = peer && peer.allowedIps.length > 0 ? peer.allowedIps.some((n) => inPrefix(a, n)) : own.some((n) => inPrefix(a, n));
      // As bytes: the same address may be written more than one way (IPv6).
      const bytes = addressBytes(a);
      if (!inNet || own.some((n) => n.family === a.family && addressBytes(n).equals(bytes))) {
        return peer && peer.allowedIps.length > 0
          ? `tunnel address ${a.address} is not in the allowed_ips of peer ${peer.name}`
          : `tunnel address ${a.address} is not a client address of this server's tunnel network`;
      }
    }
    return undefined;
  }

  /** Open mode: HELLO admits the link at once. */
  hello(link: Link, cfg: ServerLinkConfig, buf: Buffer, start: number, end: number): void {
    const h = decodeHello(buf, start, end);
    const bad = this.checkIntro(h, undefined);
    if (bad) return this.refuse(link, 'mismatch', bad);
    const session = this.sessionFor(link, h, undefined);
    if (session === undefined) return;
    this.establish(session);
    this.admission.release(link);
    link.identify(h.linkId, `${cfg.name}#${h.linkId}`);
    paceLink(link, h.paceKbit, this.config.timing, this.log); // the client's download_mbit share
    link.setMaxFrameBytes(this.config.timing.maxFrameBytes);
    link.sendControl(encodeWelcome({ epoch: session.epoch, linkId: h.linkId }));
    // The client's first frame after it comes a round trip later: as long as a handshake may take.
    link.awaitReply(this.config.timing.handshakeTimeoutMs);
    session.attach(link);
    this.stats.handshakesCompleted++;
    this.log.info('link up', { session: session.idHex.slice(0, 8), link: link.name, remote: link.remote });
  }

  /** Keyed mode: an INITIATION on a pending connection; `round` counts the COOKIEs it was sent. */
  initiation(link: Link, cfg: ServerLinkConfig, source: Buffer, buf: Buffer, start: number, end: number, round: { cookies: number }): void {
    const responder = this.responder as Responder;
    const now = performance.now();
    this.admission.initiation(now);
    const check = responder.precheck(buf, start, end, source, this.admission.underLoad(now));
    if (check === 'bad_mac1') return this.refuse(link, 'bad_mac1', 'INITIATION without a valid mac1: not made for this server');
    if (check === 'needs_cookie') {
      // Each reply costs a MAC and an AEAD: one connection streaming INITIATIONs under load
      // would otherwise be answered for every one of them.
      if (++round.cookies > MAX_COOKIES_PER_CONNECTION) {
        return this.refuse(link, 'cookie_rounds', `more than ${MAX_COOKIES_PER_CONNECTION} cookie rounds on one connection`);
      }
      this.admission.stats.cookiesSent++;
      link.sendControl(responder.cookieReply(buf, start, end, source));
      return;
    }
    let r;
    try {
      r = responder.read(buf, start, end);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      const reason = e.message.startsWith('unknown peer') ? 'unknown_peer' : e.message.includes('replayed') ? 'replay' : 'malformed';
      return this.refuse(link, reason, e.message);
    }
    try {
      this.answer(link, cfg, r, now);
    } finally {
      r.hs.abandon(); // answered, it holds nothing more; refused, what the read derived is wiped
    }
  }

  /** An INITIATION read: refused (its peer's rate, a mismatch, no session for it), or answered with a RESPONSE. */
  private answer(link: Link, cfg: ServerLinkConfig, r: InitiationRead, now: number): void {
    if (!this.identity?.shared && !this.handshakeAllowed(r.peer, now)) {
      // The peer's own bound, not a failure of its address (others may share it, behind a NAT).
      this.evicted.add(link);
      return this.refuse(link, 'handshake_rate', `peer ${r.peer.name} makes more than ${1000 / HANDSHAKE_INTERVAL_MS} handshakes a second`);
    }
    const bad = this.checkIntro(r.intro, this.identity?.shared ? undefined : r.peer);
    if (bad) return this.refuse(link, 'mismatch', bad);
    const session = this.sessionFor(link, r.intro, r.peer);
    if (session === undefined) return;
    const keys = session.keys as KeyRing;
    const { frame, keypair } = (this.responder as Responder).respond(r, session.epoch, r.intro.linkId, (i) => keys.has(i));
    keys.add(keypair);
    link.identify(r.intro.linkId, `${cfg.name}#${r.intro.linkId}`);
    paceLink(link, r.intro.paceKbit, this.config.timing, this.log);
    // Authenticated peer: records of full size may follow at once.
    link.setMaxFrameBytes(this.config.timing.maxFrameBytes);
    link.sendControl(frame);
    session.addPending(link, keypair);
    this.log.debug('handshake answered, waiting for confirmation', { peer: r.peer.name, link: link.name, remote: link.remote });
  }

  /** Takes one of the peer's handshake tokens if it has one (HANDSHAKE_BURST, one more per HANDSHAKE_INTERVAL_MS). */
  private handshakeAllowed(peer: PeerConfig, now: number): boolean {
    let b = this.handshakeTokens.get(peer);
    if (b === undefined) {
      b = new TokenBucket(HANDSHAKE_BURST, 1 / HANDSHAKE_INTERVAL_MS, now);
      this.handshakeTokens.set(peer, b);
    }
    return b.take(1, now);
  }


  /** The session of (peer, session id), made (unconfirmed) if new; undefined if refused. */
  private sessionFor(link: Link, h: LinkIntro, peer: PeerConfig | undefined): Session | undefined {
    const registry = this.tunnel.registry;
    const existing = registry.find(peer, h.sessionId);
    if (existing !== undefined && !existing.isClosed) {
      if (existing.mode === h.mode) return existing;
      this.refuse(link, 'mismatch', `mode ${h.mode} on a link of a ${existing.mode} session: all links of a client must announce the same mode`);
      return undefined;
    }
    // A peer (keys) with a confirmed session and none being set up is a client restarting: its new
    // session replaces the old one once confirmed, so a full server takes it (the old one would
    // hold its place for minutes: until it idles out). One over the limit per such peer, at most.
    const replaces =
      peer !== undefined && !this.identity?.shared && registry.unconfirmedOf(peer) === 0 && registry.sessionsOf(peer).some((s) => registry.isConfirmed(s));
    if (registry.size >= this.limits.maxSessions && !replaces) {
      this.refuse(link, 'full', `the server is full (${this.limits.maxSessions} sessions: server.limits.max_sessions)`);
      return undefined;
    }
    // A peer (one key) is one client: it may have one session, plus a few being set up
    // (a restart). Without this bound one insider could fill the table with sessions.
    if (peer && !this.identity?.shared) {
      const unconfirmed = registry.unconfirmedOf(peer);
      if (unconfirmed >= MAX_UNCONFIRMED_PER_PEER) {
        this.refuse(link, 'full', `peer ${peer.name} already has ${unconfirmed} sessions being set up`);
        return undefined;
      }
    }
    // A peer's addresses held by another peer's session: refused (psk and open mode: one shared peer).
    const holder = registry.holder(h.addresses);
    if (holder && !samePeer(registry.peerOf(holder), peer)) {
      this.refuse(link, 'address', 'its tunnel address is held by another peer');
      return undefined;
    }
    const session = this.tunnel.newSession(h.sessionId, randomBytes(8), h.addresses, peer ? new KeyRing() : undefined, peer);
    session.mode = h.mode;
    const allowed = peer && !this.identity?.shared && peer.allowedIps.length > 0 ? peer.allowedIps : hostPrefixes(h.addresses);
    session.allowSources(allowed, this.tunnel.tun.vnetHdrBytes);
    session.onLinkClosed = (l, reason) => {
      this.admission.release(l);
      const confirmed = registry.isConfirmed(session);
      if (l.state === 'closed' && session.links.size === 0 && !confirmed && session.pendingLinks.size === 0) {
        this.retire(session, CloseCode.SessionRetired, 'handshake never confirmed');
      }
      if (reason !== 'replaced by a newer connection' && l.id >= 0 && confirmed) this.log.warn('link down', { link: l.name, reason });
    };
    session.onConfirmed = (kp) => this.confirmed(session, kp);
    session.onClearFrame = (l, type, buf, start, end) => {
      if (type !== FrameType.Initiation) throw new ProtocolError(`frame type ${type} from a client`);
      this.rekey(session, l, buf, start, end);
    };
    this.setPeer(session, peer);
    return session;
  }

  private setPeer(s: Session, peer: PeerConfig | undefined): void {
    this.tunnel.registry.setPeer(s, peer);
    if (peer && !this.identity?.shared) s.peer = { name: peer.name, key: peer.publicKey.toString('base64').slice(0, 8), allowedIps: peer.allowedIps };
  }

  /** Every configured peer (peer keys), with its session if it has one: `dp-tcp status`'s peer list. */
  peers(): PeerView[] {
    return this.tunnel.registry.listPeers();
  }

  /** First confirmation of a session: it takes its addresses (retiring the same peer's old session). */
  private establish(session: Session): void {
    const registry = this.tunnel.registry;
    if (!registry.sessions.has(session) || registry.isConfirmed(session)) return;
    const peer = registry.peerOf(session);
    if (peer && !this.identity?.shared) {
      // Peer keys: one session per peer, as WireGuard has one per peer: the newest confirmed one.
      for (const other of registry.sessionsOf(peer)) {
        if (other === session || !registry.isConfirmed(other)) continue;
        this.log.info('peer started a new session: retiring its old one', { peer: peer.name, old: other.idHex.slice(0, 8), new: session.idHex.slice(0, 8) });
        this.retire(other, CloseCode.SessionRetired, 'the peer started a new session');
      }
    }
    const holder = registry.holder(session.peerAddresses);
    if (holder && holder !== session) {
      this.log.info('client restarted: retiring its old session', { old: holder.idHex.slice(0, 8), new: session.idHex.slice(0, 8) });
      this.retire(holder, CloseCode.SessionRetired, 'a new session took its address');
    }
    // Cryptokey routing: a peer (keys) receives what its allowed_ips hold; otherwise its own addresses.
    this.tunnel.register(session, peer && !this.identity?.shared && peer.allowedIps.length > 0 ? peer.allowedIps : undefined);
    this.log.info('session joined', {
      session: session.idHex.slice(0, 8),
      peer: peer?.name ?? 'open',
      addresses: session.peerAddresses.map((a) => `${a.address}/${a.prefix}`).join(','),
      encryption: this.config.security.encryption,
    });
  }

  /** A keypair's first authentic record: its handshake's links join. */
  private confirmed(session: Session, kp: Keypair): void {
    session.stats.handshakes++;
    session.lastHandshakeMs = performance.now();
    this.stats.handshakesCompleted++;
    for (const [link, pending] of [...session.pendingLinks]) {
      if (pending !== kp) continue;
      this.establish(session);
      this.admission.release(link);
      session.attach(link);
      this.log.info('link up', { session: session.idHex.slice(0, 8), peer: this.tunnel.registry.peerOf(session)?.name, link: link.name, remote: link.remote });
    }
  }

  /** An INITIATION on an up link: a rekey of that session, by the same peer for the same session. */
  private rekey(session: Session, link: Link, buf: Buffer, start: number, end: number): void {
    const responder = this.responder as Responder;
    const now = performance.now();
    if (now - (this.lastRekey.get(link) ?? -Infinity) < REKEY_MIN_INTERVAL_MS) {
      this.stats.refused.rekey_rate++;
      this.stats.handshakesRefused++; // the total is the sum of the reasons
      return;
    }
    this.lastRekey.set(link, now);
    const source = sourceBytes(link.socket.remoteAddress ?? '');
    if (responder.precheck(buf, start, end, source, false) !== 'ok') throw new ProtocolError('rekey INITIATION without a valid mac1');
    const r = responder.read(buf, start, end);
    try {
      const peer = this.tunnel.registry.peerOf(session);
      if (!samePeer(peer, r.peer) || !r.intro.sessionId.equals(session.sessionId) || r.intro.linkId !== link.id) {
        throw new ProtocolError('rekey INITIATION for another peer, session or link');
      }
      const keys = session.keys as KeyRing;
      const { frame, keypair } = responder.respond(r, session.epoch, r.intro.linkId, (i) => keys.has(i));
      keys.add(keypair);
      link.sendClear(frame);
    } finally {
      r.hs.abandon(); // as in initiation()
    }
  }

  /**
   * SIGHUP: takes the peer list of a re-read config. Added peers may connect;
   * removed peers' sessions are closed; a peer whose allowed_ips changed keeps
   * its session (routes and source checks follow) unless its tunnel address
   * is no longer allowed; everyone else is untouched. Anything else that
   * changed needs a restart, and is named. Returns a line for the log.
   */
  reload(next: ServerConfig): { added: string[]; removed: string[]; changed: string[]; ignored: string[] } {
    const identity = this.identity;
    const nextId = identityOf(next.security, 'server');
    const ignored: string[] = [];
    if (identity === undefined || nextId === undefined || identity.shared || nextId.shared) {
      if (next.security.mode !== this.config.security.mode) ignored.push('the security mode');
      return { added: [], removed: [], changed: [], ignored: [...ignored, 'peers (only the peer-key form reloads peers)'] };
    }
    if (!nextId.local.publicKey.equals(identity.local.publicKey)) ignored.push('private_key_file');
    if (next.security.encryption !== this.config.security.encryption) ignored.push('encryption');
    if (!(next.security.psk ?? Buffer.alloc(0)).equals(this.config.security.psk ?? Buffer.alloc(0))) ignored.push('psk');
    if (JSON.stringify(next.links) !== JSON.stringify(this.config.links)) ignored.push('links');
    if (JSON.stringify(next.tunnel) !== JSON.stringify(this.config.tunnel)) ignored.push('tunnel_device');
    if (JSON.stringify(next.timing) !== JSON.stringify(this.config.timing)) ignored.push('timing');
    if (JSON.stringify(next.limits) !== JSON.stringify(this.config.limits)) ignored.push('limits');
    if (next.nice !== this.config.nice) ignored.push('nice');
    if (next.natOutInterface !== this.config.natOutInterface) ignored.push('nat_out_interface');
    if (JSON.stringify(next.statusListen) !== JSON.stringify(this.config.statusListen)) ignored.push('status_listen');
    if (next.logLevel !== this.config.logLevel) ignored.push('logger.level');
    const registry = this.tunnel.registry;
    const added: string[] = [];
    const removed: string[] = [];
    const changed: string[] = [];
    const prefixes = (p: PeerConfig): string => p.allowedIps.map((a) => `${a.address}/${a.prefix}`).join(',');
    for (const [key, old] of identity.peers) {
      const now = nextId.peers.get(key);
      if (now === undefined) {
        removed.push(old.name);
        for (const s of registry.sessionsOf(old)) this.retire(s, CloseCode.SessionRetired, 'peer removed from the server');
      } else if (prefixes(now) !== prefixes(old) || now.name !== old.name) {
        changed.push(now.name);
        for (const s of registry.sessionsOf(old)) {
          this.setPeer(s, now);
          if (s.peerAddresses.some((a) => !now.allowedIps.some((n) => inPrefix(a, n)))) {
            this.retire(s, CloseCode.SessionRetired, 'its tunnel address is no longer in its allowed_ips');
            continue;
          }
          s.allowSources(now.allowedIps, this.tunnel.tun.vnetHdrBytes);
          if (registry.isConfirmed(s)) this.tunnel.register(s, now.allowedIps);
        }
      } else {
        for (const s of registry.sessionsOf(old)) this.setPeer(s, now);
      }
    }
    for (const [key, p] of nextId.peers) if (!identity.peers.has(key)) added.push(p.name);
    identity.peers.clear();
    for (const [key, p] of nextId.peers) identity.peers.set(key, p);
    return { added, removed, changed, ignored };
  }

  /** Closes a connection whose handshake is refused: `code` is what an answered refusal says. */
  refuse(link: Link, reason: RefusalReason, message: string, code: CloseCode = CloseCode.HandshakeRefused): void {
    this.stats.handshakesRefused++;
    this.stats.refused[reason]++;
    // Strangers get a line at debug; other refusals at most one warning a second per reason:
    // a flood must not flood the log (the counters have every one).
    const quiet = reason === 'bad_mac1' || reason === 'timeout' || reason === 'malformed' || reason === 'cookie_rounds';
    const now = performance.now();
    const loud = !quiet && now - (this.lastWarn.get(reason) ?? -Infinity) >= 1000;
    if (loud) this.lastWarn.set(reason, now);
    this.log[loud ? 'warn' : 'debug']('handshake refused', { remote: link.remote, reason: message });
    this.admission.release(link);
    // Unauthenticated input gets no answer (nothing to learn, nothing to amplify); a known
    // peer, or open mode, is told why: that is the message its operator needs.
    if (UNANSWERED.has(reason) && this.identity !== undefined) link.destroy(`refused: ${message}`);
    else link.close(code, message);
  }

  /** A connection closed before its handshake was answered: a failure of its source, unless it was evicted. */
  pendingClosed(link: Link, source: Buffer): void {
    this.admission.release(link);
    if (this.evicted.delete(link)) return;
    if (this.admission.failed(source, performance.now())) {
      this.log.warn('too many failed handshakes: refusing this address for a while', { source: link.socket.remoteAddress });
    }
  }

  /** Where each listener is bound (a config port 0 gets a real one here). */
  listening(): Array<{ name: string; address: string; port: number }> {
    return this.servers.map((s, i) => {
      const a = s.address();
      const cfg = this.config.links[i] as ServerLinkConfig;
      return { name: cfg.name, address: cfg.listenAddress, port: typeof a === 'object' && a ? a.port : -1 };
    });
  }

  private retire(s: Session, code: CloseCode, reason: string): void {
    this.tunnel.removeSession(s, code, reason);
  }

  private expireIdle(): void {
    const now = performance.now();
    const registry = this.tunnel.registry;
    for (const s of [...registry.sessions]) {
      const confirmed = registry.isConfirmed(s);
      const idle = s.links.size === 0 && s.pendingLinks.size === 0 && now - s.lastLinkLossMs;
      const limit = confirmed ? this.config.timing.sessionIdleMs : this.config.timing.handshakeTimeoutMs;
      if (idle !== false && idle > limit) {
        if (confirmed) this.log.info('session left (no link for too long)', { session: s.idHex.slice(0, 8) });
        this.retire(s, CloseCode.SessionRetired, 'idle');
      }
    }
  }

  close(): void {
    this.closed = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    for (const s of this.servers) s.close();
    // Connections still in their handshake (admission holds them) may belong to no session: the
    // tunnel's close would not end them, and a HELLO or INITIATION arriving now would make a session
    // in a closed tunnel.
    for (const link of [...this.admission.connections()]) link.destroy('server shutting down');
  }
}

/** One connection's first message: HELLO (open mode) or INITIATION/COOKIE round (keyed). */
class Handshake implements LinkHandler {
  private readonly round = { cookies: 0 };

  constructor(
    private readonly role: ServerRole,
    private readonly cfg: ServerLinkConfig,
    private readonly source: Buffer,
  ) {}

  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (this.role.identity === undefined) {
      if (type !== FrameType.Hello) throw new ProtocolError(`expected HELLO, got frame type ${type} (is the client configured with a key? this server has none)`);
      this.role.hello(link, this.cfg, buf, start, end);
      return;
    }
    if (type !== FrameType.Initiation) {
      if (type === FrameType.Hello) return this.role.refuse(link, 'mismatch', 'this server requires a key: the client has none configured');
      throw new ProtocolError(`expected INITIATION, got frame type ${type}`);
    }
    this.role.initiation(link, this.cfg, this.source, buf, start, end, this.round);
  }

  /**
   * Input that breaks the framing before the handshake (an oversized or unknown
   * frame, a short INITIATION, DATA first): refused as malformed, and so, keyed,
   * without a word to a stranger. A frame of another protocol version is
   * another dp-tcp: a mismatch, which its operator is told (as a HELLO to a keyed server).
   */
  onProtocolError(link: Link, error: ProtocolError): void {
    this.role.refuse(link, error instanceof VersionError ? 'mismatch' : 'malformed', error.message, CloseCode.ProtocolError);
  }

  onChunkEnd(): void {}

  onClose(link: Link): void {
    // Only reached when the connection closed before it was answered (after that the session handles it).
    this.role.pendingClosed(link, this.source);
  }
}

function describeListenError(e: unknown, cfg: ServerLinkConfig): DpError {
  const where = `${cfg.listenAddress}:${cfg.listenPort}`;
  if (isSystemError(e)) {
    if (e.code === 'EADDRINUSE') {
      return new DpError('ERR_LISTEN', `cannot listen on ${where} (${cfg.name}): the port is already in use`, {
        exitCode: 2,
      });
    }
    // Exit 1, not 2: it can pass. At boot an address may not be there yet (an IPv6 address is
    // unusable until duplicate address detection ends, a second or two), and the systemd units
    // restart after any exit code but 2.
    if (e.code === 'EADDRNOTAVAIL') {
      return new DpError('ERR_LISTEN', `cannot listen on ${where} (${cfg.name}): no interface has that address (yet?)`, {
        exitCode: 1,
      });
    }
  }
  return new DpError('ERR_LISTEN', `cannot listen on ${where} (${cfg.name}): ${errorMessage(e)}`, { exitCode: 2 });
}
