// The native receive path (native/fastpath.h). In open mode with duplicate
// scheduling, the DATA frames at the start of a link's read (and one the read
// ends inside of, right after them: the reader keeps it in a buffer of its own
// and finishes it with the next reads) are judged by the session's elimination
// table, checked (virtio_net_hdr, source address) and written to the TUN by the
// addon, with no JavaScript per packet. Everything else takes the TypeScript
// path as before, in order: other frames and what follows them in the read, a
// frame cut inside its first 6 bytes or by the end of the stream, a packet a
// check refuses (counted there), a packet the TUN did not take (the TUN writer queues
// or counts it), keyed and striped sessions. Both paths share the session's
// table, the addon's Eliminator (core/eliminator.ts is its specification).
// Which sessions and links use it is decided here and in Session; the addon
// counts, and its counts are folded into the TypeScript ones (foldFast).
// DPTCP_NATIVE_PATH=0 turns it off, the native table with it.
//
// The native send path (native/sendpath.h, FastSend below) is its mirror: while
// the tunnel has one session, in open mode with duplicate scheduling, and each
// of its links would send a frame straight to its socket, the addon numbers,
// frames and sends the packets of each TUN batch on every link; TypeScript
// keeps, per link, the flag that says whether it may (Link.syncSend), and
// takes the rest of a batch from the first packet it may not send, and what a
// socket did not take of a frame (Link.sendRest).
import { performance } from 'node:perf_hooks';
import { DATA_HEADER_BYTES } from '../protocol/frame.js';
import { addressBytes, type TunnelAddress } from '../protocol/handshake.js';
import { MAX_OFFLOAD_PACKET, type TunDevice } from '../tun/device.js';
import { optionalAddon } from '../tun/loader.js';
import type { NativeAddon, NativeFastPath, NativeSendPath, NativeTun } from '../tun/native.js';
import { Eliminator, type EliminatorOptions, type EliminationTable } from './eliminator.js';
import type { FlowClassifier } from './flows.js';
import type { Link } from './link.js';
import type { Session } from './session.js';
import type { TunWriter } from './tun-writer.js';

/** Where a link's counters sit in the Float64Array its reader adds to (native/fastpath.h LinkCounter). */
export const LinkCounter = { rxBytes: 0, rxFrames: 1, firstCopies: 2, duplicates: 3, stale: 4, droppedUnread: 5, lastRxHrMs: 6 } as const;
export const LINK_COUNTERS = 7;
/** The session's (PathCounter): packets and bytes written to the TUN. */
const PATH_COUNTERS = 2;

let addon: NativeAddon | null | undefined;
/** The addon, if it has the native path and DPTCP_NATIVE_PATH is not 0. */
function nativeAddon(): NativeAddon | null {
  if (addon === undefined) {
    addon = null;
    // No addon: the TypeScript path alone.
    const a = process.env['DPTCP_NATIVE_PATH'] !== '0' ? optionalAddon() : null;
    if (typeof a?.Eliminator === 'function' && typeof a.FastPath === 'function') addon = a;
  }
  return addon;
}

/**
 * A session's elimination table: the addon's where the native path may share
 * it (`shared`: an open-mode session on a tunnel that has the path), else the
 * TypeScript one, which TypeScript consults for less (a call into the addon
 * costs 160-250 ns per packet, the TypeScript check 20-40).
 */
export function createEliminator(opts: EliminatorOptions, shared: boolean): EliminationTable {
  const a = shared ? nativeAddon() : null;
  if (a?.Eliminator !== undefined) return new a.Eliminator(opts.windowPackets, opts.ttlMs);
  return new Eliminator(opts);
}

let hrOffsetMs: number | undefined;
/** uv_hrtime() ms less performance.now(): both count from the same monotonic clock. */
function hrOffset(): number {
  hrOffsetMs ??= Number(process.hrtime.bigint()) / 1e6 - performance.now();
  return hrOffsetMs;
}

/** performance.now() of a time the addon took with uv_hrtime() (ms). */
export function hrToPerfMs(hrMs: number): number {
  return hrMs - hrOffset();
}

