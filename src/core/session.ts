// One tunnel between a client process and the server: the sequence space of
// each direction, the receive-side eliminator and the links that carry it.
// Both roles use this class unchanged.
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import {
  CloseCode,
  DATA_IN_ORDER,
  decodeClose,
  encodeLinkDown,
  forEachFrame,
  FrameType,
  MAX_SAFE_U64,
  readU64,
} from '../protocol/frame.js';
import type { SchedulingMode, TunnelAddress } from '../protocol/handshake.js';
import { ProtocolError, TamperedError } from '../errors.js';
import { RecordsSeen, type Keypair, type KeyRing, type RecordDrop } from '../secure/keypair.js';
import { Verdict, type EliminationTable } from './eliminator.js';
import { createEliminator, encodeSources, type FastReceive } from './fast-path.js';
import { sourceIn } from './ip.js';
import { ADMITTED_SLACK_BYTES, LinkStats, OutFrames, RETAIN_MAX_BYTES, RetainBudget, SESSION_RETAIN_MAX_BYTES, type Link, type LinkHandler, type Pin, type Reclaimed } from './link.js';
import { RecordArenas } from './record-arenas.js';
import { REORDER_MAX_PACKETS, ReorderBuffer } from './reorder.js';
import { TokenBucket } from '../token-bucket.js';

/** Adaptive mode: packets this small (IP bytes) always go on every link (acks, DNS, pings, voice). */
export const ADAPTIVE_SMALL_BYTES = 256;
/** Adaptive mode stays degraded (duplicating everything) this long after the last sign. */
export const DEGRADED_HOLD_MS = 1000;

export interface SessionOptions {
  readonly eliminationTtlMs: number;
  readonly eliminationWindowPackets: number;
  /** Largest frame accepted, inner frames of a record included. */
  readonly maxFrameBytes: number;
  /** What the tunnel's sessions together keep until acknowledged (the session's budget counts into it). */
  readonly retainBudget?: RetainBudget;
  /**
   * The native receive path for this session (core/fast-path.ts), made when a
   * link first can use it; undefined where the tunnel has none (a fake TUN).
   */
  readonly nativePath?: NativePathFactory;
}

/** Makes a session's native receive path: its table, its sources (undefined: any), where a packet the TUN refused goes. */
export type NativePathFactory = (eliminator: EliminationTable, sources: readonly TunnelAddress[] | undefined, onTunFailed: (packet: Buffer) => void) => FastReceive | undefined;

/** Where accepted packets go: the tunnel's TUN writer. */
export type PacketSink = (packets: Buffer[]) => void;

/** Given-back data waiting to be sent again, with the link that gave it back, and since when. */
interface Deferred {
  r: Reclaimed;
  from: Link;
  atMs: number;
}

/**
 * Given-back data waits at most this long for a link (or the reseal bound): a short outage
 * of every link loses nothing, but after a long one the data is stale (the flows it carried
 * have sent theirs again, a call or a DNS answer is long useless) and not to be replayed into
 * the far network minutes later (review); past it, dropped and counted as no_link.
 */
export const DEFERRED_MAX_AGE_MS = 10_000;

/**
 * Keyed sessions seal data a link gave back anew: a burst of this many bytes
 * (all a session may hold unacknowledged, so one give-back always fits), then
 * RESEND_BYTES_PER_MS. A peer that keeps its links unacknowledged and replaces
 * them (a handshake each) made the server seal its 16 MiB again each time, 57-163
 * ms of event loop per replacement (review); past the bound what is given back
 * waits (counted in the session's budget) and is sealed as the bound allows.
 */
