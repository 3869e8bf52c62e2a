// One tunnel between a client process and the server: the sequence space of
// each direction, the receive-side eliminator and the links that carry it.
// Both roles use this class unchanged.
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import {
  CloseCode,
  decodeClose,
  encodeLinkDown,
  forEachFrame,
  FrameType,
  MAX_SAFE_U64,
  readU64,
} from '../protocol/frame.js';
import type { TunnelAddress } from '../protocol/handshake.js';
import { ProtocolError } from '../errors.js';
import type { Keypair, KeyRing, RecordDrop } from '../secure/keypair.js';
import { Eliminator, Verdict } from './eliminator.js';
import { LinkStats, type Link, type LinkHandler } from './link.js';

export interface SessionOptions {
  readonly eliminationTtlMs: number;
  readonly eliminationWindowPackets: number;
  /** Largest frame accepted, inner frames of a record included. */
  readonly maxFrameBytes: number;
}

/** Where accepted packets go: the tunnel's TUN writer. */
export type PacketSink = (packets: Buffer[]) => void;

export class SessionStats {
  /** Packets read from the TUN and sent (one sequence number each). */
  txPackets = 0;
  /** Packets delivered to the TUN after elimination. */
  rxPackets = 0;
  /** Packets that found no link up to carry them. */
  dropsNoLink = 0;
  /** Server: packets from the client whose source is not the client's tunnel address. */
  dropsSpoofed = 0;
  /** Packets not sent because no keypair could seal them (a handshake is due). */
  dropsNoKey = 0;
  /** Server: IPv6 link-local packets from the client's kernel (router solicitations): not spoofing, not routed. */
  dropsLinkLocal = 0;
  /** SEALED frames that failed authentication (the link that carried one is closed). */
  tampered = 0;
  /** SEALED records dropped without closing their link, by reason (duplicate: another link's copy came first). */
  records: Record<RecordDrop, number> = { unknown_key: 0, duplicate: 0, too_old: 0, expired: 0 };
  /** CLOSE frames that named another link than the one that carried them (ignored). */
  misdirected = 0;
  /** Handshakes completed on this session's links (connections and rekeys). */
  handshakes = 0;
}

/** Says whether a packet may be written to the TUN, or why not (anti-spoofing). */
export type SourceFilter = (packet: Buffer) => 'ok' | 'spoofed' | 'link_local';

/** A handshake frame in clear on a keyed session's link (INITIATION to rekey, RESPONSE, COOKIE). */
export type ClearFrameHandler = (link: Link, type: FrameType, buf: Buffer, start: number, end: number) => void;

export class Session implements LinkHandler {
  readonly links = new Map<number, Link>();
  /** Counters per link id, kept across reconnections (and while the link is down). */
  readonly linkStats = new Map<number, { name: string; stats: LinkStats }>();
  readonly stats = new SessionStats();
  readonly eliminator: Eliminator;
  /** When the last link went away (server: for idle expiry). */
  lastLinkLossMs = performance.now();
  private nextSeq = 1;
  private rx: Buffer[] = [];
  private closed = false;
  private readonly maxFrameBytes: number;
  sourceFilter: SourceFilter | undefined;
  /** Called when a link leaves the session (for redial or bookkeeping). */
  onLinkClosed: (link: Link, reason: string) => void = () => {};
  /** Keyed: handshake frames in clear on this session's links go to the role. */
  onClearFrame: ClearFrameHandler | undefined;
  /** Keyed, server: a keypair was confirmed by its first authentic record. */
  onConfirmed: (keypair: Keypair) => void = () => {};
  /** Server, keyed: who this session belongs to (for status; the role keeps it current across reloads). */
  peer: { readonly name: string; readonly key: string; readonly allowedIps: readonly TunnelAddress[] } | undefined;
  /** When the last handshake of this session completed (performance.now() ms); NaN: none yet. */
  lastHandshakeMs = NaN;
  /** Server: links whose handshake is answered but not yet confirmed, with their keypair. */
  readonly pendingLinks = new Map<Link, Keypair>();

