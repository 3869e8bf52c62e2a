// One TCP connection between client and server, after or during its
// handshake. Framing in, a bounded send queue out; what frames mean is the
// handler's business (the role during the handshake, then the session).
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { errorMessage, ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  CloseCode,
  encodeClose,
  encodeToken,
  FrameDecoder,
  FrameType,
  readU64,
} from '../protocol/frame.js';

export type LinkState = 'handshaking' | 'up' | 'closed';

/** Why a packet copy was not sent on, or not taken from, a link. */
export type LinkDropReason = 'queue_full' | 'queue_age';

export interface LinkHandler {
  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void;
  /** After the frames of one socket read: the time to flush what they produced. */
  onChunkEnd(link: Link): void;
  onClose(link: Link, reason: string): void;
}

export interface LinkOptions {
  readonly id: number;
  readonly name: string;
  readonly maxFrameBytes: number;
  readonly queueMaxBytes: number;
  readonly queueMaxAgeMs: number;
  readonly keepaliveIntervalMs: number;
  readonly deadIntervalMs: number;
}

export class LinkStats {
  /** DATA frames and bytes handed to the socket. */
  txPackets = 0;
  txBytes = 0;
  rxFrames = 0;
  rxBytes = 0;
  /** DATA frames whose copy on this link was the first to arrive. */
  firstCopies = 0;
  /** Copies eliminated because another link delivered the packet first. */
  duplicates = 0;
  /** Copies that came after the elimination window had moved past them. */
  stale = 0;
  /** Keyed: sealed records dropped because their copy on another link came first (or a replay). */
  duplicateRecords = 0;
  drops: Record<LinkDropReason, number> = { queue_full: 0, queue_age: 0 };
  /** Packets of sparse flows (a ping, DNS, a call) that were sent ahead of bulk data queued on this link. */
  urgentPassed = 0;
  /** How long data waited in our send queue before the socket took it: smoothed (1/8) and the most, ms. */
  queueDelayMs = 0;
  queueDelayMaxMs = 0;
  /** Connections that completed the handshake under this link id. */
  connects = 0;
  lastDownReason = '';
}

interface Queued {
  buf: Buffer;
  t: number;
  packets: number;
}

const CLOSE_GRACE_MS = 500;
/** Urgent data waiting ahead of the bulk queue, at most (beyond it, urgent data waits in order). */
export const URGENT_QUEUE_MAX_BYTES = 64 * 1024;
/**
 * An urgent record may pass at most this many queued records: half the
 * peer's replay window (secure/replay.ts, 8192), so the records it passed
 * still arrive inside the window.
 */
export const URGENT_MAX_PASSED_RECORDS = 4096;

