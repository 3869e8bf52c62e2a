// The client obtains links by dialling: one dialer per configured link, each
// redialling on its own with exponential backoff and jitter. In keyed mode
// each connection runs a Noise handshake (src/secure/handshake.ts); the
// session's keypair is renewed by a rekey handshake on an up link before it
// expires.
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ClientConfig, ClientLinkConfig } from '../config/types.js';
import { errorMessage, ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { CloseCode, decodeClose, encodeToken, FrameType } from '../protocol/frame.js';
import { decodeWelcome, encodeHello, SESSION_ID_BYTES, type LinkIntro } from '../protocol/handshake.js';
import { Link, type LinkHandler } from '../core/link.js';
import type { Session } from '../core/session.js';
import { paceLink, tuneLinkSocket } from '../core/socket-options.js';
import type { Tunnel } from '../core/tunnel.js';
import { identityOf, Initiator, type Established, type Identity } from '../secure/handshake.js';
import { KeyRing } from '../secure/keypair.js';
import { REKEY_TIMEOUT_MS } from '../secure/limits.js';
import { DIAL_WARN_INTERVAL_MS, dialHint, DialReport, type DialStatus } from './dial-report.js';

const NO_EPOCH = Buffer.alloc(8);
/** COOKIE rounds tolerated on one connection before it is given up. */
const MAX_COOKIE_ROUNDS = 3;

export class ClientRole {
  readonly session: Session;
  readonly identity: Identity | undefined;
  private readonly dialers: Dialer[];
  private rekeyTimer: NodeJS.Timeout | undefined;
  /**
   * Runs before each redial of a link (its configured id), which waits for it:
   * run.ts sets the link's own route again there if its interface lost it.
   */
  beforeRedial: ((linkId: number) => Promise<void>) | undefined;
  /** The rekey handshake under way: on which link, since when. */
  private rekeying: { link: Link; initiator: Initiator; sinceMs: number } | undefined;

  constructor(
    readonly config: ClientConfig,
    readonly tunnel: Tunnel,
    private readonly log: Logger,
  ) {
    this.identity = identityOf(config.security, 'client');
    this.session = tunnel.newSession(
      randomBytes(SESSION_ID_BYTES),
      NO_EPOCH,
      config.tunnel.addresses,
      this.identity ? new KeyRing() : undefined,
    );
    this.session.mode = config.mode;
    // Whatever the kernel routes into the TUN goes to the server.
    tunnel.register(this.session, [
      { family: 4, address: '0.0.0.0', prefix: 0 },
      { family: 6, address: '::', prefix: 0 },
    ]);
    this.dialers = config.links.map((l) => new Dialer(this, l, log.child(l.name)));
    this.session.onLinkClosed = (link, reason) => {
      if (this.rekeying?.link === link) {
        this.rekeying.initiator.abandon();
        this.rekeying = undefined;
      }
      for (const d of this.dialers) d.linkClosed(link, reason);
    };
    this.session.onClearFrame = (link, type, buf, start, end) => this.rekeyFrame(link, type, buf, start, end);
  }

  start(): void {
    this.log.info('client starting', {
      session: this.session.idHex.slice(0, 8),
      tun: this.tunnel.tun.name,
      links: this.config.links.length,
      security: this.config.security.mode,
    });
    for (const d of this.dialers) d.dial();
    if (this.identity) {
      this.rekeyTimer = setInterval(() => this.maybeRekey(), 1000);
      this.rekeyTimer.unref();
    }
  }

  /** An index a keypair of the session still holds: a new handshake picks another. */
  readonly indexTaken = (index: number): boolean => this.session.keys?.has(index) ?? false;

  intro(linkId: number): LinkIntro {
    return {
      sessionId: this.session.sessionId,
      encryption: this.config.security.encryption,
      offload: this.config.tunnel.offload,
      mode: this.config.mode,
      linkId,
      linkCount: this.config.links.length,
      addresses: this.config.tunnel.addresses,
      paceKbit: this.config.links[linkId]?.downloadKbit,
    };
  }

  /** Times the session took a new server epoch (epochIsStale). */
  epochChanges = 0;

  /**
   * Whether `epoch`, in the answer to a handshake begun when epochChanges was
   * `begunAt`, is not to be taken: another than the session's, which the
   * session took after that handshake began (so not known to be newer; the
   * case is an older server session's answer on a slow link). Epochs have no
   * order; a handshake begun later reached the server later, and the server
   * keeps one session per client at a time, so only one begun since can move
   * the session on. (A slow link's answer from a server that restarted since
   * would otherwise take the session back to the dead one.)
   */
  epochIsStale(epoch: Buffer, begunAt: number): boolean {
    return begunAt !== this.epochChanges && !epoch.equals(this.session.epoch);
  }

  /** A link finished its handshake; a new server epoch means the server side started over. */
  welcome(link: Link, epoch: Buffer): void {
    const s = this.session;
    if (!epoch.equals(s.epoch)) {
      this.epochChanges++;
      if (!s.epoch.equals(NO_EPOCH)) {
        this.log.warn('server session changed (server restarted?): starting a new receive sequence', {
          old: s.epoch.toString('hex'),
          new: epoch.toString('hex'),
        });
        for (const other of s.links.values()) other.close(CloseCode.Shutdown, 'server epoch changed');
      }
      s.resetPeer(epoch);
    }
    s.attach(link);
  }

  /** Keyed: RESPONSE authenticated; the new keypair seals from now on, and a PING confirms it to the server. */
  established(link: Link, est: Established): void {
    this.welcome(link, est.epoch);
    (this.session.keys as KeyRing).add(est.keypair);
    this.session.stats.handshakes++;
    this.session.lastHandshakeMs = performance.now();
    link.sendControl(encodeToken(FrameType.Ping, Math.round(performance.now() * 1000)));
  }

  /** Starts a rekey handshake now (operators and tests); normally the timer decides. */
  rekeyNow(): void {
    this.maybeRekey(true);
  }

  /** Starts a rekey handshake on an up link when the sending keypair is due (or none is left). */
  private maybeRekey(force = false): void {
    const keys = this.session.keys as KeyRing;
    const now = performance.now();
    const kp = keys.sending;
    if (!force && kp !== undefined && !kp.wantsRekey(now)) return;
    if (!force && this.rekeying && now - this.rekeying.sinceMs < REKEY_TIMEOUT_MS) return;
    const up = this.session.upLinks();
    if (up.length === 0) return;
    // Another link than last time, if there is one: that one may be stalled.
    const link = up.find((l) => l !== this.rekeying?.link) ?? (up[0] as Link);
    const initiator = new Initiator(this.identity as Identity);
    this.rekeying?.initiator.abandon(); // timed out: its answer, should it come, is late
    this.rekeying = { link, initiator, sinceMs: now };
    this.log.debug('rekeying', { link: link.name });
    link.sendClear(initiator.initiation(this.intro(link.id), this.indexTaken));
  }

  private rekeyFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    const r = this.rekeying;
    if (type === FrameType.Response && (r === undefined || r.link !== link || !r.initiator.answers(buf, start, end))) {
      // The answer to a rekey given up since (timed out, or followed by another, maybe on another
      // link): late, not wrong. Closing the link for it would cost a working link. Or a replay by
      // someone on the path, as many as they like: counted, not logged above debug (20,000 of
      // them made as many INFO lines in 185 ms — review).
      this.session.stats.lateResponses++;
      this.log.debug('ignored a RESPONSE to no rekey under way', { link: link.name });
      return;
    }
    if (type !== FrameType.Response || r === undefined) {
      throw new ProtocolError(`unexpected frame type ${type} in clear on an up link`);
    }
    const est = r.initiator.response(buf, start, end);
    if (!est.epoch.equals(this.session.epoch) || est.linkId !== link.id) {
      est.keypair.retire();
      throw new ProtocolError('rekey RESPONSE for another session or link');
    }
    this.rekeying = undefined;
    (this.session.keys as KeyRing).add(est.keypair);
    this.session.stats.handshakes++;
    this.session.lastHandshakeMs = performance.now();
    link.sendControl(encodeToken(FrameType.Ping, Math.round(performance.now() * 1000)));
    this.log.debug('rekeyed', { link: link.name });
  }

  /** Every configured link as its dialer sees it, connected or not (the status document's `dial`). */
  dialStatus(): DialStatus[] {
    return this.dialers.map((d) => d.status());
  }

  close(): void {
    if (this.rekeyTimer) clearInterval(this.rekeyTimer);
    for (const d of this.dialers) d.stop();
  }
}

