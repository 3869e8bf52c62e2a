// The tunnel core both roles share: reads the TUN in batches and hands them
// to the session that owns the destination, writes what the sessions accept
// to the TUN, and runs the timers (keepalive, elimination time bound, stats).
import { performance } from 'node:perf_hooks';
import type { TimingConfig } from '../config/types.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { CloseCode, DATA_HEADER_BYTES, DATA_IN_ORDER, writeDataHeader } from '../protocol/frame.js';
import type { TunnelAddress } from '../protocol/handshake.js';
import type { PeerConfig } from '../config/types.js';
import type { KeyRing } from '../secure/keypair.js';
import { SEALED_OVERHEAD_BYTES } from '../secure/record.js';
import type { PacketBatch, TunDevice } from '../tun/device.js';
import type { DataLoopInfo } from '../tun/native.js';
import { splitGso } from '../tun/gso-split.js';
import { dataLoopInfo, holdDataLoop } from './data-loop.js';
import { CHECKPOINTS_PER_TTL } from './eliminator.js';
import { FastReceive, FastSend } from './fast-path.js';
import { FlowClassifier } from './flows.js';
import { HeldPackets, HoldBudget } from './held.js';
import { hostPrefixes } from './ip.js';
import { RetainBudget, TUNNEL_RETAIN_MAX_BYTES, type Link, type LinkStats } from './link.js';
import { Registry } from './registry.js';
import { Session, type SessionStats } from './session.js';
import { TunWriter, type TunWriterStats } from './tun-writer.js';

export interface LinkSnapshot extends Omit<LinkStats, 'drops'> {
  id: number;
  name: string;
  state: string;
  local: string | null;
  remote: string | null;
  rttMs: number | null;
  /** Sends paced at this rate (upload_mbit / download_mbit); null: not paced. */
  paceMbit: number | null;
  queueBytes: number;
  drops: Record<string, number>;
}

export interface SessionSnapshot extends SessionStats {
  id: string;
  /** duplicate, aggregate or adaptive (the client's choice). */
  mode: string;
  /** Aggregate/adaptive: the receive side's reorder buffer; null in duplicate mode. */
  reorder: { waiting: number; waited: number; releasedPast: number; late: number; boundMs: number } | null;
  /** Server, keyed: the peer's name, the first 8 characters of its key and its allowed IPs. */
  peer: { name: string; key: string; allowedIps: string[] } | null;
  /** Seconds since the last completed handshake; null: none. */
  lastHandshakeAgoS: number | null;
  /** Bytes received and sent on all links (every copy, with framing). */
  rxBytes: number;
  txBytes: number;
  /** Aggregate/adaptive: striped bytes its links keep until acknowledged (at most SESSION_RETAIN_MAX_BYTES). */
  retainedBytes: number;
  epoch: string;
  encrypted: boolean;
  peerAddresses: string[];
  elimination: { accepted: number; duplicates: number; stale: number; highestSeq: number };
  links: LinkSnapshot[];
}

export interface TunnelSnapshot {
  uptimeMs: number;
  /**
   * readDiscards: TUN reads of an impossible length, discarded by the addon. dataLoop: the
   * addon's data loop (src/core/data-loop.ts), null without it.
   */
  tun: TunnelStats & { readDiscards: number; written: TunWriterStats; dataLoop: DataLoopInfo | null };
  sessions: SessionSnapshot[];
}

export class TunnelStats {
  tunRxPackets = 0;
  tunRxBytes = 0;
  tunRxBatches = 0;
  /** Packets read from the TUN with no session to carry them. */
  dropsNoSession = 0;
}

