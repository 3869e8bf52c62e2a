// The native receive path (native/fastpath.h). In open mode with duplicate
// scheduling, the DATA frames that lie whole at the start of a link's read
// are judged by the session's elimination table, checked (virtio_net_hdr,
// source address) and written to the TUN by the addon, with no JavaScript per
// packet. Everything else takes the TypeScript path as before, in order:
// other frames, a frame cut by the read, a packet a check refuses (counted
// there), a packet the TUN did not take (the TUN writer queues
// or counts it), keyed and striped sessions. Both paths share the session's
// table, the addon's Eliminator (core/eliminator.ts is its specification).
// Which sessions and links use it is decided here and in Session; the addon
// counts, and its counts are folded into the TypeScript ones (foldFast).
// DPTCP_NATIVE_PATH=0 turns it off, the native table with it.
import { addressBytes, type TunnelAddress } from '../protocol/handshake.js';
import type { TunDevice } from '../tun/device.js';
import { loadAddon } from '../tun/loader.js';
import type { NativeAddon, NativeFastPath } from '../tun/native.js';
import { Eliminator, type EliminatorOptions, type EliminationTable } from './eliminator.js';
import type { TunWriter } from './tun-writer.js';

/** Where a link's counters sit in the Float64Array its reader adds to (native/fastpath.h LinkCounter). */
export const LinkCounter = { rxBytes: 0, rxFrames: 1, firstCopies: 2, duplicates: 3, stale: 4, lastRxHrMs: 5 } as const;
export const LINK_COUNTERS = 6;
/** The session's (PathCounter): packets and bytes written to the TUN. */
const PATH_COUNTERS = 2;

let addon: NativeAddon | null | undefined;
/** The addon, if it has the native path and DPTCP_NATIVE_PATH is not 0. */
function nativeAddon(): NativeAddon | null {
  if (addon === undefined) {
    addon = null;
    if (process.env['DPTCP_NATIVE_PATH'] !== '0') {
      try {
        const a = loadAddon();
        if (typeof a.Eliminator === 'function' && typeof a.FastPath === 'function') addon = a;
      } catch {
        // no addon: the TypeScript path alone
      }
    }
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
/** performance.now() of a time the addon took with uv_hrtime() (ms): both count from the same monotonic clock. */
export function hrToPerfMs(hrMs: number): number {
  hrOffsetMs ??= Number(process.hrtime.bigint()) / 1e6 - performance.now();
  return hrMs - hrOffsetMs;
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