export const RESEND_BURST_BYTES = SESSION_RETAIN_MAX_BYTES;
export const RESEND_BYTES_PER_MS = (8 * 1024 * 1024) / 1000;

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
  /**
   * SEALED records dropped without closing their link, by reason (duplicate: another link's copy
   * came first; pending_link: authentic, but on a link still waiting for its own handshake's confirmation).
   */
  records: Record<RecordDrop | 'pending_link', number> = { unknown_key: 0, duplicate: 0, too_old: 0, expired: 0, pending_link: 0 };
  /** CLOSE frames that named another link than the one that carried them (ignored). */
  misdirected = 0;
  /** Client: RESPONSEs in clear on an up link that answer no rekey under way (late, or replayed by someone on the path): ignored. */
  lateResponses = 0;
  /** Handshakes completed on this session's links (connections and rekeys). */
  handshakes = 0;
  /** Aggregate/adaptive: packets sent on one link only, packets sent on every link, and the bytes of the extra copies. */
  stripedPackets = 0;
  duplicatedPackets = 0;
  duplicatedBytes = 0;
  /** Striped packets sent again on another link because theirs stalled or closed. */
  resentPackets = 0;
  /** Striped packets given back by a link that waited to be sent again: for a link to be up, or, keyed, to be sealed (RESEND_BURST_BYTES, RESEND_BYTES_PER_MS). */
  resendDeferred = 0;
  /** TCP offload packets cut into pieces for a slowly paced link (tun/gso-split.ts); each piece is sent as a packet of its own. */
  splitPackets = 0;
  /** Adaptive: times the session started duplicating everything (a link stalled, slowed or went down), and the last reason. */
  degradedEntered = 0;
  degradedReason = '';
}

/** Says whether a packet may be written to the TUN, or why not (anti-spoofing). */
export type SourceFilter = (packet: Buffer) => 'ok' | 'spoofed' | 'link_local';

/** A handshake frame in clear on a keyed session's link (INITIATION to rekey, RESPONSE, COOKIE). */
export type ClearFrameHandler = (link: Link, type: FrameType, buf: Buffer, start: number, end: number) => void;

/**
 * On a paced link an offload packet is cut into pieces that take at most this
 * long at the link's rate (at least one segment each): what follows a piece on
 * a connection (a ping) waits no longer than that.
 */
export const SPLIT_MS = 2;
/** The most TCP payload an offload packet carries: links paced fast enough for it cut nothing. */
const MAX_OFFLOAD_PAYLOAD = 65_535;