export class Tunnel {
  /** Peers, sessions and routes: shared with the server's handshake. */
  readonly registry = new Registry();
  /** Striped data all sessions together keep until acknowledged (each session within its own share). */
  readonly retainBudget = new RetainBudget(TUNNEL_RETAIN_MAX_BYTES);
  readonly writer: TunWriter;
  readonly stats = new TunnelStats();
  readonly startedMs = performance.now();
  /** The tunnel cannot go on (the TUN device failed); the role shuts down. */
  onFatal: (err: Error) => void = () => {};
  /**
   * routeBatch's gathering: each session's four gathers (index (urgent ? 0 :
   * 2) + (striped ? 1 : 0)), and those of the batch being routed, by index
   * (urgent first). Reused batch after batch: an idle ping allocates nothing
   * here but the views it sends (allocation per packet is what makes V8's
   * scavenges, each a pause of 0.3-0.8 ms for the packet that meets it).
   */
  private readonly gathers = new WeakMap<Session, (Gather | undefined)[]>();
  private readonly gathering: (Gather | undefined)[][] = [[], [], [], []];
  /** How many of each gathering list are this batch's (counts, not lengths: an array emptied gives its storage back). */
  private readonly gatheringCount = [0, 0, 0, 0];
  /** Tells sparse flows (a ping, DNS, a call) from bulk ones: the former may pass queued bulk data. */
  private readonly flows = new FlowClassifier();
  /** Largest plaintext of one sealed record. */
  private readonly sealRecordBytes: number;
  private timers: NodeJS.Timeout[] = [];
  /** The sessions' native receive paths (core/fast-path.ts), told when the TUN writer holds a backlog. */
  private readonly fastPaths = new Set<FastReceive>();
  /** Packets of sessions with no link up, until one is (held.ts); while any are held, the TypeScript path sends. */
  private readonly held = new Map<Session, HeldPackets>();
  private readonly holdBudget = new HoldBudget();
  /** The native send path (core/fast-path.ts), once reading; armed for the one session while it can use it. */
  private fastSend: FastSend | undefined;
  /** Lets go of the data loop (src/core/data-loop.ts) that start() holds on. */
  private releaseDataLoop: () => void = () => {};
  private closed = false;

  constructor(
    readonly tun: TunDevice,
    readonly timing: TimingConfig,
    readonly log: Logger,
  ) {
    // The TUN backlog holds what the kernel could not take yet: a few batches.
    this.writer = new TunWriter(tun, 4 * 1024 * 1024, log.child('tun'));
    // While it holds any, the native receive paths leave every packet to it (behind them).
    this.writer.onWaiting = (waiting) => {
      for (const f of this.fastPaths) f.native.setTunBusy(waiting);
    };
    // Record header, counter and tag must fit too; 32 KiB keeps a record well under the default.
    this.sealRecordBytes = Math.min(32 * 1024, timing.maxFrameBytes - SEALED_OVERHEAD_BYTES);
  }

  start(): void {
    this.tun.start(
      (batch) => this.onBatch(batch),
      (err) => {
        this.log.error('TUN device failed', { error: errorMessage(err) });
        this.onFatal(err);
      },
    );
    this.fastSend = FastSend.create(this.tun, this.flows);
    this.armSend();
    this.releaseDataLoop = holdDataLoop();
    const t = this.timing;
    const tickMs = Math.max(10, Math.min(t.keepaliveIntervalMs / 2, t.eliminationTtlMs / CHECKPOINTS_PER_TTL));
    this.timers.push(setInterval(() => this.tick(), tickMs));
    if (t.statsIntervalMs > 0) this.timers.push(setInterval(() => this.logStats(), t.statsIntervalMs));
    for (const timer of this.timers) timer.unref();
  }

  /** Every session, confirmed or not (the registry's). */
  get sessions(): ReadonlySet<Session> {
    return this.registry.sessions;
  }

  /**
   * A session of `peer` (undefined: the one anonymous peer of open and
   * shared-key modes), in the registry but routing nothing until `register`.
   */
  newSession(sessionId: Buffer, epoch: Buffer, peerAddresses: readonly TunnelAddress[], keys?: KeyRing, peer?: PeerConfig): Session {
    const s = new Session(
      sessionId,
      epoch,
      peerAddresses,
      {
        eliminationTtlMs: this.timing.eliminationTtlMs,
        eliminationWindowPackets: this.timing.eliminationWindowPackets,
        maxFrameBytes: this.timing.maxFrameBytes,
        retainBudget: this.retainBudget,
        nativePath: (eliminator, sources, onTunFailed) => {
          const f = FastReceive.create(this.tun, this.writer, eliminator, sources, onTunFailed);
          if (f === undefined) return undefined;
          this.fastPaths.add(f);
          f.onClosed = () => this.fastPaths.delete(f);
          return f;
        },
      },
      (packets) => this.writer.write(packets),
      this.log.child(`session ${sessionId.toString('hex').slice(0, 8)}`),
      keys,
    );
    s.onPathsChanged = () => {
      this.armSend();
      // A link came up: what was held goes once the callback that brought it up has finished.
      if (this.held.has(s) && s.hasUpLink()) setImmediate(() => this.flushHeldLogged());
    };
    this.registry.add(s, peer);
    return s;
  }