/** The prefixes as FastPath.setSources takes them: 20 bytes each. */
export function encodeSources(prefixes: readonly TunnelAddress[]): Buffer {
  const out = Buffer.alloc(prefixes.length * 20);
  prefixes.forEach((p, i) => {
    const at = i * 20;
    out[at] = p.family;
    out[at + 1] = p.prefix;
    addressBytes(p).copy(out, at + 4);
  });
  return out;
}

/** One session's native receive path. */
export class FastReceive {
  /** Called once, by close(). */
  onClosed: (() => void) | undefined;

  private constructor(
    readonly native: NativeFastPath,
    private readonly counters: Float64Array,
    private readonly writer: TunWriter,
  ) {}

  /**
   * The native path of a session with table `eliminator` on `tun`, or
   * undefined where there is none (no addon, turned off, a TUN that is not
   * the addon's: the tests' fake, or a table that is not the addon's). It
   * holds back while `writer` holds a backlog (the tunnel tells it of later
   * ones: setTunBusy); onTunFailed: a copy of a packet the TUN did not take,
   * for the writer.
   */
  static create(tun: TunDevice, writer: TunWriter, eliminator: EliminationTable, sources: readonly TunnelAddress[] | undefined, onTunFailed: (packet: Buffer) => void): FastReceive | undefined {
    const a = nativeAddon();
    const nativeTun = tun.native;
    if (a?.FastPath === undefined || a.Eliminator === undefined || nativeTun === undefined || !(eliminator instanceof a.Eliminator)) return undefined;
    const counters = new Float64Array(PATH_COUNTERS);
    const native = new a.FastPath(nativeTun, eliminator, tun.vnetHdrBytes, counters, onTunFailed);
    // Before any link is armed: a server session's sources are set before its links come up.
    native.setSources(sources === undefined ? null : encodeSources(sources));
    native.setTunBusy(writer.isWaiting);
    return new FastReceive(native, counters, writer);
  }

  /** The packets the addon wrote to the TUN since the last fold; counted as the TUN writer's too. */
  fold(): number {
    const c = this.counters;
    const packets = c[0] as number;
    if (packets === 0) return 0;
    this.writer.stats.packets += packets;
    this.writer.stats.bytes += c[1] as number;
    c[0] = 0;
    c[1] = 0;
    return packets;
  }

  close(): void {
    this.native.close();
    this.onClosed?.();
    this.onClosed = undefined;
  }
}

/** The tunnel's send counters (native/sendpath.h SendCounter): TUN packets and bytes sent natively, and batches it took whole (JavaScript got none of their packets to route). */
const SEND_COUNTERS = 3;
/** A link's (SendLinkCounter): frames and bytes sent on it. */
const SEND_LINK_COUNTERS = 2;

/** What the tunnel counts of the TUN reads (TunnelStats). */
export interface TunReadStats {
  tunRxPackets: number;
  tunRxBytes: number;
  tunRxBatches: number;
}

/** The tunnel's native send path: armed for its one session while it can use it. */
export class FastSend {
  private session: Session | undefined;
  private links: Link[] = [];
  /**
   * Each link's rest buffer (NativeSendPath.arm), kept with the link across
   * arms: a frame its socket took only in part is copied there, not into a
   * buffer of its own (under load hundreds a second, garbage that only V8's
   * collector gave back, in glibc's heap). One per link suffices: the addon
   * sends on a link only while its flag is up, which needs the socket's
   * writer empty, the last rest written.
   */
  private readonly restBuffers = new WeakMap<Link, Buffer>();

  private constructor(
    private readonly native: NativeSendPath,
    private readonly tun: NativeTun,
    private readonly counters: Float64Array,
  ) {}

