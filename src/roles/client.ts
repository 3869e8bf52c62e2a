// The client obtains links by dialling: one dialer per configured link, each
// redialling on its own with exponential backoff and jitter.
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { ClientConfig, ClientLinkConfig } from '../config/types.js';
import { errorMessage, ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { CloseCode, decodeClose, FrameType } from '../protocol/frame.js';
import { clientProof, newNonce, proofsEqual, serverProof, sessionKey } from '../protocol/auth.js';
import { decodeChallenge, decodeWelcome, encodeAuth, encodeHello, SESSION_ID_BYTES } from '../protocol/handshake.js';
import { FRAME_HEADER_BYTES } from '../protocol/frame.js';
import { Opener, Sealer } from '../protocol/seal.js';
import { Link, type LinkHandler } from '../core/link.js';
import type { Session } from '../core/session.js';
import { tuneLinkSocket } from '../core/socket-options.js';
import type { Tunnel } from '../core/tunnel.js';

const NO_EPOCH = Buffer.alloc(8);

export class ClientRole {
  readonly session: Session;
  private readonly dialers: Dialer[];

  constructor(
    readonly config: ClientConfig,
    readonly tunnel: Tunnel,
    private readonly log: Logger,
  ) {
    this.session = tunnel.newSession(randomBytes(SESSION_ID_BYTES), NO_EPOCH, config.tunnel.addresses);
    this.dialers = config.links.map((l) => new Dialer(this, l, log.child(l.name)));
    this.session.onLinkClosed = (link, reason) => {
      for (const d of this.dialers) d.linkClosed(link, reason);
    };
  }

  start(): void {
    this.log.info('client starting', {
      session: this.session.idHex.slice(0, 8),
      tun: this.tunnel.tun.name,
      links: this.config.links.length,
    });
    for (const d of this.dialers) d.dial();
  }

  /** A link finished its handshake; a new server epoch means the server side started over. */
  welcome(link: Link, epoch: Buffer): void {
    const s = this.session;
    if (!epoch.equals(s.epoch)) {
      if (!s.epoch.equals(NO_EPOCH)) {
        this.log.warn('server session changed (server restarted?): starting a new receive sequence', {
          old: s.epoch.toString('hex'),
          new: epoch.toString('hex'),
        });
        for (const other of s.links.values()) other.close(CloseCode.Shutdown, 'server epoch changed');
      }
      s.resetPeer(epoch);
      const { psk, encryption } = this.config.security;
      if (psk && encryption !== 'none') {
        // New epoch, new keys: a (key, nonce) pair is never reused across server sessions.
        s.setCrypto(
          new Sealer(encryption, sessionKey(psk, s.sessionId, epoch, 'c2s')),
          new Opener(encryption, sessionKey(psk, s.sessionId, epoch, 's2c')),
        );
      }
    }
    s.attach(link);
  }

  close(): void {
    for (const d of this.dialers) d.stop();
  }
}

class Dialer implements LinkHandler {
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private current: Link | undefined;
  private socket: Socket | undefined;
  private deadline: NodeJS.Timeout | undefined;
  /** Body of the HELLO sent on the current connection, and whether the server proved the key. */
  private helloBody: Buffer = Buffer.alloc(0);
  private serverProved = false;
  private stopped = false;

  constructor(
    private readonly role: ClientRole,
    private readonly cfg: ClientLinkConfig,
    private readonly log: Logger,
  ) {}

  dial(): void {
    if (this.stopped) return;
    this.timer = undefined;
    const t = this.role.config.timing;
    const socket = connect({
      host: this.cfg.remoteAddress,
      port: this.cfg.remotePort,
      ...(this.cfg.localAddress === undefined ? {} : { localAddress: this.cfg.localAddress }),
      noDelay: true,
    });
    this.socket = socket;
    // One deadline for connect + handshake: a blackholed path must not hold the dialer.
    const deadline = setTimeout(() => {
      this.log.debug('connect/handshake timed out', { remote: `${this.cfg.remoteAddress}:${this.cfg.remotePort}` });
      socket.destroy();
    }, t.handshakeTimeoutMs);
    deadline.unref();
    this.deadline = deadline;
    const onEarlyClose = (): void => {
      clearTimeout(deadline);
      if (this.current === undefined) this.retry();
    };
    socket.once('error', (e) => this.log.debug('dial failed', { error: errorMessage(e) }));
    socket.once('close', onEarlyClose);
    socket.once('connect', () => {
      socket.removeListener('close', onEarlyClose);
      tuneLinkSocket(socket, t, this.log);
      const link = new Link(
        socket,
        {
          id: this.cfg.id,
          name: this.cfg.name,
          maxFrameBytes: t.maxFrameBytes,
          queueMaxBytes: t.queueMaxBytes,
          queueMaxAgeMs: t.queueMaxAgeMs,
          keepaliveIntervalMs: t.keepaliveIntervalMs,
          deadIntervalMs: t.deadIntervalMs,
        },
        this,
        this.log,
      );
      this.current = link;
      const { psk, encryption } = this.role.config.security;
      const hello = encodeHello({
        sessionId: this.role.session.sessionId,
        nonce: newNonce(),
        auth: psk !== undefined,
        encryption,
        offload: this.role.config.tunnel.offload,
        linkId: this.cfg.id,
        linkCount: this.role.config.links.length,
        addresses: this.role.config.tunnel.addresses,
      });
      this.helloBody = hello.subarray(FRAME_HEADER_BYTES);
      this.serverProved = false;
      link.sendControl(hello);
    });
  }

  // Handshake phase: CHALLENGE (with a key), WELCOME or CLOSE.
  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    const psk = this.role.config.security.psk;
    if (type === FrameType.Challenge) {
      if (!psk) {
        this.refused(link, 'the server requires a pre-shared key, and this client has none (set psk or psk_file)');
        return;
      }
      const c = decodeChallenge(buf, start, end);
      if (!proofsEqual(c.mac, serverProof(psk, this.helloBody, c.nonce))) {
        this.refused(link, "the server's proof of the pre-shared key does not match: the keys differ (or this is not your server)");
        return;
      }
      this.serverProved = true;
      link.sendControl(encodeAuth(clientProof(psk, this.helloBody, c.nonce, c.mac)));
      return;
    }
    if (type === FrameType.Welcome) {
      if (psk && !this.serverProved) {
        this.refused(link, 'the server did not prove the pre-shared key: it has no key configured, or is not your server');
        return;
      }
      const w = decodeWelcome(buf, start, end);
      if (w.linkId !== this.cfg.id) throw new ProtocolError(`WELCOME for link ${w.linkId}, expected ${this.cfg.id}`);
      clearTimeout(this.deadline);
      this.attempt = 0;
      this.role.welcome(link, w.epoch);
      this.log.info('link up', { local: link.local, remote: link.remote, epoch: w.epoch.toString('hex') });
      return;
    }
    if (type === FrameType.Close) {
      const { code, reason } = decodeClose(buf, start, end);
      this.log.error('server refused the link', { code, reason });
      link.destroy(`refused: ${reason}`);
      return;
    }
    throw new ProtocolError(`expected WELCOME, got frame type ${type}`);
  }

  private refused(link: Link, why: string): void {
    this.log.error(`handshake failed: ${why}`);
    link.close(CloseCode.HandshakeRefused, 'client refused the handshake');
  }

  onChunkEnd(): void {}

  onClose(link: Link, reason: string): void {
    this.linkClosed(link, reason);
  }

  /** From the handshake handler or from the session once attached. */
  linkClosed(link: Link, reason: string): void {
    if (link !== this.current) return;
    clearTimeout(this.deadline);
    this.current = undefined;
    if (!this.stopped) this.log.warn('link down', { reason });
    this.retry();
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    const t = this.role.config.timing;
    const base = Math.min(t.reconnectMaxMs, t.reconnectMinMs * 2 ** Math.min(this.attempt, 16));
    // Full jitter on the upper half: links of one client do not redial in lockstep.
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.timer = setTimeout(() => this.dial(), delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.current?.close(CloseCode.Shutdown, 'client shutting down');
    this.socket?.destroy();
  }
}