  /** The native send path serves the tunnel's one confirmed session, when it has one that it can serve. */
  private armSend(): void {
    if (this.closed) return;
    // Held packets go first, in order: the native path waits for them.
    this.fastSend?.arm(this.held.size > 0 ? undefined : this.registry.sole(), this.stats);
  }

  /** flushHeld off a packet's callback: what it throws is logged (the next TUN batch tries again). */
  private flushHeldLogged(): void {
    try {
      this.flushHeld();
    } catch (err) {
      this.log.error('sending the packets held while no link was up failed', { error: errorMessage(err) });
    }
  }

  /**
   * Sends the held packets of every session that has a link up again, oldest
   * first, as a batch read now; drops (no_link) those of closed sessions.
   */
  private flushHeld(): void {
    if (this.closed || this.held.size === 0) return;
    const now = performance.now();
    for (const [s, h] of this.held) {
      if (s.isClosed) this.dropHeld(s, h);
      else if (s.hasUpLink()) {
        s.stats.dropsNoLink += h.expire(now);
        this.held.delete(s);
        const batch = h.takeBatch(DATA_HEADER_BYTES);
        if (batch !== undefined) this.routeBatch(batch, now, 0);
      }
    }
    if (this.held.size === 0) this.armSend();
  }

  /** Lets go of what `s` holds, counted dropped (no_link). */
  private dropHeld(s: Session, h: HeldPackets): void {
    s.stats.dropsNoLink += h.take().length;
    this.held.delete(s);
  }

  /**
   * The session is confirmed: it holds its tunnel addresses and receives the
   * packets whose destination lies in `prefixes` (default: its own
   * addresses). Called again, it replaces the session's routes.
   */
  register(s: Session, prefixes: readonly TunnelAddress[] = hostPrefixes(s.peerAddresses)): void {
    this.registry.confirm(s, prefixes);
    this.armSend();
  }

  /** The confirmed session holding one of these addresses, if any. */
  sessionByAddress(addresses: readonly TunnelAddress[]): Session | undefined {
    return this.registry.holder(addresses);
  }

  removeSession(s: Session, code: CloseCode, reason: string): void {
    s.close(code, reason);
    this.registry.remove(s);
    this.armSend();
  }

  /** Packets from batch.start on: those before it were sent by the native send path (counted there, folded in when stats are read). */
  private onBatch(batch: PacketBatch): void {
    const now = performance.now();
    const start = batch.start ?? 0;
    this.stats.tunRxBatches++;
    this.stats.tunRxPackets += batch.count - start;
    for (let i = start; i < batch.count; i++) this.stats.tunRxBytes += batch.lengths[i] as number;
    if (this.held.size > 0) this.flushHeld();
    if (this.sessions.size === 0) this.stats.dropsNoSession += batch.count - start;
    else this.routeBatch(batch, now, start);
  }