export class Session implements LinkHandler {
  readonly links = new Map<number, Link>();
  /** The values of `links`, for the per-packet loops: iterating an array allocates nothing. */
  private linkList: Link[] = [];
  /** Counters per link id, kept across reconnections (and while the link is down). */
  readonly linkStats = new Map<number, { name: string; stats: LinkStats }>();
  readonly stats = new SessionStats();
  readonly eliminator: EliminationTable;
  /** Striped data its links keep until acknowledged, together (aggregate, adaptive). */
  readonly retainBudget: RetainBudget;
  /** When the last link went away (server: for idle expiry). */
  lastLinkLossMs = performance.now();
  /** [the next sequence number]: shared with the native send path, which numbers the packets it sends. */
  readonly seqBox = new Float64Array([1]);
  /** Bytes of given-back records that may be sealed again. */
  private readonly reseal = new TokenBucket(RESEND_BURST_BYTES, RESEND_BYTES_PER_MS);
  /** Given-back data waiting for a link or for `reseal`, oldest first, with the link that gave it back. */
  private deferred: Deferred[] = [];
  /** Where outgoing records are sealed (keyed sessions, duplicate mode). */
  readonly recordArenas = new RecordArenas();
  private rx: Buffer[] = [];
  /** How packets are spread over the links; the client's choice, announced in every handshake. */
  private schedMode: SchedulingMode = 'duplicate';
  /** Aggregate and adaptive: releases in-order packets in sequence (undefined in duplicate mode). */
  reorder: ReorderBuffer | undefined;
  private reorderTimer: NodeJS.Timeout | undefined;
  /** Adaptive: duplicating everything until then (performance.now() ms). */
  private degradedUntil = 0;
  private degradedAt = NaN;
  private degradedNow = false;
  /** Some up links share a path (connections_per_link > 1): bulk copies go on one connection per path. */
  private sharedPaths = false;
  /**
   * TCP offload packets longer than this (TCP payload bytes) are cut before
   * they are framed (tun/gso-split.ts): SPLIT_MS at the slowest paced link's
   * rate. Undefined: no link is paced that slowly.
   */
  splitBytes: number | undefined;
  private closed = false;
  private readonly maxFrameBytes: number;
  /** Server: where a peer's packets may come from (allowSources); undefined: anywhere. */
  private filter: SourceFilter | undefined;
  private sources: readonly TunnelAddress[] | undefined;
  /** The native receive path, once a link could use it (armFast). */
  private fast: FastReceive | undefined;
  private nativePath: NativePathFactory | undefined;
  /** Its links, their paths or its mode changed, or it closed (the tunnel re-arms its native send path). */
  onPathsChanged: () => void = () => {};
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
    // At least the reorder ring: in aggregate and adaptive modes a striped packet may arrive that far
    // behind the highest number seen and must still be judged a first copy, not stale.
    // The addon's table where the native receive path may share it (open mode).
    this.eliminator = createEliminator(
      { windowPackets: Math.max(opts.eliminationWindowPackets, REORDER_MAX_PACKETS), ttlMs: opts.eliminationTtlMs },
      keys === undefined && opts.nativePath !== undefined,
    );
    this.nativePath = opts.nativePath;
    this.maxFrameBytes = opts.maxFrameBytes;
    this.retainBudget = new RetainBudget(SESSION_RETAIN_MAX_BYTES, opts.retainBudget);
  }

  get encrypted(): boolean {
    return this.keys !== undefined;
  }

  get mode(): SchedulingMode {
    return this.schedMode;
  }

  /** Set before the first link attaches (the client's config, or the server from the handshake). */
  set mode(m: SchedulingMode) {
    this.schedMode = m;
    this.reorder = m === 'duplicate' ? undefined : new ReorderBuffer();
    for (const link of this.links.values()) this.armFast(link);
    this.onPathsChanged();
  }

  /** Server: a packet from the peer must come from one of `prefixes` (undefined: from anywhere); `ipOffset`: bytes before its IP header. */
  allowSources(prefixes: readonly TunnelAddress[] | undefined, ipOffset: number): void {
    this.filter = prefixes === undefined ? undefined : sourceIn(prefixes, ipOffset);
    this.sources = prefixes;
    this.fast?.native.setSources(prefixes === undefined ? null : encodeSources(prefixes));
  }

  /**
   * A link that is up reads its whole DATA frames through the native path
   * while the session can use it (open mode, duplicate scheduling): the
   * addon's table and checks are this session's, and the reorder buffer,
   * records and keys it lacks are not needed then. Else, or undefined, through
   * handle() alone.
   */
  private armFast(link: Link): void {
    if (!link.readsNatively) return;
    const usable = !this.closed && this.keys === undefined && this.schedMode === 'duplicate' && link.state === 'up';
    if (usable && this.fast === undefined && this.nativePath !== undefined) {
      this.fast = this.nativePath(this.eliminator, this.sources, (packet) => {
        // The TUN did not take a packet the table took: the writer queues it or counts it refused.
        this.rx.push(packet);
        this.flushRx();
      });
      // One try: a tunnel without it does not have it later either.
      this.nativePath = undefined;
    }
    link.armFast(usable ? this.fast?.native : undefined);
  }

  /** What the native path counted, into the session's and its links' stats (before they are read). */
  foldFast(): void {
    if (this.fast === undefined) return;
    this.stats.rxPackets += this.fast.fold();
    for (const link of this.links.values()) link.foldFast();
  }

  /**
   * Whether a packet read now goes on one link only (with the in-order flag)
   * or on every link: `urgent` (a sparse flow), `ipBytes` its size.
   */
  stripes(urgent: boolean, ipBytes: number, nowMs: number): boolean {
    const m = this.schedMode;
    if (m === 'duplicate') return false;
    if (m === 'aggregate') return true;
    const degraded = this.degraded(nowMs); // evaluated for every packet, so the state (and its counter) follows the links
    return !urgent && ipBytes > ADAPTIVE_SMALL_BYTES && !degraded;
  }

  /** Adaptive: a link stalled, its RTT is twice its usual, or a link is down; then for DEGRADED_HOLD_MS more. */
  degraded(nowMs: number): boolean {
    if (nowMs === this.degradedAt) return this.degradedNow;
    this.degradedAt = nowMs;
    let sign = this.links.size < this.linkStats.size ? 'a link is down' : '';
    if (sign === '') {
      for (const l of this.links.values()) {
        sign = l.state !== 'up' ? `${l.name} down` : l.stalled(nowMs) ? `${l.name} stalled` : l.rttSpike() ? `${l.name} RTT spike` : '';
        if (sign !== '') break;
      }
    }
    if (sign !== '') {
      if (nowMs >= this.degradedUntil) {
        this.stats.degradedEntered++;
        this.stats.degradedReason = sign;
      }
      this.degradedUntil = nowMs + DEGRADED_HOLD_MS;
    }
    this.degradedNow = nowMs < this.degradedUntil;
    // Degraded, nothing is striped, so stripe() does not look for stalls: a stalled link's data
    // would wait for the session's timer (up to 100 ms more) to go on the others (review).
    // Once per read time, as the state itself.
    if (this.degradedNow) this.handleStalls(nowMs);
    return this.degradedNow;
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
    const prior = this.links.get(link.id);
    const old = prior !== link ? prior : undefined;
    let slot = this.linkStats.get(link.id);
    if (!slot) {
      slot = { name: link.name, stats: new LinkStats() };
      this.linkStats.set(link.id, slot);
    }
    slot.stats.connects++;
    link.stats = slot.stats;
    // Until its first PONG: what the link id's last connection measured (kept in its stats).
    link.seedPathRtt(slot.stats.pathRttMs);
    link.acking = this.schedMode !== 'duplicate';
    link.retainBudget = this.retainBudget;
    this.pendingLinks.delete(link);
    link.sealControl = this.keys ? (b) => this.sealControl(b) : undefined;
    link.recordsSeen = this.keys !== undefined ? new RecordsSeen() : undefined;
    link.handler = this;
    link.state = 'up';
    link.upSinceMs = performance.now();
    this.links.set(link.id, link);
    this.linkList = [...this.links.values()];
    this.updatePaths();
    this.armFast(link);
    if (old !== undefined) {
      // Closed once the new connection is up (onClose no longer finds it in `links`): what it held
      // striped and unacknowledged goes on the links up now, the new connection among them —
      // with no other link up it would be dropped.
      this.log.info('link replaced by a new connection', { link: link.name, old: old.remote, new: link.remote });
      old.close(CloseCode.Replaced, 'replaced by a newer connection');
      if (this.reorder !== undefined && !this.closed) this.resend(old, performance.now());
    }
  }

  /** The peer's sequence space started over (server restarted): forget the old one. */
  resetPeer(epoch: Buffer): void {
    this.epoch = epoch;
    this.eliminator.reset();
    this.reorder?.reset(this.rx);
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
   * which copies) before they are queued, or the batch is pinned (`pin`) while
   * a socket's writer holds the rest of a partial send. The same buffer goes to every link.
   */
  sendFrames(frames: Buffer, count: number, nowMs: number, borrowed: boolean, urgent = false, striped = false, pin?: Pin, onLink?: Link): void {
    this.stats.txPackets += count;
    if (this.keys) {
      this.fanOutSealed(this.keys, frames, count, nowMs, urgent, striped, onLink);
      return;
    }
    // Frames the TUN batch cannot keep (every read arena held) move to the record arenas, shared.
    const out = new OutFrames(frames, borrowed, borrowed ? pin : undefined, borrowed ? this.recordArenas : undefined);
    // Striped frames are kept until acknowledged: a copy of their own.
    if (striped) this.stripe(out.own(), count, nowMs, urgent, undefined, undefined, false, onLink);
    else this.fanOut(out, count, nowMs, urgent);
  }

  /** Numbers a packet (its DATA header is written by the caller). */
  takeSeq(): number {
    const seq = this.seqBox[0] as number;
    this.seqBox[0] = seq + 1;
    return seq;
  }

  private fanOutSealed(keys: KeyRing, frames: Buffer, count: number, nowMs: number, urgent: boolean, striped: boolean, onLink: Link | undefined): void {
    if (this.upLinkCount() === 0) {
      this.stats.dropsNoLink += count;
      return;
    }
    // Striped records are kept until acknowledged: a buffer of their own; the others are sealed into an arena.
    const record = keys.seal(frames, nowMs, striped ? undefined : this.recordArenas.alloc);
    if (record === undefined) this.stats.dropsNoKey += count;
    // The plaintext of a striped record is kept too (a copy: `frames` may be the TUN batch's):
    // sent again after a stall it is sealed anew, since its counter may be out of the peer's window by then.
    else if (striped) this.stripe(record, count, nowMs, urgent, undefined, Buffer.from(frames), false, onLink);
    else {
      const pin = this.recordArenas.pinOf(record);
      this.fanOut(new OutFrames(record, pin !== undefined, pin), count, nowMs, urgent);
    }
  }

  /**
   * Aggregate and adaptive: the link for `bytes` of fresh striped data read
   * now (stripe's choice), if it can take them: it can keep more until
   * acknowledged, and has room (Link.hasRoom). Otherwise undefined, the
   * packet counted dropped (queue_full on that link; dropsNoLink). The tunnel
   * asks before it numbers a packet, and sends its gather on that link: a
   * number the sender dropped after all would hold every later striped packet
   * in the peer's reorder buffer until its bound (up to a second).
   */
  stripeLinkFor(bytes: number, urgent: boolean, nowMs: number): Link | undefined {
    this.handleStalls(nowMs); // first, as stripe() does: a give-back may take the room
    const link = this.pickStripe(bytes, nowMs, undefined);
    if (link === undefined) this.stats.dropsNoLink++;
    else if (this.canStripeOn(link, bytes, urgent)) return link;
    else link.stats.drops.queue_full++;
    return undefined;
  }

  /** Whether `link` takes `bytes` more fresh striped data now (see stripeLinkFor). */
  canStripeOn(link: Link, bytes: number, urgent: boolean): boolean {
    return link.canRetain && link.hasRoom(bytes, urgent);
  }

  /**
   * Where striped data is expected through first (least unacknowledged bytes
   * per delivery rate) among links up, but `except`, that are not stalled and
   * can keep it until acknowledged; if none, among all links up but `except`.
   */
  private pickStripe(bytes: number, nowMs: number, except: Link | undefined): Link | undefined {
    let best: Link | undefined;
    let bestEta = Infinity;
    let fallback: Link | undefined;
    let fallbackEta = Infinity;
    for (const l of this.links.values()) {
      if (l.state !== 'up' || l === except) continue;
      const eta = l.eta(bytes);
      if (l.canRetain && !l.stalled(nowMs)) {
        if (eta < bestEta) {
          best = l;
          bestEta = eta;
        }
      } else if (eta < fallbackEta) {
        fallback = l;
        fallbackEta = eta;
      }
    }
    return best ?? fallback;
  }

  /**
   * Aggregate and adaptive: sends on one link — `onLink`, chosen for fresh
   * data before it was numbered (stripeLinkFor), while it is up; else
   * pickStripe's — and counts it striped. False if no link took it (counted
   * dropped).
   */
  private stripe(buf: Buffer, count: number, nowMs: number, urgent: boolean, except: Link | undefined, plain?: Buffer, resent = except !== undefined, onLink?: Link): boolean {
    this.handleStalls(nowMs);
    const chosen = onLink !== undefined && onLink.state === 'up';
    const link = chosen ? onLink : this.pickStripe(buf.length, nowMs, except);
    if (link === undefined) {
      this.stats.dropsNoLink += count;
      return false;
    }
    // Data `except` gave back is the only copy: it goes even past the bounds on fresh data (sendData bounds it).
    if (!chosen && !link.canRetain && !resent) {
      // Every link holds RETAIN_MAX_BYTES unacknowledged: memory is bounded, this is a full queue.
      link.stats.drops.queue_full += count;
      return false;
    }
    // Counted striped (or, by the caller, resent) only once the link took it: a full queue counts it dropped instead.
    if (!link.sendData(buf, count, nowMs, urgent, true, undefined, resent ? RETAIN_MAX_BYTES : chosen ? ADMITTED_SLACK_BYTES : 0, plain)) return false;
    if (!resent) this.stats.stripedPackets += count;
    return true;
  }

  /** A link that stalled gives back its striped data, which goes on the others (once per stall). */
  private handleStalls(nowMs: number): void {
    for (const l of this.links.values()) {
      if (l.state !== 'up') continue;
      if (!l.stalled(nowMs)) {
        l.stallHandled = false;
        continue;
      }
      if (l.stallHandled) continue;
      // With no other link to take it, the data stays where it is (it may yet get through).
      let other = false;
      for (const o of this.links.values()) if (o !== l && o.state === 'up' && !o.stalled(nowMs)) other = true;
      if (!other) continue;
      l.stallHandled = true;
      l.stats.stalls++;
      this.resend(l, nowMs);
    }
  }

  private resend(from: Link, nowMs: number): void {
    const other = this.upLinkOtherThan(from);
    for (const r of from.reclaim()) {
      // Waits (in order, behind what waits already) while no other link is up to take it — the
      // only copy, it is not dropped for a moment's outage — and, keyed, past the reseal bound.
      if (this.deferred.length > 0 || !other || (r.plain && this.reseal.available(nowMs) < r.buf.length)) {
        this.deferred.push({ r, from, atMs: nowMs });
        this.retainBudget.add(r.buf.length);
        this.stats.resendDeferred += r.packets;
        continue;
      }
      this.sendAgain(r, from, nowMs);
    }
  }

  /**
   * On another link than `except` (any, if undefined); keyed, sealed anew. Counted resent once a link took
   * it (else dropped, not both).
   */
  private sendAgain(r: Reclaimed, except: Link | undefined, nowMs: number): void {
    if (!r.plain) {
      if (this.stripe(r.buf, r.packets, nowMs, false, except, undefined, true)) this.stats.resentPackets += r.packets;
      return;
    }
    // Sealed anew: its own counter may by now be more than the peer's replay window behind the
    // records sealed since; the peer would drop it as too_old, yet acknowledge its bytes as read.
    const record = (this.keys as KeyRing).seal(r.buf, nowMs);
    if (record === undefined) {
      this.stats.dropsNoKey += r.packets;
      return;
    }
    this.reseal.take(r.buf.length, nowMs);
    if (this.stripe(record, r.packets, nowMs, false, except, r.buf, true)) this.stats.resentPackets += r.packets;
  }

  /** A link up other than `from`. */
  private upLinkOtherThan(from: Link): boolean {
    for (const l of this.linkList) if (l !== from && l.state === 'up') return true;
    return false;
  }

  /** Given-back data that waited (no other link, or the reseal bound), as far as links and the bound allow now (tick). */
  private resendDeferred(nowMs: number): void {
    if (this.deferred.length === 0) return;
    const waiting: Deferred[] = [];
    let i = 0;
    for (; i < this.deferred.length; i++) {
      const item = this.deferred[i] as Deferred;
      const { r, from } = item;
      // It got through on its own link after all (a stall that ended): nothing to send.
      if (r.end !== undefined && from.ackedBytes >= r.end) {
        this.retainBudget.add(-r.buf.length);
        continue;
      }
      if (nowMs - item.atMs > DEFERRED_MAX_AGE_MS) {
        this.retainBudget.add(-r.buf.length);
        this.stats.dropsNoLink += r.packets;
        continue;
      }
      if (r.plain && this.reseal.available(nowMs) < r.buf.length) break;
      // Another link if there is one. Else its own, if it is up and the data never went on it
      // (taken from its queue); written there, it waits for that link's ACK (or close) instead.
      let except: Link | undefined = from;
      if (!this.upLinkOtherThan(from)) {
        if (from.state !== 'up' || r.end !== undefined) {
          waiting.push(item);
          continue;
        }
        except = undefined;
      }
      this.retainBudget.add(-r.buf.length);
      this.sendAgain(r, except, nowMs);
    }
    if (i > 0 || waiting.length > 0) this.deferred = waiting.concat(this.deferred.slice(i));
  }

  /** Whether a link of the session is up (the tunnel holds its packets while none is: Tunnel.flushHeld). */
  hasUpLink(): boolean {
    for (const l of this.links.values()) if (l.state === 'up') return true;
    return false;
  }

  private upLinkCount(): number {
    let n = 0;
    const links = this.linkList;
    for (let i = 0; i < links.length; i++) if ((links[i] as Link).state === 'up') n++;
    return n;
  }

  private updatePaths(): void {
    const paths = new Set<string>();
    let up = 0;
    let slowest = Infinity;
    for (const l of this.links.values()) {
      if (l.state !== 'up') continue;
      up++;
      paths.add(l.pathKey);
      if (l.paceKbit !== undefined && l.paceKbit < slowest) slowest = l.paceKbit;
    }
    this.sharedPaths = paths.size < up;
    const bytes = Math.floor((slowest * 125 * SPLIT_MS) / 1000);
    this.splitBytes = bytes < MAX_OFFLOAD_PAYLOAD ? bytes : undefined;
    this.onPathsChanged();
  }

  /** Some up links share a path (connections_per_link): copies are spread over them, not sent on each. */
  get sharesPaths(): boolean {
    return this.sharedPaths;
  }

  /**
   * Every link that is up gets the frames, except when several share a path
   * (connections_per_link): then bulk frames take the least-queued connection
   * of each path, while frames of sparse flows go on every connection. A TCP
   * connection delivers in order: a lost segment holds up what follows it on
   * that connection for a retransmission, but not the copies on the others.
   */
  private fanOut(frames: OutFrames, count: number, nowMs: number, urgent: boolean): void {
    let sent = 0;
    if (this.sharedPaths) {
      const paths = new Map<string, Link[]>();
      for (const link of this.links.values()) {
        if (link.state !== 'up') continue;
        const group = paths.get(link.pathKey);
        if (group === undefined) paths.set(link.pathKey, [link]);
        else group.push(link);
      }
      for (const group of paths.values()) {
        if (!urgent) {
          let best = group[0] as Link;
          for (const l of group) if (l.queueBytes < best.queueBytes) best = l;
          best.send(frames, count, nowMs, urgent);
          sent++;
          continue;
        }
        for (const l of group) l.send(frames, count, nowMs, urgent);
        sent += group.length;
      }
    } else {
      const links = this.linkList;
      for (let i = 0; i < links.length; i++) {
        const link = links[i] as Link;
        if (link.state !== 'up') continue;
        link.send(frames, count, nowMs, urgent);
        sent++;
      }
    }
    if (sent === 0) this.stats.dropsNoLink += count;
    else if (this.reorder !== undefined) {
      this.stats.duplicatedPackets += count;
      this.stats.duplicatedBytes += frames.view.length * (sent - 1);
    }
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
    const seen = link.recordsSeen;
    const prove = seen !== undefined && link.state === 'up' && link.wantsLifeProof(now);
    let opened;
    try {
      opened = keys.open(buf, start, end, now, seen, prove);
    } catch (e) {
      // Only a failed tag is tampering; a counter past the limit or a short record is a plain protocol error.
      if (e instanceof TamperedError) this.stats.tampered++;
      throw e;
    }
    if (typeof opened === 'string') {
      if (prove && seen.provedLife) link.heard(now);
      // A record dropped unopened (a copy that lost the race, too old, ...) asks for an ACK: its
      // bytes are through. An opened one asks through its frames (handle): ACKs never answer ACKs.
      if (link.state === 'up') link.dataToAck = true;
      this.stats.records[opened]++;
      if (opened === 'duplicate' && link.state === 'up') link.stats.duplicateRecords++;
      return;
    }
    link.heard(now);
    if (opened.confirmedNow) this.onConfirmed(opened.keypair);
    // A link still waiting for its own handshake to be confirmed carries nothing else.
    if (link.state !== 'up') {
      this.stats.records.pending_link++;
      return;
    }
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
    // Every frame but an ACK asks for one (aggregate, adaptive), so what a link holds unacknowledged is in flight.
    if (type !== FrameType.Ack) link.dataToAck = true;
    if (type === FrameType.Data) {
      const seq = readU64(buf, start);
      if (seq > MAX_SAFE_U64 || seq === 0) throw new ProtocolError(`DATA sequence number ${seq} out of range`);
      const reorder = this.reorder;
      // Sent on one link only: its one copy may be late (resent after its link died), never stale.
      const striped = reorder !== undefined && ((buf[start - 2] as number) & DATA_IN_ORDER) !== 0;
      const verdict = this.eliminator.check(seq, striped);
      if (verdict === Verdict.Accept) {
        link.stats.firstCopies++;
        const packet = buf.subarray(start + 8, end);
        const ok = this.filter ? this.filter(packet) : 'ok';
        if (reorder === undefined) {
          if (ok === 'ok') this.rx.push(packet);
        } else if (ok === 'ok' && striped) {
          reorder.push(seq, packet, performance.now(), this.rx);
        } else {
          // Sent on every link (or refused): released now; its number holds nothing up.
          if (ok === 'ok') this.rx.push(packet);
          reorder.mark(seq, performance.now(), this.rx);
        }
        if (ok === 'spoofed') this.stats.dropsSpoofed++;
        else if (ok === 'link_local') this.stats.dropsLinkLocal++;
      } else if (verdict === Verdict.Duplicate) {
        link.stats.duplicates++;
      } else {
        link.stats.stale++;
      }
      return;
    }
    if (link.handleKeepalive(type, buf, start)) return;
    if (type === FrameType.Ack) {
      if (this.reorder === undefined) throw new ProtocolError('ACK on a duplicate-mode session');
      // A sealed record is authentic on every link of its session: an ACK moved to another link (by
      // someone on the path) would acknowledge bytes that link never delivered. It names its link.
      if (buf.readUInt16BE(start) !== link.id) {
        this.stats.misdirected++;
        return;
      }
      link.onAck(readU64(buf, start + 2), performance.now());
      return;
    }
    if (type === FrameType.LinkDown) {
      const id = buf.readUInt16BE(start);
      const target = this.links.get(id);
      if (target && target !== link) {
        // A connection younger than a dead interval cannot have been silent that long: the report is
        // about the one it replaced, and came late (it waited behind data on the other link).
        if (performance.now() - target.upSinceMs < target.opts.deadIntervalMs) {
          this.log.info('peer reports link down: about the connection this one replaced, ignored', { link: target.name, via: link.name });
          return;
        }
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
    if (this.rx.length > 0) this.flushRx();
    if (this.reorder !== undefined && this.reorder.waiting > 0 && this.reorderTimer === undefined) this.armReorder();
  }

  private flushRx(): void {
    const packets = this.rx;
    this.rx = [];
    this.stats.rxPackets += packets.length;
    this.sink(packets);
  }

  /** Wakes up when the oldest packet waiting for its predecessor has waited the reorder bound. */
  private armReorder(): void {
    const reorder = this.reorder as ReorderBuffer;
    const wait = Math.max(1, reorder.dueMs() - performance.now());
    this.reorderTimer = setTimeout(() => {
      this.reorderTimer = undefined;
      if (this.closed) return;
      reorder.expire(performance.now(), this.rx);
      if (this.rx.length > 0) this.flushRx();
      if (reorder.waiting > 0) this.armReorder();
    }, wait);
  }

  onClose(link: Link, reason: string): void {
    this.pendingLinks.delete(link);
    if (this.links.get(link.id) === link) {
      link.stats.lastDownReason = reason;
      this.links.delete(link.id);
      this.linkList = [...this.links.values()];
      // The peer may still think this link is fine (one direction dead): say so on the others.
      if (link.declaredDead && !this.closed) {
        for (const other of this.links.values()) if (other.state === 'up') other.sendControl(encodeLinkDown(link.id));
      }
      // What went on this link only and was not acknowledged goes on the others.
      if (this.reorder !== undefined && !this.closed) this.resend(link, performance.now());
      else link.dropOrphans();
      if (this.links.size === 0) this.lastLinkLossMs = performance.now();
      this.updatePaths();
    }
    this.onLinkClosed(link, reason);
  }

  tick(nowMs: number): void {
    this.foldFast();
    this.eliminator.tick(nowMs);
    if (this.reorder !== undefined) {
      this.handleStalls(nowMs);
      this.resendDeferred(nowMs);
    }
    this.keys?.expire(nowMs);
    this.recordArenas.trim(nowMs);
    for (const link of this.links.values()) link.tick(nowMs);
  }

  close(code: CloseCode, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reorderTimer !== undefined) clearTimeout(this.reorderTimer);
    // Packets still waiting for a predecessor are authentic first copies: released now, in
    // order, as past the reorder bound (the TUN closes after its sessions), not dropped unseen.
    if (this.reorder !== undefined && this.reorder.waiting > 0) this.reorder.reset(this.rx);
    if (this.rx.length > 0) this.flushRx();
    for (const link of [...this.links.values(), ...this.pendingLinks.keys()]) link.close(code, reason);
    this.links.clear();
    this.linkList = [];
    this.pendingLinks.clear();
    if (this.fast !== undefined) {
      this.stats.rxPackets += this.fast.fold();
      this.fast.close();
    }
    this.keys?.clear();
    this.onPathsChanged();
    // What waited to be sent again goes with the session (counted dropped); its budget leaves the tunnel's.
    for (const { r } of this.deferred) this.stats.dropsNoLink += r.packets;
    this.deferred = [];
    this.retainBudget.detach();
  }
}