class Dialer implements LinkHandler {
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private current: Link | undefined;
  private socket: Socket | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private initiator: Initiator | undefined;
  private cookieRounds = 0;
  private stopped = false;
  /** The connection in `current` finished its handshake. */
  private isUp = false;
  /** When it did (performance.now()). */
  private upAtMs = 0;
  /** Why the server refused the connection under way (its CLOSE), if it did. */
  private refusal: string | undefined;
  /** The role's epochChanges when the handshake under way began (its HELLO or INITIATION went). */
  private begunAt = 0;
  /** The first socket error (or the deadline) of the connection under way. */
  private dialError: (Error & { code?: unknown }) | undefined;
  private readonly report = new DialReport();
  private readonly remote: string;

  constructor(
    private readonly role: ClientRole,
    private readonly cfg: ClientLinkConfig,
    private readonly log: Logger,
  ) {
    this.remote = cfg.remoteAddress.includes(':') ? `[${cfg.remoteAddress}]:${cfg.remotePort}` : `${cfg.remoteAddress}:${cfg.remotePort}`;
  }

  status(): DialStatus {
    return {
      id: this.cfg.id,
      name: this.cfg.name,
      remote: this.remote,
      local: this.cfg.localAddress ?? null,
      ...this.report.snapshot(performance.now()),
      ...(this.stopped ? { state: 'stopped' as const } : {}),
    };
  }