export class Link {
  state: LinkState = 'handshaking';
  /** Counters of this link id; the session hands the same object to every reconnection. */
  stats = new LinkStats();
  /** Smoothed round-trip time from PING/PONG, ms; NaN until measured. */
  srttMs = NaN;
  lastRxMs = performance.now();
  /** Set by an encrypting session: control frames leave sealed (undefined: no keypair, not sent). */
  sealControl: ((frame: Buffer) => Buffer | undefined) | undefined;
  /** Closed because it went silent (rather than by a peer, an error or shutdown). */
  declaredDead = false;
  private lastPingMs = 0;
  /** A dead verdict waiting for the sockets to be read first (tick). */
  private deadCheck: NodeJS.Immediate | undefined;
  private readonly decoder: FrameDecoder;
  private queue: Queued[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  /** Urgent frames, sent before the queue above when the socket drains. */
  private urgent: Queued[] = [];
  private urgentBytes = 0;
  private writable = true;
  private linkId: number;
  private linkName: string;

  constructor(
    readonly socket: Socket,
    readonly opts: LinkOptions,
    public handler: LinkHandler,
    private readonly log: Logger,
  ) {
    this.linkId = opts.id;
    this.linkName = opts.name;
    this.decoder = new FrameDecoder(opts.maxFrameBytes, (type, buf, start, end) =>
      this.handler.onFrame(this, type, buf, start, end),
    );
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', (e) => this.log.debug('socket error', { link: opts.name, error: errorMessage(e) }));
    socket.on('close', () => this.finish('connection closed'));
    socket.on('end', () => this.finish('peer closed the connection'));
  }

  /** The link id of the protocol; on the server it is known once HELLO arrives. */
  get id(): number {
    return this.linkId;
  }

  get name(): string {
    return this.linkName;
  }

  /** Set by the server's handshake, from HELLO. */
  identify(id: number, name: string): void {
    this.linkId = id;
    this.linkName = name;
  }

  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  get local(): string {
    return `${this.socket.localAddress}:${this.socket.localPort}`;
  }

  /** Until a link is authenticated it only takes handshake-sized frames. */
  setMaxFrameBytes(n: number): void {
    this.decoder.setMaxFrameBytes(n);
  }

  /** Bytes waiting in our queue, not yet given to the socket. */
  get queueBytes(): number {
    return this.queuedBytes + this.urgentBytes;
  }

  /**
   * A batch of DATA frames, `packets` of them, shared by all links: never
   * modified. `urgent` (frames of sparse flows, core/flows.ts): it waits
   * ahead of queued bulk data, within the bounds above.
   */
  sendData(buf: Buffer, packets: number, nowMs: number, urgent = false): void {
    if (this.state !== 'up') return;
    if (this.writable && this.queuedBytes === 0 && this.urgentBytes === 0) {
      this.write(buf, packets);
    } else if (
      urgent &&
      this.urgentBytes + buf.length <= URGENT_QUEUE_MAX_BYTES &&
      this.queue.length - this.queueHead < URGENT_MAX_PASSED_RECORDS
    ) {
      this.urgent.push({ buf, t: nowMs, packets });
      this.urgentBytes += buf.length;
      if (this.queuedBytes > 0) this.stats.urgentPassed += packets;
    } else if (this.queuedBytes + buf.length > this.opts.queueMaxBytes) {
      this.stats.drops.queue_full += packets;
    } else {
      this.queue.push({ buf, t: nowMs, packets });
      this.queuedBytes += buf.length;
    }
  }

  /** Control frames are never dropped: they are small and carry the link's health. */
  sendControl(frame: Buffer): void {
    if (this.state === 'closed') return;
    const buf = this.sealControl ? this.sealControl(frame) : frame;
    if (buf !== undefined) this.sendClear(buf);
  }

  /** A handshake frame in clear on an up link (a rekey), in order with what is queued. */
  sendClear(frame: Buffer): void {
    if (this.state === 'closed') return;
    if (this.writable && this.queuedBytes === 0 && this.urgentBytes === 0) this.write(frame, 0);
    else {
      this.queue.push({ buf: frame, t: Infinity, packets: 0 });
      this.queuedBytes += frame.length;
    }
  }

  /** Keepalive and liveness; the session calls it from its timer. */
  tick(nowMs: number): void {
    if (this.state !== 'up') return;
    if (nowMs - this.lastRxMs > this.opts.deadIntervalMs) {
      // Timers run before the loop polls its sockets: on a busy process what the peer sent
      // may be waiting unread. Look again after this turn's poll phase has read it.
      if (this.deadCheck) return;
      this.deadCheck = setImmediate(() => {
        this.deadCheck = undefined;
        const silent = performance.now() - this.lastRxMs;
        if (this.state !== 'up' || silent <= this.opts.deadIntervalMs) return;
        this.declaredDead = true;
        this.close(CloseCode.Shutdown, `dead: nothing heard for ${Math.round(silent)} ms`);
      });
      return;
    }
    if (nowMs - this.lastPingMs >= this.opts.keepaliveIntervalMs) {
      this.lastPingMs = nowMs;
      this.sendControl(encodeToken(FrameType.Ping, Math.round(nowMs * 1000)));
    }
  }

  /** Answers PING and measures PONG; any other frame type is not ours. */
  handleKeepalive(type: FrameType, buf: Buffer, start: number): boolean {
    if (type === FrameType.Ping) {
      this.sendControl(encodeToken(FrameType.Pong, readU64(buf, start)));
      return true;
    }
    if (type === FrameType.Pong) {
      const sample = performance.now() - readU64(buf, start) / 1000;
      if (sample >= 0 && sample < 600_000) {
        this.srttMs = Number.isNaN(this.srttMs) ? sample : this.srttMs * 0.875 + sample * 0.125;
      }
      return true;
    }
    return false;
  }

  /** Says why in a CLOSE frame (if the socket still takes one), then closes. Idempotent. */
  close(code: CloseCode, reason: string): void {
    if (this.state === 'closed') return;
    this.dropQueue();
    if (!this.socket.destroyed && this.socket.writable) {
      const frame = encodeClose(code, reason, this.linkId);
      const out = this.sealControl ? this.sealControl(frame) : frame;
      if (out === undefined) this.socket.end();
      else this.socket.end(out);
      setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
    } else {
      this.socket.destroy();
    }
    this.finish(reason);
  }

  destroy(reason: string): void {
    this.socket.destroy();
    this.finish(reason);
  }

  private finish(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.dropQueue();
    this.handler.onClose(this, reason);
  }

  private dropQueue(): void {
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    this.urgent = [];
    this.urgentBytes = 0;
  }

  private write(buf: Buffer, packets: number): void {
    this.stats.txPackets += packets;
    this.stats.txBytes += buf.length;
    if (!this.socket.write(buf)) this.writable = false;
  }

  private onDrain(): void {
    this.writable = true;
    const now = performance.now();
    if (this.urgentBytes > 0) {
      let i = 0;
      const urgent = this.urgent;
      while (this.writable && i < urgent.length) {
        const item = urgent[i++] as Queued;
        this.urgentBytes -= item.buf.length;
        if (now - item.t > this.opts.queueMaxAgeMs) this.stats.drops.queue_age += item.packets;
        else {
          this.queued(now - item.t);
          this.write(item.buf, item.packets);
        }
      }
      this.urgent = i === urgent.length ? [] : urgent.slice(i);
    }
    while (this.writable && this.queueHead < this.queue.length) {
      const item = this.queue[this.queueHead++] as Queued;
      this.queuedBytes -= item.buf.length;
      if (now - item.t > this.opts.queueMaxAgeMs) {
        // The other links carried these long ago; sending them now only delays fresh data.
        this.stats.drops.queue_age += item.packets;
        continue;
      }
      if (item.packets > 0) this.queued(now - item.t);
      this.write(item.buf, item.packets);
    }
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 1024) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  /** Data that waited `ms` in our queue is leaving. */
  private queued(ms: number): void {
    const st = this.stats;
    st.queueDelayMs += (ms - st.queueDelayMs) / 8;
    if (ms > st.queueDelayMaxMs) st.queueDelayMaxMs = ms;
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastRxMs = performance.now();
    this.stats.rxBytes += chunk.length;
    try {
      this.decoder.push(chunk);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      // Before a handshake this is a stranger's garbage: a flood of it must not flood the log.
      this.log[this.state === 'up' ? 'warn' : 'debug']('closing link: protocol error', { link: this.name, remote: this.remote, reason: e.message });
      this.close(CloseCode.ProtocolError, e.message);
      return;
    }
    if ((this.state as LinkState) !== 'closed') this.handler.onChunkEnd(this);
  }
}