  /**
   * The send path of `tun` (counting flows in `flows`, as TypeScript does), or
   * undefined where there is none (no addon, turned off, the tests' fake TUN).
   */
  static create(tun: TunDevice, flows: FlowClassifier): FastSend | undefined {
    const a = nativeAddon();
    const nativeTun = tun.native;
    if (a?.SendPath === undefined || nativeTun?.setSendPath === undefined) return undefined;
    const counters = new Float64Array(SEND_COUNTERS);
    const box: { path?: FastSend } = {};
    const native = new a.SendPath(nativeTun, tun.vnetHdrBytes, counters, flows.bytes, flows.state, flows.seed, hrOffset(), (rests, info) => box.path?.rest(rests, info));
    box.path = new FastSend(native, nativeTun, counters);
    nativeTun.setSendPath(native);
    return box.path;
  }

  /**
   * Sends for `sole` (the tunnel's one confirmed session and its routes) if it
   * can: open mode, duplicate scheduling, no links sharing a path, none paced
   * (their sockets' unsent bytes are bounded: Link.unsentCap), and every
   * link that is up read by the addon (its descriptor is the reader's). Else
   * for nobody. Called whenever one of those may have changed.
   */
  arm(sole: { session: Session; prefixes: readonly TunnelAddress[] } | undefined, stats: TunReadStats): void {
    this.fold(stats);
    // Off first: the flags of the links let go below are no longer kept.
    this.native.disarm();
    for (const l of this.links) l.bindSend(undefined);
    this.links = [];
    this.session = undefined;
    const s = sole?.session;
    const links = s === undefined ? [] : s.upLinks();
    const readers = links.map((l) => l.nativeReader);
    if (s === undefined || s.isClosed || s.keys !== undefined || s.mode !== 'duplicate' || s.sharesPaths || s.splitBytes !== undefined || links.length === 0 || links.some((l) => l.unsentCap !== undefined) || readers.some((r) => r === undefined)) return;
    const flags = new Uint8Array(links.length);
    const counters = links.map(() => new Float64Array(SEND_LINK_COUNTERS));
    this.native.arm(
      s.seqBox,
      encodeSources((sole as { prefixes: readonly TunnelAddress[] }).prefixes),
      readers as NonNullable<(typeof readers)[number]>[],
      flags,
      counters,
      links.map((l) => this.restBufferOf(l)),
    );
    this.session = s;
    this.links = links;
    links.forEach((l, i) => l.bindSend(flags, i, counters[i]));
  }

  /** What the addon sent since the last fold, into the tunnel's, the session's and the links' stats. */
  fold(stats: TunReadStats): void {
    for (const l of this.links) l.foldSend();
    const c = this.counters;
    const packets = c[0] as number;
    if (packets === 0 && c[2] === 0) return;
    stats.tunRxPackets += packets;
    stats.tunRxBytes += c[1] as number;
    stats.tunRxBatches += c[2] as number;
    if (this.session !== undefined) this.session.stats.txPackets += packets;
    c.fill(0);
  }

  /**
   * Frames links did not take whole: for the link at info[3i], which took
   * info[3i+1] bytes of it, the frame of info[3i+2] bytes in its rest buffer,
   * or rests[i] where the addon made a copy.
   */
  private rest(rests: Array<Buffer | undefined>, info: Int32Array): void {
    const now = performance.now();
    const links = this.links; // as armed when the addon sent: a link's sendRest must not shift the others'
    for (let i = 0; i < rests.length; i++) {
      const link = links[info[i * 3] as number];
      if (link === undefined) continue;
      const frame = rests[i] ?? this.restBufferOf(link).subarray(0, info[i * 3 + 2] as number);
      link.sendRest(frame, info[i * 3 + 1] as number, 1, now);
    }
  }

  /** `link`'s rest buffer: room for the longest frame the send path makes (a DATA header and an offload packet). */
  private restBufferOf(link: Link): Buffer {
    let b = this.restBuffers.get(link);
    if (b === undefined) {
      b = Buffer.allocUnsafeSlow(DATA_HEADER_BYTES + MAX_OFFLOAD_PACKET);
      this.restBuffers.set(link, b);
    }
    return b;
  }

  close(stats: TunReadStats): void {
    this.arm(undefined, stats);
    this.native.close();
    this.tun.setSendPath?.(null);
  }
}
