// The server obtains links by accepting them: one listener per configured
// link. HELLO names the session; links of one client join one session, a
// restarted client (new session id, same tunnel address) retires its old one.
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ServerConfig, ServerLinkConfig } from '../config/types.js';
import { DpError, errorMessage, isSystemError, ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { clientProof, newNonce, proofsEqual, serverProof, sessionKey } from '../protocol/auth.js';
import { CloseCode, FrameType } from '../protocol/frame.js';
import { decodeAuth, decodeHello, encodeChallenge, encodeWelcome, type Hello } from '../protocol/handshake.js';
import { Opener, Sealer } from '../protocol/seal.js';
import { inPrefix, sourceIs } from '../core/ip.js';
import { Link, type LinkHandler } from '../core/link.js';
import type { Session } from '../core/session.js';
import { tuneLinkSocket } from '../core/socket-options.js';
import type { Tunnel } from '../core/tunnel.js';

/** Before authentication a peer may only send handshake-sized frames. */
export const HANDSHAKE_MAX_FRAME_BYTES = 1024;
/** More failed handshakes than this from one address within the window block it for a while. */
const FAIL_LIMIT = 8;
const FAIL_WINDOW_MS = 10_000;
const BLOCK_MS = 10_000;
const MAX_TRACKED_SOURCES = 4096;

/** Bounds on what strangers can make the server hold. */
export interface ServerLimits {
  /** Sessions (clients); each holds an elimination ring of its own. */
  readonly maxSessions: number;
  /** Connections still in their handshake. */
  readonly maxPending: number;
}

export const DEFAULT_LIMITS: ServerLimits = Object.freeze({ maxSessions: 64, maxPending: 256 });

export class ServerStats {
  handshakesRefused = 0;
  /** Connections closed at once because too many handshakes were under way. */
  pendingFull = 0;
  /** Connections closed at once because their source address failed too often. */
  rateLimited = 0;
}

export class ServerRole {
  readonly stats = new ServerStats();
  private readonly failures = new Map<string, { count: number; since: number; blockedUntil: number }>();
  private readonly servers: Server[] = [];
  private readonly pending = new Set<Link>();
  private readonly bySessionId = new Map<string, Session>();
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly config: ServerConfig,
    readonly tunnel: Tunnel,
    private readonly log: Logger,
    private readonly limits: ServerLimits = DEFAULT_LIMITS,
  ) {}

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
    const source = socket.remoteAddress ?? '?';
    const f = this.failures.get(source);
    if (f && f.blockedUntil > performance.now()) {
      this.stats.rateLimited++;
      socket.destroy();
      return;
    }
    if (this.pending.size >= this.limits.maxPending) {
      this.stats.pendingFull++;
      socket.destroy();
      return;
    }
    tuneLinkSocket(socket, t, this.log);
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
      new Handshake(this, cfg),
      this.log.child(cfg.name),
    );
    link.setMaxFrameBytes(HANDSHAKE_MAX_FRAME_BYTES);
    this.pending.add(link);
    const timer = setTimeout(() => {
      if (link.state === 'handshaking') {
        this.log.warn('handshake not completed in time: closing connection', { link: cfg.name, remote: link.remote });
        link.close(CloseCode.HandshakeRefused, 'handshake not completed in time');
      }
    }, t.handshakeTimeoutMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  /**
   * HELLO arrived on a pending link. Returns the server's CHALLENGE when a key
   * is configured (the link waits for AUTH), or admits the link at once.
   */
  hello(link: Link, cfg: ServerLinkConfig, buf: Buffer, start: number, end: number): Hello | undefined {
    const h = decodeHello(buf, start, end);
    const { psk, encryption } = this.config.security;
    if (psk && !h.auth) return this.refuse(link, 'this server requires a pre-shared key');
    if (!psk && h.auth) return this.refuse(link, 'this server has no pre-shared key configured');
    if (h.encryption !== encryption) {
      return this.refuse(link, `encryption mismatch: the server uses ${encryption}, the client asked for ${h.encryption}`);
    }
    if (h.offload !== this.config.tunnel.offload) {
      const say = (b: boolean): string => (b ? 'on' : 'off');
      return this.refuse(link, `offload mismatch: the server has offload ${say(this.config.tunnel.offload)}, the client ${say(h.offload)} (tunnel_device.offload must match)`);
    }
    const own = this.config.tunnel.addresses;
    for (const a of h.addresses) {
      if (!own.some((n) => inPrefix(a, n)) || own.some((n) => n.address === a.address)) {
        return this.refuse(link, `tunnel address ${a.address} is not a client address of this server's tunnel network`);
      }
    }
    if (!psk) {
      this.admit(link, cfg, h);
      return undefined;
    }
    return h;
  }

  admit(link: Link, cfg: ServerLinkConfig, h: Hello): void {
    const key = h.sessionId.toString('hex');
    let session = this.bySessionId.get(key);
    if (session === undefined || session.isClosed) {
      const holder = this.tunnel.sessionByAddress(h.addresses);
      if (!holder && this.bySessionId.size >= this.limits.maxSessions) {
        this.refuse(link, `the server is full (${this.limits.maxSessions} sessions)`);
        return;
      }
      if (holder) {
        this.log.info('client restarted: retiring its old session', { old: holder.idHex.slice(0, 8), new: key.slice(0, 8) });
        this.retire(holder, CloseCode.SessionRetired, 'a new session took its address');
      }
      session = this.tunnel.newSession(h.sessionId, randomBytes(8), h.addresses);
      session.sourceFilter = sourceIs(h.addresses, this.tunnel.tun.vnetHdrBytes);
      const { psk, encryption } = this.config.security;
      if (psk && encryption !== 'none') {
        session.setCrypto(
          new Sealer(encryption, sessionKey(psk, session.sessionId, session.epoch, 's2c')),
          new Opener(encryption, sessionKey(psk, session.sessionId, session.epoch, 'c2s')),
        );
      }
      session.onLinkClosed = (l, reason) => {
        if (reason !== 'replaced by a newer connection') this.log.warn('link down', { link: l.name, reason });
      };
      this.bySessionId.set(key, session);
      this.log.info('session joined', {
        session: key.slice(0, 8),
        addresses: h.addresses.map((a) => `${a.address}/${a.prefix}`).join(','),
        encryption: session.encrypted ? this.config.security.encryption : 'none',
      });
    }
    this.pending.delete(link);
    link.identify(h.linkId, `${cfg.name}#${h.linkId}`);
    link.setMaxFrameBytes(this.config.timing.maxFrameBytes);
    link.sendControl(encodeWelcome({ epoch: session.epoch, linkId: h.linkId }));
    session.attach(link);
    this.log.info('link up', { session: key.slice(0, 8), link: link.name, remote: link.remote });
  }

  refuse(link: Link, reason: string): undefined {
    this.stats.handshakesRefused++;
    this.log.warn('handshake refused', { remote: link.remote, reason });
    link.close(CloseCode.HandshakeRefused, reason);
    return undefined;
  }

  /** Counts a failed handshake against its source address; too many block it for a while. */
  handshakeFailed(source: string): void {
    const now = performance.now();
    let f = this.failures.get(source);
    if (!f || now - f.since > FAIL_WINDOW_MS) {
      if (this.failures.size >= MAX_TRACKED_SOURCES) {
        for (const [k, v] of this.failures) if (v.blockedUntil < now) this.failures.delete(k);
        if (this.failures.size >= MAX_TRACKED_SOURCES) this.failures.delete(this.failures.keys().next().value as string);
      }
      f = { count: 0, since: now, blockedUntil: 0 };
      this.failures.set(source, f);
    }
    f.count++;
    if (f.count > FAIL_LIMIT && f.blockedUntil < now) {
      f.blockedUntil = now + BLOCK_MS;
      this.log.warn('too many failed handshakes: refusing this address for a while', { source, seconds: BLOCK_MS / 1000 });
    }
  }

  pendingClosed(link: Link): void {
    this.pending.delete(link);
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
    this.bySessionId.delete(s.idHex);
    this.tunnel.removeSession(s, code, reason);
  }

  private expireIdle(): void {
    const now = performance.now();
    for (const s of this.bySessionId.values()) {
      if (s.links.size === 0 && now - s.lastLinkLossMs > this.config.timing.sessionIdleMs) {
        this.log.info('session left (no link for too long)', { session: s.idHex.slice(0, 8) });
        this.retire(s, CloseCode.SessionRetired, 'idle');
      }
    }
  }

  close(): void {
    if (this.idleTimer) clearInterval(this.idleTimer);
    for (const s of this.servers) s.close();
    for (const l of this.pending) l.close(CloseCode.Shutdown, 'server shutting down');
    this.pending.clear();
  }
}