  /**
   * Cryptokey routing: each packet goes to the session whose allowed prefixes
   * hold its destination (longest prefix). The DATA headers are written in
   * place in the batch (its headroom is exactly a DATA header), so a session's
   * frames that lie back to back stay one view of the batch: a single session
   * seals (or copies) its share in one go, and several sessions each send one
   * buffer — one sealed record per 32 KiB — not one record per packet.
   */
  private routeBatch(batch: PacketBatch, now: number, start: number): void {
    const { arena, lengths, count, headroom } = batch;
    const gathering = this.gathering;
    const listed = this.gatheringCount;
    abandon(gathering, listed); // what a batch that threw left listed
    const vnet = this.tun.vnetHdrBytes;
    this.flows.decay(now);
    let off = 0;
    for (let i = 0; i < start; i++) off += headroom + (lengths[i] as number);
    for (let i = start; i < count; i++) {
      const len = lengths[i] as number;
      const frameStart = off + headroom - DATA_HEADER_BYTES;
      const frameEnd = off + headroom + len;
      off = frameEnd;
      const ip = frameStart + DATA_HEADER_BYTES + vnet;
      const s = this.registry.route(arena, ip);
      if (s === undefined || s.isClosed) {
        this.stats.dropsNoSession++;
        continue;
      }
      // A packet that cannot go is not numbered: a number never sent would hold up the peer's reorder buffer.
      // Held until a link is up (flushHeld), within held.ts's bounds.
      if (!s.hasUpLink()) {
        let h = this.held.get(s);
        if (h === undefined) {
          h = new HeldPackets(this.holdBudget);
          this.held.set(s, h); // the native path is not armed for a session with no link up
        }
        s.stats.dropsNoLink += h.hold(arena.subarray(frameStart + DATA_HEADER_BYTES, frameEnd), now);
        continue;
      }
      if (s.keys !== undefined && !s.keys.canSeal(now)) {
        s.stats.dropsNoKey++;
        continue;
      }
      const urgent = this.flows.urgent(arena, ip, len - vnet);
      const striped = s.stripes(urgent, len - vnet, now);
      const kind = (urgent ? 0 : 2) + (striped ? 1 : 0);
      let gs = this.gathers.get(s);
      if (gs === undefined) {
        gs = [undefined, undefined, undefined, undefined];
        this.gathers.set(s, gs);
      }
      let g = gs[kind];
      if (g === undefined) {
        g = { session: s, parts: [], partCount: 0, bytes: 0, count: 0, lastStart: 0, lastEnd: -1, lastBuf: undefined, lastOwned: false, urgent, striped, listed: false, link: undefined };
        gs[kind] = g;
      }
      if (striped && !this.admit(s, g, DATA_HEADER_BYTES + len, urgent, now, batch.pin)) continue;
      if (!g.listed) {
        g.listed = true;
        (gathering[kind] as (Gather | undefined)[])[listed[kind] as number] = g;
        listed[kind] = (listed[kind] as number) + 1;
      }
      const split = s.splitBytes;
      if (split !== undefined && vnet > 0 && len - vnet > split) {
        const pieces = splitGso(arena.subarray(ip - vnet, frameEnd), split, DATA_HEADER_BYTES);
        if (pieces !== undefined) {
          s.stats.splitPackets++;
          const { buf, starts, ends } = pieces;
          for (let k = 0; k < starts.length; k++) {
            const start = starts[k] as number;
            const end = ends[k] as number;
            this.gatherFrame(s, g, buf, start - DATA_HEADER_BYTES, end, end - start, striped, now, batch.pin, true);
          }
          continue;
        }
      }
      this.gatherFrame(s, g, arena, frameStart, frameEnd, len, striped, now, batch.pin, false);
    }
    // Urgent frames first: on a link that is writable they leave ahead of the bulk of this batch.
    for (let kind = 0; kind < gathering.length; kind++) {
      const list = gathering[kind] as (Gather | undefined)[];
      const n = listed[kind] as number;
      for (let j = 0; j < n; j++) {
        const g = list[j] as Gather;
        list[j] = undefined; // not to keep a session that goes away alive
        g.listed = false;
        if (g.count > 0) flush(g.session, g, now, batch.pin);
        g.link = undefined;
      }
      listed[kind] = 0;
    }
  }

  /**
   * A striped packet whose frame is `bytes` long, asked before it is
   * numbered: admitted into its gather's record if the record stays within
   * sealRecordBytes and the link chosen for it (g.link) takes the record with
   * it; else the record is sent there, and the packet starts the next record
   * if the session finds a link for it (Session.stripeLinkFor: each record
   * placed where it is expected through first). Refused, it is counted, not sent.
   */
  private admit(s: Session, g: Gather, bytes: number, urgent: boolean, now: number, pin: PacketBatch['pin']): boolean {
    const seal = s.keys !== undefined ? SEALED_OVERHEAD_BYTES : 0;
    const link = g.link;
    if (g.count > 0 && link !== undefined && link.state === 'up' && g.bytes + bytes <= this.sealRecordBytes && s.canStripeOn(link, g.bytes + bytes + seal, urgent)) return true;
    if (g.count > 0) flush(s, g, now, pin);
    g.link = s.stripeLinkFor(bytes + seal, urgent, now);
    return g.link !== undefined;
  }