  constructor(
    /** 16 random bytes chosen by the client. */
    readonly sessionId: Buffer,
    /** 8 random bytes chosen by the server for this session. */
    public epoch: Buffer,
    public peerAddresses: readonly TunnelAddress[],
    opts: SessionOptions,
    private readonly sink: PacketSink,
    private readonly log: Logger,
    /** Keyed mode: the keypairs every frame after the handshake is sealed and opened with. */
    readonly keys: KeyRing | undefined,
  ) {
    this.eliminator = new Eliminator({ windowPackets: opts.eliminationWindowPackets, ttlMs: opts.eliminationTtlMs });
    this.maxFrameBytes = opts.maxFrameBytes;
  }

  get encrypted(): boolean {
    return this.keys !== undefined;
  }

  /** Seals control frames of a keyed session; undefined when no keypair can (the frame is not sent). */
  private sealControl(frame: Buffer): Buffer | undefined {
    return (this.keys as KeyRing).seal(frame, performance.now());
  }

  get idHex(): string {
    return this.sessionId.toString('hex');
  }

  get isClosed(): boolean {
    return this.closed;
  }

  upLinks(): Link[] {
    return [...this.links.values()].filter((l) => l.state === 'up');
  }

  /** Takes a link that finished its handshake; an older connection with the same id is replaced. */
  attach(link: Link): void {
    const old = this.links.get(link.id);
    if (old && old !== link) {
      this.log.info('link replaced by a new connection', { link: link.name, old: old.remote, new: link.remote });
      old.close(CloseCode.Replaced, 'replaced by a newer connection');
    }
    let slot = this.linkStats.get(link.id);
    if (!slot) {
      slot = { name: link.name, stats: new LinkStats() };
      this.linkStats.set(link.id, slot);
    }
    slot.stats.connects++;
    link.stats = slot.stats;
    this.pendingLinks.delete(link);
    link.sealControl = this.keys ? (b) => this.sealControl(b) : undefined;
    link.handler = this;
    link.state = 'up';
    this.links.set(link.id, link);
  }

  /** The peer's sequence space started over (server restarted): forget the old one. */
  resetPeer(epoch: Buffer): void {
    this.epoch = epoch;
    this.eliminator.reset();
    // The old server session's keypairs are gone with it.
    this.keys?.clear();
  }

  /** Server: a link whose handshake was answered; it joins when its keypair is confirmed. */
  addPending(link: Link, keypair: Keypair): void {
    this.pendingLinks.set(link, keypair);
    link.handler = this;
  }

  /**
   * Sends `count` whole DATA frames on every link that is up. `borrowed`: the
   * frames are a view of the TUN's reused batch, so they are copied (or sealed,
   * which copies) before they are queued. The same buffer goes to every link.
   */
  sendFrames(frames: Buffer, count: number, nowMs: number, borrowed: boolean, urgent = false): void {
    this.stats.txPackets += count;
    if (this.keys) {
      this.fanOutSealed(this.keys, frames, count, nowMs, urgent);
      return;
    }
    let out = frames;
    if (borrowed) {
      // Not zero-filled first (Buffer.from would be, for large batches): it is overwritten at once.
      out = Buffer.allocUnsafe(frames.length);
      frames.copy(out);
    }
    this.fanOut(out, count, nowMs, urgent);
  }

  /** Numbers a packet (its DATA header is written by the caller). */
  takeSeq(): number {
    return this.nextSeq++;
  }

  private fanOutSealed(keys: KeyRing, frames: Buffer, count: number, nowMs: number, urgent: boolean): void {
    if (this.upLinkCount() === 0) {
      this.stats.dropsNoLink += count;
      return;
    }
    const record = keys.seal(frames, nowMs);
    if (record === undefined) this.stats.dropsNoKey += count;
    else this.fanOut(record, count, nowMs, urgent);
  }

  private upLinkCount(): number {
    let n = 0;
    for (const link of this.links.values()) if (link.state === 'up') n++;
    return n;
  }