  /**
   * An attempt ended before the link came up: a warning with the address and
   * the reason the first time, then at most every DIAL_WARN_INTERVAL_MS with
   * the count of failures in between; debug otherwise.
   */
  private failed(reason: string, code?: string): void {
    if (this.stopped) return;
    const r = this.report.failed(reason, performance.now());
    const fields = {
      remote: this.remote,
      local: this.cfg.localAddress,
      error: code,
      hint: dialHint(code),
      failures: this.report.failures,
    };
    if (!r.warn) {
      this.log.debug('link still cannot connect', { ...fields, reason });
      return;
    }
    this.log.warn(`link ${this.cfg.name} cannot connect to ${this.remote}: ${reason}`, {
      ...fields,
      ...(r.suppressed > 0 ? { suppressed: r.suppressed } : {}),
      retrying: `with backoff up to ${this.role.config.timing.reconnectMaxMs} ms; reported again in ${DIAL_WARN_INTERVAL_MS / 1000} s if it goes on`,
    });
  }

  /** failed() with the socket's own error (and its code), if there was one, else `reason`. */
  private failedWith(reason: string): void {
    const e = this.dialError;
    this.failed(e ? errorMessage(e) : reason, typeof e?.code === 'string' ? e.code : undefined);
  }

  dial(): void {
    if (this.stopped) return;
    this.timer = undefined;
    this.isUp = false;
    this.refusal = undefined;
    this.dialError = undefined;
    this.report.attempt();
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
      const e = Object.assign(new Error(`no answer within ${t.handshakeTimeoutMs} ms (connect and handshake)`), { code: 'ETIMEDOUT' });
      this.dialError ??= e;
      if (this.current === undefined) socket.destroy();
      else this.current.destroy(e.message);
    }, t.handshakeTimeoutMs);
    deadline.unref();
    this.deadline = deadline;
    const onEarlyClose = (): void => {
      clearTimeout(deadline);
      if (this.current !== undefined) return;
      this.failedWith('the connection closed');
      this.retry();
    };
    socket.once('error', (e) => (this.dialError ??= e));
    socket.once('close', onEarlyClose);
    socket.once('connect', () => {
      socket.removeListener('close', onEarlyClose);
      this.report.phase = 'handshaking';
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
      link.path = `link ${this.cfg.path ?? this.cfg.id}`;
      paceLink(link, this.cfg.uploadKbit, t, this.log);
      this.current = link;
      this.cookieRounds = 0;
      const identity = this.role.identity;
      this.begunAt = this.role.epochChanges;
      if (identity === undefined) {
        link.sendControl(encodeHello(this.role.intro(this.cfg.id)));
        return;
      }
      this.initiator = new Initiator(identity);
      link.sendControl(this.initiator.initiation(this.role.intro(this.cfg.id), this.role.indexTaken));
    });
  }

  // Handshake phase: WELCOME (open), RESPONSE or COOKIE (keyed), or CLOSE.
  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    const initiator = this.initiator;
    if (type === FrameType.Close) {
      const { code, reason } = decodeClose(buf, start, end);
      // Reported by linkClosed, through the rate limit: a refusal repeats on every redial.
      this.refusal = `the server refused the link: ${reason} (code ${code})`;
      link.destroy(this.refusal);
      return;
    }
    if (this.role.identity === undefined) {
      if (type !== FrameType.Welcome) throw new ProtocolError(`expected WELCOME, got frame type ${type} (does the server require a key?)`);
      const w = decodeWelcome(buf, start, end);
      if (w.linkId !== this.cfg.id) throw new ProtocolError(`WELCOME for link ${w.linkId}, expected ${this.cfg.id}`);
      if (this.staleAnswer(link, w.epoch)) return;
      this.up(link);
      this.role.welcome(link, w.epoch);
      return;
    }
    if (initiator === undefined) throw new ProtocolError(`unexpected frame type ${type} during the handshake`);
    if (type === FrameType.Cookie) {
      if (++this.cookieRounds > MAX_COOKIE_ROUNDS || !initiator.cookie(buf, start, end)) {
        throw new ProtocolError('COOKIE that does not authenticate, or too many of them');
      }
      this.log.debug('server is under load: retrying with its cookie');
      this.begunAt = this.role.epochChanges;
      link.sendControl(initiator.initiation(this.role.intro(this.cfg.id), this.role.indexTaken));
      return;
    }
    if (type !== FrameType.Response) throw new ProtocolError(`expected RESPONSE, got frame type ${type}`);
    let est: Established;
    try {
      est = initiator.response(buf, start, end);
    } catch (e) {
      if (e instanceof ProtocolError) {
        this.refusal = `handshake failed: ${e.message}`;
        link.close(CloseCode.HandshakeRefused, 'client refused the handshake');
        return;
      }
      throw e;
    }
    if (est.linkId !== this.cfg.id) {
      est.keypair.retire();
      throw new ProtocolError(`RESPONSE for link ${est.linkId}, expected ${this.cfg.id}`);
    }
    this.initiator = undefined;
    if (this.staleAnswer(link, est.epoch)) {
      est.keypair.retire(); // its keys erased: never used
      return;
    }
    this.up(link);
    this.role.established(link, est);
  }

  /** An answer from another server session than the tunnel's, to a handshake begun before the tunnel took its (ClientRole.epochIsStale): the connection closes and is dialled again. */
  private staleAnswer(link: Link, epoch: Buffer): boolean {
    if (!this.role.epochIsStale(epoch, this.begunAt)) return false;
    this.refusal = 'answered by another server session than the tunnel\'s (a handshake begun before the tunnel moved to it, as after a server restart)';
    link.close(CloseCode.Shutdown, 'answered by another server session');
    return true;
  }

  private up(link: Link): void {
    clearTimeout(this.deadline);
    // The backoff starts over only once the link has stayed up (linkClosed): a link that
    // completes its handshake and drops at once must not be redialled at the minimum delay forever.
    this.isUp = true;
    this.upAtMs = performance.now();
    // Keyed, the server says nothing more until our first record confirms the handshake: a round trip.
    link.awaitReply(this.role.config.timing.handshakeTimeoutMs);
    const after = this.report.up(performance.now());
    // After failures this is the one line that says the link recovered.
    this.log.info(after ? 'link up, after failing' : 'link up', {
      local: link.local,
      remote: link.remote,
      ...(after ? { failures: after.failures, failing_for_ms: after.forMs } : {}),
    });
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
    const unanswered = this.initiator !== undefined;
    this.initiator?.abandon();
    this.initiator = undefined;
    if (this.isUp) {
      this.isUp = false;
      const t = this.role.config.timing;
      if (performance.now() - this.upAtMs >= Math.max(t.reconnectMaxMs, 2 * t.deadIntervalMs)) this.attempt = 0;
      this.report.down();
      if (!this.stopped) this.log.warn('link down', { reason });
    } else if (this.refusal !== undefined) {
      this.failed(this.refusal);
    } else if (unanswered && this.role.identity !== undefined) {
      // A keyed server answers nothing it cannot authenticate: silence is the only clue, so say what it usually means.
      this.failed(
        `the server closed the connection without answering the handshake: check server_public_key (and the psk), and that this client's public key is in the server's peers; or the server was too busy to answer in time, or refuses this address for a while after a flood of failed handshakes from it (another host behind the same address?)${this.cfg.downloadKbit === undefined ? '' : '; or it is older than download_mbit (2026-12-04) and cannot read it'} (${reason})`,
      );
    } else {
      this.failedWith(reason);
    }
    this.retry();
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    const t = this.role.config.timing;
    const base = Math.min(t.reconnectMaxMs, t.reconnectMinMs * 2 ** Math.min(this.attempt, 16));
    // Full jitter on the upper half: links of one client do not redial in lockstep.
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.report.waiting(delay, performance.now());
    this.timer = setTimeout(() => {
      const prepare = this.role.beforeRedial;
      if (prepare === undefined) this.dial();
      else void prepare(this.cfg.id).finally(() => this.dial());
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.current?.close(CloseCode.Shutdown, 'client shutting down');
    this.socket?.destroy();
  }
}