  /**
   * Numbers the frame buf[frameStart, frameEnd) (its DATA header goes in the
   * headroom there) and adds it to `g`: to its last part when it follows that
   * part in the same buffer (the batch, or a split packet's pieces). `owned`:
   * buf is a split packet's, not the batch's (nothing to pin or copy for it).
   */
  private gatherFrame(
    s: Session,
    g: Gather,
    buf: Buffer,
    frameStart: number,
    frameEnd: number,
    len: number,
    striped: boolean,
    now: number,
    pin: PacketBatch['pin'],
    owned: boolean,
  ): void {
    // A sealed record stays under the peer's frame limit; unsealed frames need no cut, except
    // striped ones: each piece goes on one link, so they are cut as finely as records.
    if ((s.keys !== undefined || striped) && g.count > 0 && g.bytes + (frameEnd - frameStart) > this.sealRecordBytes) flush(s, g, now, pin);
    writeDataHeader(buf, frameStart, s.takeSeq(), len, striped ? DATA_IN_ORDER : 0);
    if (g.lastEnd === frameStart && g.lastBuf === buf) {
      g.parts[g.partCount - 1] = buf.subarray(g.lastStart, frameEnd);
    } else {
      g.parts[g.partCount++] = buf.subarray(frameStart, frameEnd);
      g.lastStart = frameStart;
      g.lastBuf = buf;
      g.lastOwned = owned;
    }
    g.lastEnd = frameEnd;
    g.bytes += frameEnd - frameStart;
    g.count++;
  }

  private tick(): void {
    this.fastSend?.fold(this.stats);
    const now = performance.now();
    for (const s of this.sessions) s.tick(now);
    const holding = this.held.size;
    for (const [s, h] of this.held) {
      s.stats.dropsNoLink += h.expire(now);
      if (h.count === 0 || s.isClosed) this.dropHeld(s, h);
    }
    if (holding > 0 && this.held.size === 0) this.armSend();
  }

  snapshot(): TunnelSnapshot {
    this.fastSend?.fold(this.stats);
    for (const s of this.sessions) s.foldFast();
    return {
      uptimeMs: Math.round(performance.now() - this.startedMs),
      tun: {
        ...this.stats,
        readDiscards: this.tun.readDiscards ?? 0,
        dataLoop: dataLoopInfo(),
        written: { ...this.writer.stats, refused: { ...this.writer.stats.refused } },
      },
      sessions: [...this.sessions].map((s) => ({
        id: s.idHex,
        mode: s.mode,
        reorder: s.reorder ? { waiting: s.reorder.waiting, ...s.reorder.stats, boundMs: Math.round(s.reorder.stats.boundMs * 10) / 10 } : null,
        peer: s.peer ? { name: s.peer.name, key: s.peer.key, allowedIps: s.peer.allowedIps.map((a) => `${a.address}/${a.prefix}`) } : null,
        lastHandshakeAgoS: Number.isNaN(s.lastHandshakeMs) ? null : Math.round((performance.now() - s.lastHandshakeMs) / 100) / 10,
        rxBytes: [...s.linkStats.values()].reduce((n, l) => n + l.stats.rxBytes, 0),
        txBytes: [...s.linkStats.values()].reduce((n, l) => n + l.stats.txBytes, 0),
        retainedBytes: s.retainBudget.bytes,
        epoch: s.epoch.toString('hex'),
        encrypted: s.encrypted,
        peerAddresses: s.peerAddresses.map((a) => `${a.address}/${a.prefix}`),
        ...s.stats,
        elimination: {
          accepted: s.eliminator.accepted,
          duplicates: s.eliminator.duplicates,
          stale: s.eliminator.stale,
          highestSeq: s.eliminator.highest,
        },
        links: [...s.linkStats].map(([id, { name, stats }]) => {
          const l = s.links.get(id);
          return {
            id,
            name,
            state: l?.state ?? 'down',
            local: l?.local ?? null,
            remote: l?.remote ?? null,
            rttMs: l === undefined || Number.isNaN(l.srttMs) ? null : Math.round(l.srttMs * 1000) / 1000,
            paceMbit: l?.paceKbit === undefined ? null : l.paceKbit / 1000,
            queueBytes: l?.queueBytes ?? 0,
            ...stats,
            drops: { ...stats.drops },
          };
        }),
      })),
    };
  }