/** One connection's handshake: HELLO, then (with a key) CHALLENGE/AUTH, then WELCOME. */
class Handshake implements LinkHandler {
  private hello: Hello | undefined;
  private helloBody: Buffer = Buffer.alloc(0);
  private nonce: Buffer = Buffer.alloc(0);
  private mac: Buffer = Buffer.alloc(0);
  private admitted = false;

  constructor(
    private readonly role: ServerRole,
    private readonly cfg: ServerLinkConfig,
  ) {}

  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (type === FrameType.Hello && this.hello === undefined && this.helloBody.length === 0) {
      this.helloBody = Buffer.from(buf.subarray(start, end));
      const h = this.role.hello(link, this.cfg, buf, start, end);
      if (h === undefined) {
        this.admitted = link.state === 'up';
        return;
      }
      const psk = this.role.config.security.psk as Buffer;
      this.hello = h;
      this.nonce = newNonce();
      this.mac = serverProof(psk, this.helloBody, this.nonce);
      link.sendControl(encodeChallenge(this.nonce, this.mac));
      return;
    }
    if (type === FrameType.Auth && this.hello !== undefined) {
      const psk = this.role.config.security.psk as Buffer;
      const expected = clientProof(psk, this.helloBody, this.nonce, this.mac);
      if (!proofsEqual(decodeAuth(buf, start, end), expected)) {
        this.role.refuse(link, 'authentication failed: the pre-shared keys differ');
        return;
      }
      this.admitted = true;
      this.role.admit(link, this.cfg, this.hello);
      return;
    }
    throw new ProtocolError(
      `expected ${this.hello ? 'AUTH' : 'HELLO'} during the handshake, got frame type ${type}`,
    );
  }

  onChunkEnd(): void {}

  onClose(link: Link): void {
    this.role.pendingClosed(link);
    if (!this.admitted) this.role.handshakeFailed(link.socket.remoteAddress ?? '?');
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
    if (e.code === 'EADDRNOTAVAIL') {
      return new DpError('ERR_LISTEN', `cannot listen on ${where} (${cfg.name}): no interface has that address`, {
        exitCode: 2,
      });
    }
  }
  return new DpError('ERR_LISTEN', `cannot listen on ${where} (${cfg.name}): ${errorMessage(e)}`, { exitCode: 2 });
}
