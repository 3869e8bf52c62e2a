// The server obtains links by accepting them: one listener per configured
// link. HELLO names the session; links of one client join one session, a
// restarted client (new session id, same tunnel address) retires its old one.
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ServerConfig, ServerLinkConfig } from '../config/types.js';
import { DpError, errorMessage, isSystemError, ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { CloseCode, FrameType } from '../protocol/frame.js';
import { decodeHello, encodeWelcome } from '../protocol/handshake.js';
import { Link, type LinkHandler } from '../core/link.js';
import type { Session } from '../core/session.js';
import { tuneLinkSocket } from '../core/socket-options.js';
import type { Tunnel } from '../core/tunnel.js';

export class ServerRole {
  private readonly servers: Server[] = [];
  private readonly pending = new Set<Link>();
  private readonly bySessionId = new Map<string, Session>();
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly config: ServerConfig,
    readonly tunnel: Tunnel,
    private readonly log: Logger,
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
    this.pending.add(link);
    const timer = setTimeout(() => {
      if (link.state === 'handshaking') {
        this.log.warn('no HELLO in time: closing connection', { link: cfg.name, remote: link.remote });
        link.close(CloseCode.HandshakeRefused, 'no HELLO in time');
      }
    }, t.handshakeTimeoutMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  /** HELLO arrived on a pending link: find or make its session and attach. */
  hello(link: Link, cfg: ServerLinkConfig, buf: Buffer, start: number, end: number): void {
    const h = decodeHello(buf, start, end);
    const key = h.sessionId.toString('hex');
    let session = this.bySessionId.get(key);
    if (session === undefined || session.isClosed) {
      const holder = this.tunnel.sessionByAddress(h.addresses);
      if (holder) {
        this.log.info('client restarted: retiring its old session', { old: holder.idHex.slice(0, 8), new: key.slice(0, 8) });
        this.retire(holder, CloseCode.SessionRetired, 'a new session took its address');
      }
      session = this.tunnel.newSession(h.sessionId, randomBytes(8), h.addresses);
      session.onLinkClosed = (l, reason) => {
        if (reason !== 'replaced by a newer connection') this.log.warn('link down', { link: l.name, reason });
      };
      this.bySessionId.set(key, session);
      this.log.info('session joined', {
        session: key.slice(0, 8),
        addresses: h.addresses.map((a) => `${a.address}/${a.prefix}`).join(','),
      });
    }
    this.pending.delete(link);
    link.identify(h.linkId, `${cfg.name}#${h.linkId}`);
    link.sendControl(encodeWelcome({ epoch: session.epoch, linkId: h.linkId }));
    session.attach(link);
    this.log.info('link up', { session: key.slice(0, 8), link: link.name, remote: link.remote });
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

class Handshake implements LinkHandler {
  constructor(
    private readonly role: ServerRole,
    private readonly cfg: ServerLinkConfig,
  ) {}

  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (type !== FrameType.Hello) throw new ProtocolError(`expected HELLO, got frame type ${type}`);
    this.role.hello(link, this.cfg, buf, start, end);
  }

  onChunkEnd(): void {}

  onClose(link: Link): void {
    this.role.pendingClosed(link);
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