  logStats(): void {
    this.fastSend?.fold(this.stats);
    for (const s of this.sessions) s.foldFast();
    for (const s of this.sessions) {
      const e = s.eliminator;
      this.log.info('session stats', {
        session: s.idHex.slice(0, 8),
        sent: s.stats.txPackets,
        delivered: s.stats.rxPackets,
        // As `dp-tcp status` counts them: with keys, a copy that lost the race is dropped as a whole record.
        eliminated: e.duplicates + s.stats.records.duplicate,
        stale: e.stale,
        no_link: s.stats.dropsNoLink,
      });
      for (const [id, { name, stats }] of s.linkStats) {
        const l = s.links.get(id);
        this.log.info('link stats', {
          link: name,
          state: l?.state ?? 'down',
          rtt_ms: l === undefined || Number.isNaN(l.srttMs) ? '-' : l.srttMs.toFixed(2),
          tx: stats.txPackets,
          rx_first: stats.firstCopies,
          rx_eliminated: stats.duplicates + stats.duplicateRecords,
          rx_stale: stats.stale,
          drop_queue_full: stats.drops.queue_full,
          drop_queue_age: stats.drops.queue_age,
          drop_link_closed: stats.drops.link_closed,
          connects: stats.connects,
        });
      }
    }
  }

  /** Idempotent. Closes every session (their links say why), then the TUN device. */
  close(reason = 'shutting down'): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.fastSend?.close(this.stats);
    this.fastSend = undefined;
    for (const s of [...this.sessions]) this.removeSession(s, CloseCode.Shutdown, reason);
    this.tun.close();
    this.releaseDataLoop();
  }
}

interface Gather {
  readonly session: Session;
  /**
   * Views of the batch: the first partCount (the array is reused, batch after
   * batch, and is never shortened: what lies past partCount is stale).
   */
  readonly parts: Buffer[];
  partCount: number;
  bytes: number;
  count: number;
  /** Where the last part starts and ends, and in which buffer: a frame starting at lastEnd there extends it. */
  lastStart: number;
  lastEnd: number;
  lastBuf: Buffer | undefined;
  /** The last part lies in a split packet's buffer, not the batch's. */
  lastOwned: boolean;
  /** Frames of sparse flows (flows.ts): they may pass bulk data queued on a link. */
  readonly urgent: boolean;
  /** Frames for one link only (aggregate, adaptive). */
  readonly striped: boolean;
  /** In routeBatch's list for the batch being routed. */
  listed: boolean;
  /** Striped: the link the record it gathers goes on, chosen before its packets were numbered (Tunnel.admit); cleared after each batch. */
  link: Link | undefined;
}

/** One part is a view of the reused batch (which `pin` can keep); several are copied together (which frees them from it). */
function flush(s: Session, g: Gather, now: number, pin: PacketBatch['pin']): void {
  const one = g.partCount === 1;
  const frames = one ? (g.parts[0] as Buffer) : Buffer.concat(g.partCount === g.parts.length ? g.parts : g.parts.slice(0, g.partCount), g.bytes);
  // A view of the batch is borrowed (pinned or copied if kept); a split packet's buffer or a concat is ours.
  const borrowed = one && !g.lastOwned;
  // Emptied first: should sending throw, the next batch does not send these views again.
  const count = g.count;
  empty(g);
  s.sendFrames(frames, count, now, borrowed, g.urgent, g.striped, borrowed ? pin : undefined, g.link);
}

function empty(g: Gather): void {
  g.partCount = 0;
  g.bytes = 0;
  g.count = 0;
  g.lastEnd = -1;
  g.lastBuf = undefined;
  g.lastOwned = false;
}

/**
 * Forgets what a batch that threw left in routeBatch's lists (its views are of
 * a batch since overwritten); nothing when the last batch ended normally.
 */
function abandon(gathering: (Gather | undefined)[][], listed: number[]): void {
  for (let kind = 0; kind < listed.length; kind++) {
    const list = gathering[kind] as (Gather | undefined)[];
    for (let j = 0; j < (listed[kind] as number); j++) {
      const g = list[j];
      if (g === undefined) continue; // flushed before the throw (the final loop clears as it goes)
      list[j] = undefined;
      g.listed = false;
      g.link = undefined;
      empty(g);
    }
    listed[kind] = 0;
  }
}
