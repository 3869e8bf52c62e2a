// One tunnel between a client process and the server: the sequence space of
// each direction, the receive-side eliminator and the links that carry it.
// Both roles use this class unchanged.
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import {
  CloseCode,
  DATA_HEADER_BYTES,
  decodeClose,
  encodeLinkDown,
  FrameDecoder,
  FrameType,
  readU64,
  writeDataHeader,
} from '../protocol/frame.js';
import type { TunnelAddress } from '../protocol/handshake.js';
import { ProtocolError } from '../errors.js';
import type { Opener, Sealer } from '../protocol/seal.js';
import type { PacketBatch } from '../tun/device.js';
import { Eliminator, Verdict } from './eliminator.js';
import { LinkStats, type Link, type LinkHandler } from './link.js';

export interface SessionOptions {
  readonly eliminationTtlMs: number;
  readonly eliminationWindowPackets: number;
  /** Largest plaintext of one SEALED record (must fit the peer's max frame size). */
  readonly sealRecordBytes: number;
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
  /** SEALED frames that failed authentication (the link that carried one is closed). */
  tampered = 0;
}

/** Returns false for a packet that must not be written to the TUN (anti-spoofing). */
export type SourceFilter = (packet: Buffer) => boolean;

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
  private sealer: Sealer | undefined;
  private opener: Opener | undefined;
  /** Inner frames of a SEALED frame are whole; this walks them with the usual checks. */
  private readonly inner: FrameDecoder;
  private readonly sealRecordBytes: number;
  private innerLink: Link | undefined;
  sourceFilter: SourceFilter | undefined;
  /** Called when a link leaves the session (for redial or bookkeeping). */
  onLinkClosed: (link: Link, reason: string) => void = () => {};

  constructor(
    /** 16 random bytes chosen by the client. */
    readonly sessionId: Buffer,
    /** 8 random bytes chosen by the server for this session. */
    public epoch: Buffer,
    public peerAddresses: readonly TunnelAddress[],
    opts: SessionOptions,
    private readonly sink: PacketSink,
    private readonly log: Logger,
  ) {
    this.eliminator = new Eliminator({ windowPackets: opts.eliminationWindowPackets, ttlMs: opts.eliminationTtlMs });
    this.sealRecordBytes = opts.sealRecordBytes;
    this.inner = new FrameDecoder(Number.MAX_SAFE_INTEGER, (type, buf, start, end) => {
      if (type === FrameType.Sealed) throw new ProtocolError('SEALED frame inside a SEALED frame');
      this.handle(this.innerLink as Link, type, buf, start, end);
    });
  }

  /** From now on every frame is sealed with `sealer` and must arrive sealed for `opener`. */
  setCrypto(sealer: Sealer | undefined, opener: Opener | undefined): void {
    this.sealer = sealer;
    this.opener = opener;
    for (const link of this.links.values()) link.sealControl = sealer ? (b) => sealer.seal(b) : undefined;
  }

  get encrypted(): boolean {
    return this.opener !== undefined;
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
    const sealer = this.sealer;
    link.sealControl = sealer ? (b) => sealer.seal(b) : undefined;
    link.handler = this;
    link.state = 'up';
    this.links.set(link.id, link);
  }

  /** The peer's sequence space started over (server restarted): forget the old one. */
  resetPeer(epoch: Buffer): void {
    this.epoch = epoch;
    this.eliminator.reset();
  }

  /**
   * Sends one TUN batch on every link that is up. The batch's headroom is
   * exactly a DATA header, so the headers are written in place and the whole
   * batch becomes one buffer with one copy, shared by all links.
   */
  sendBatch(batch: PacketBatch, nowMs: number): void {
    const { arena, lengths, count, headroom } = batch;
    this.stats.txPackets += count;
    const sealer = this.sealer;
    let off = 0;
    let recordStart = 0;
    let recordPackets = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i] as number;
      // A sealed record stays under the peer's frame limit: cut it at a frame boundary.
      if (sealer && recordPackets > 0 && off + headroom + len - recordStart > this.sealRecordBytes) {
        this.fanOut(sealer.seal(arena.subarray(recordStart, off)), recordPackets, nowMs);
        recordStart = off;
        recordPackets = 0;
      }
      writeDataHeader(arena, off + headroom - DATA_HEADER_BYTES, this.nextSeq++, len);
      off += headroom + len;
      recordPackets++;
    }
    const frames = arena.subarray(recordStart, off);
    // Sealing copies as it encrypts; unsealed, the arena is copied once (it is reused),
    // into memory that is not zero-filled first (Buffer.from would be, for large batches).
    let out: Buffer;
    if (sealer) out = sealer.seal(frames);
    else {
      out = Buffer.allocUnsafe(frames.length);
      frames.copy(out);
    }
    this.fanOut(out, recordPackets, nowMs);
  }

  /** Sends frames already encoded (the server's per-packet path when it serves several sessions). */
  sendEncoded(frames: Buffer, count: number, nowMs: number): void {
    this.stats.txPackets += count;
    this.fanOut(this.sealer ? this.sealer.seal(frames) : frames, count, nowMs);
  }

  /** Numbers a packet for sendEncoded. */
  takeSeq(): number {
    return this.nextSeq++;
  }

  private fanOut(frames: Buffer, count: number, nowMs: number): void {
    let sent = false;
    for (const link of this.links.values()) {
      if (link.state !== 'up') continue;
      link.sendData(frames, count, nowMs);
      sent = true;
    }
    if (!sent) this.stats.dropsNoLink += count;
  }

  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (link.state !== 'up') return;
    if (this.opener) {
      if (type !== FrameType.Sealed) throw new ProtocolError(`unsealed frame type ${type} on an encrypted session`);
      let plain: Buffer;
      try {
        plain = this.opener.open(buf, start, end);
      } catch (e) {
        this.stats.tampered++;
        throw e;
      }
      this.innerLink = link;
      try {
        this.inner.push(plain);
        if (this.inner.bufferedBytes !== 0) throw new ProtocolError('SEALED frame ends inside a frame');
      } catch (e) {
        // The decoder is shared by the session's links: never leave another link a half frame.
        this.inner.reset();
        throw e;
      }
      return;
    }
    if (type === FrameType.Sealed) throw new ProtocolError('SEALED frame on an unencrypted session');
    this.handle(link, type, buf, start, end);
  }

  private handle(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (link.state !== 'up') return;
    link.stats.rxFrames++;
    if (type === FrameType.Data) {
      const verdict = this.eliminator.check(readU64(buf, start));
      if (verdict === Verdict.Accept) {
        link.stats.firstCopies++;
        const packet = buf.subarray(start + 8, end);
        if (this.sourceFilter && !this.sourceFilter(packet)) this.stats.dropsSpoofed++;
        else this.rx.push(packet);
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
      const { code, reason } = decodeClose(buf, start, end);
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
    for (const link of this.links.values()) link.tick(nowMs);
  }

  close(code: CloseCode, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const link of [...this.links.values()]) link.close(code, reason);
    this.links.clear();
  }
}