  private fanOut(frames: Buffer, count: number, nowMs: number, urgent: boolean): void {
    let sent = false;
    for (const link of this.links.values()) {
      if (link.state !== 'up') continue;
      link.sendData(frames, count, nowMs, urgent);
      sent = true;
    }
    if (!sent) this.stats.dropsNoLink += count;
  }

  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (link.state === 'closed') return;
    const keys = this.keys;
    if (keys === undefined) {
      if (link.state !== 'up') return;
      if (type === FrameType.Sealed) throw new ProtocolError('SEALED frame on an unencrypted session');
      this.handle(link, type, buf, start, end);
      return;
    }
    if (type !== FrameType.Sealed) {
      if ((type === FrameType.Initiation || type === FrameType.Response || type === FrameType.Cookie) && this.onClearFrame) {
        this.onClearFrame(link, type, buf, start, end);
        return;
      }
      throw new ProtocolError(`frame type ${type} in clear on an encrypted session`);
    }
    const now = performance.now();
    let opened;
    try {
      opened = keys.open(buf, start, end, now);
    } catch (e) {
      this.stats.tampered++;
      throw e;
    }
    if (typeof opened === 'string') {
      this.stats.records[opened]++;
      if (opened === 'duplicate' && link.state === 'up') link.stats.duplicateRecords++;
      return;
    }
    if (opened.confirmedNow) this.onConfirmed(opened.keypair);
    // A link still waiting for its own handshake to be confirmed carries nothing else.
    if (link.state !== 'up') return;
    forEachFrame(opened.plain, this.maxFrameBytes, (t, b, s, e) => {
      if (t === FrameType.Sealed || t === FrameType.Initiation || t === FrameType.Response || t === FrameType.Cookie) {
        throw new ProtocolError(`frame type ${t} inside a sealed record`);
      }
      this.handle(link, t, b, s, e);
    });
  }

  private handle(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (link.state !== 'up') return;
    link.stats.rxFrames++;
    if (type === FrameType.Data) {
      const seq = readU64(buf, start);
      if (seq > MAX_SAFE_U64 || seq === 0) throw new ProtocolError(`DATA sequence number ${seq} out of range`);
      const verdict = this.eliminator.check(seq);
      if (verdict === Verdict.Accept) {
        link.stats.firstCopies++;
        const packet = buf.subarray(start + 8, end);
        const ok = this.sourceFilter ? this.sourceFilter(packet) : 'ok';
        if (ok === 'ok') this.rx.push(packet);
        else if (ok === 'spoofed') this.stats.dropsSpoofed++;
        else this.stats.dropsLinkLocal++;
      } else if (verdict === Verdict.Duplicate) {
        link.stats.duplicates++;
      } else {
        link.stats.stale++;
      }
      return;
    }
    if (link.handleKeepalive(type, buf, start)) return;
    if (type === FrameType.LinkDown) {
      const id = buf.readUInt16BE(start);
      const target = this.links.get(id);
      if (target && target !== link) {
        this.log.info('peer reports link down', { link: target.name, via: link.name });
        target.close(CloseCode.Shutdown, 'peer reported the link dead');
      }
      return;
    }
    if (type === FrameType.Close) {
      const { code, linkId, reason } = decodeClose(buf, start, end);
      if (linkId !== link.id) {
        // A CLOSE of another link, moved here (by someone on the path): not ours to obey.
        this.stats.misdirected++;
        return;
      }
      this.log.info('peer closed link', { link: link.name, code, reason });
      link.destroy(`peer closed: ${reason}`);
      return;
    }
    throw new ProtocolError(`unexpected frame type ${type} on an established link`);
  }

  onChunkEnd(_link: Link): void {
    if (this.rx.length === 0) return;
    const packets = this.rx;
    this.rx = [];
    this.stats.rxPackets += packets.length;
    this.sink(packets);
  }

  onClose(link: Link, reason: string): void {
    this.pendingLinks.delete(link);
    if (this.links.get(link.id) === link) {
      link.stats.lastDownReason = reason;
      this.links.delete(link.id);
      // The peer may still think this link is fine (one direction dead): say so on the others.
      if (link.declaredDead && !this.closed) {
        for (const other of this.links.values()) if (other.state === 'up') other.sendControl(encodeLinkDown(link.id));
      }
      if (this.links.size === 0) this.lastLinkLossMs = performance.now();
    }
    this.onLinkClosed(link, reason);
  }

  tick(nowMs: number): void {
    this.eliminator.tick(nowMs);
    this.keys?.expire(nowMs);
    for (const link of this.links.values()) link.tick(nowMs);
  }

  close(code: CloseCode, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const link of [...this.links.values(), ...this.pendingLinks.keys()]) link.close(code, reason);
    this.links.clear();
    this.pendingLinks.clear();
    this.keys?.clear();
  }
}
