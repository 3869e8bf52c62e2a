import { readFileSync, statSync } from 'node:fs';
import { CAP_DAC_OVERRIDE, CAP_NET_ADMIN, hasCap } from '../capabilities.js';
import { DpError, errorMessage, isSystemError } from '../errors.js';
import { MAX_OFFLOAD_PACKET, type PacketBatch, type TunDevice, type TunOptions } from './device.js';
import { loadAddon } from './loader.js';
import type { NativeAddon, NativeTun } from './native.js';

/**
 * Read arenas a batch can be pinned in (see PacketBatch.pin): one is read
 * into, the others wait for the links' queues and sockets' writers to release
 * what they keep. An arena is allocated when first needed; its pages when
 * first written. A pinned batch keeps only its own bytes: the next batch is
 * read into the rest of its arena while a packet of the largest size fits
 * there (an offload transfer's batches are 2-3 packets: one per arena, eight
 * arenas held about 1 MiB of the links' queues, and past that every kept
 * batch was copied), and an arena is read from its start again once nothing
 * in it is pinned.
 */
const ARENAS = 8;
/** Where a batch read after a pinned one starts: the next cache line. */
const alignUp = (n: number): number => (n + 63) & ~63;
/**
 * An arena's size: room for a batch of batchPackets packets of the largest
 * size, at most this (a batch of 64 KiB offload packets stops at 15 of them;
 * one of MTU-sized packets still reaches batchPackets).
 */
const ARENA_MAX_BYTES = 1024 * 1024;

/** A kernel TUN device through the addon. Closing it removes the device. */
export class NativeTunDevice implements TunDevice {
  private readonly tun: NativeTun;
  private readonly arenas: Buffer[] = [];
  /** Pins held on each arena. */
  private readonly pins: number[] = [];
  /** The arena being read into. */
  private current = 0;
  /** Where in it: the batches before this offset are pinned (or were, when it was set). */
  private base = 0;
  /** What the addon reads into: the current arena from `base` on. */
  private region: Buffer;
  /** The batch being delivered: its bytes from `base`, and whether it was pinned. */
  private batchBytes = 0;
  private batchPinned = false;
  /** True during an onBatch call (a pin is only possible then). */
  private delivering = false;
  private readonly lengths: Uint32Array;
  private readonly maxPacket: number;
  private closed = false;
  readonly vnetHdrBytes: number;

  private constructor(
    tun: NativeTun,
    private readonly opts: TunOptions,
  ) {
    this.tun = tun;
    this.vnetHdrBytes = opts.offload ? loadAddon().constants.VIRTIO_NET_HDR_BYTES : 0;
    this.maxPacket = opts.offload ? MAX_OFFLOAD_PACKET : opts.mtu;
    this.lengths = new Uint32Array(opts.batchPackets);
    this.arenas.push(this.newArena());
    this.pins.push(0);
    this.region = this.arenas[0] as Buffer;
  }

  /** Bytes of a packet of the largest size with its headroom: what a read needs room for. */
  private get slot(): number {
    return this.opts.headroom + this.maxPacket;
  }

  private newArena(): Buffer {
    const slot = this.slot;
    return Buffer.allocUnsafe(Math.max(slot, Math.min(this.opts.batchPackets * slot, ARENA_MAX_BYTES)));
  }

  /** Where the batch after the one being delivered would start in the current arena, if a read fits there; else -1. */
  private afterBatch(): number {
    const next = alignUp(this.base + this.batchBytes);
    return next + this.slot <= (this.arenas[this.current] as Buffer).length ? next : -1;
  }

  /** Reads go to the current arena from `base` on. */
  private readFrom(base: number): void {
    const arena = this.arenas[this.current] as Buffer;
    this.base = base;
    this.region = base === 0 ? arena : arena.subarray(base);
    this.tun.setArena(this.region);
  }

  /** An arena other than the current one with no pins (allocating one if there is room): its index, or -1. */
  private freeArena(): number {
    for (let i = 0; i < this.arenas.length; i++) if (i !== this.current && this.pins[i] === 0) return i;
    return this.arenas.length < ARENAS ? this.arenas.length : -1;
  }

  /** Pins the batch being delivered (its arena), if the next can be read elsewhere meanwhile: after it, or in a free arena. */
  private pin(): (() => void) | undefined {
    if (!this.delivering || this.closed) return undefined;
    const i = this.current;
    if (!this.batchPinned && this.afterBatch() < 0 && this.freeArena() < 0) return undefined;
    this.batchPinned = true;
    this.pins[i] = (this.pins[i] as number) + 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.pins[i] = (this.pins[i] as number) - 1;
    };
  }

  /**
   * After a batch: if it was pinned, the next is read after it, or into a
   * free arena; if not, where it was, or from the arena's start once
   * nothing in the arena is pinned.
   */
  private moveOn(): void {
    if (this.closed) return;
    if (!this.batchPinned) {
      if (this.base > 0 && this.pins[this.current] === 0) this.readFrom(0);
      return;
    }
    this.batchPinned = false;
    const next = this.afterBatch();
    if (next >= 0) {
      this.readFrom(next);
      return;
    }
    const j = this.freeArena();
    if (j < 0) return; // cannot happen: a first pin needs room after the batch or a free arena
    if (j === this.arenas.length) {
      this.arenas.push(this.newArena());
      this.pins.push(0);
    }
    this.current = j;
    this.readFrom(0);
  }

  /** Arenas allocated so far, and how many hold pins (status). */
  get arenaUse(): { allocated: number; pinned: number } {
    return { allocated: this.arenas.length, pinned: this.pins.filter((n) => n > 0).length };
  }

  /** Creates, addresses and brings up the device; nothing is left behind on failure. */
  static open(opts: TunOptions): NativeTunDevice {
    const addon = loadAddon();
    let tun: NativeTun;
    try {
      tun = new addon.Tun(opts.name, opts.offload);
    } catch (e) {
      throw describeOpenError(e, opts.name);
    }
    try {
      tun.setMtu(opts.mtu);
      if (opts.offload) enableOffloads(tun, addon.constants);
      for (const a of opts.addresses) tun.addAddress(a.address, a.prefix);
      tun.setUp(true);
    } catch (e) {
      tun.close();
      throw new DpError('ERR_TUN', `configuring TUN device ${tun.name}: ${(e as Error).message}`, {
        cause: e,
        exitCode: 2,
      });
    }
    return new NativeTunDevice(tun, opts);
  }

  get name(): string {
    return this.tun.name;
  }

  get lastErrno(): number {
    return this.tun.lastErrno;
  }

  get readDiscards(): number {
    return this.tun.readDiscards;
  }

  get native(): NativeTun {
    return this.tun;
  }

  start(onBatch: (batch: PacketBatch) => void, onError: (err: Error) => void): void {
    const pin = (): (() => void) | undefined => this.pin();
    const batch = { arena: this.region, lengths: this.lengths, count: 0, start: 0, headroom: this.opts.headroom, pin };
    this.tun.startReading(
      batch.arena,
      this.lengths,
      this.opts.headroom,
      this.maxPacket,
      (count, start) => {
        batch.arena = this.region;
        batch.count = count;
        batch.start = start;
        let bytes = 0;
        for (let i = 0; i < count; i++) bytes += this.opts.headroom + (this.lengths[i] as number);
        this.batchBytes = bytes;
        this.batchPinned = false;
        this.delivering = true;
        try {
          onBatch(batch);
        } finally {
          this.delivering = false;
        }
        this.moveOn();
      },
      onError,
    );
  }

  write(packets: readonly Buffer[], start: number): number {
    return this.tun.writeBatch(packets, start);
  }

  waitWritable(cb: () => void): void {
    this.tun.waitWritable(cb);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tun.close();
  }
}

/** Checksum offload and TSO; UDP segmentation (USO) too where the kernel has it (6.2+). */
function enableOffloads(tun: NativeTun, c: NativeAddon['constants']): void {
  const base = c.TUN_F_CSUM | c.TUN_F_TSO4 | c.TUN_F_TSO6;
  try {
    tun.setOffload(base | c.TUN_F_USO4 | c.TUN_F_USO6);
  } catch (e) {
    if (!isSystemError(e) || e.code !== 'EINVAL') throw e;
    tun.setOffload(base);
  }
}

/** What describeOpenError looks at besides the error: the device node and the process's capabilities. */
export interface OpenErrorContext {
  /** The node's mode and owner, as the message names them. */
  mode(): string;
  /** Whether the node's permission bits let this process read and write it. */
  modeAllows(): boolean;
  /** Whether this process has CAP_NET_ADMIN (undefined: cannot tell). */
  netAdmin(): boolean | undefined;
  /** Whether this process runs as root (its effective uid). */
  root(): boolean;
}

const SYSTEM: OpenErrorContext = { mode: tunNodeMode, modeAllows: tunNodeModeAllows, netAdmin: hasNetAdmin, root: () => process.geteuid?.() === 0 };

/**
 * What a failure to make the TUN device means for the user. The addon opens
 * /dev/net/tun (syscall `open`), then creates the interface (TUNSETIFF), and
 * each refusal has its own remedy:
 * - without CAP_NET_ADMIN the device cannot be made whatever else holds: that first;
 * - EACCES at open: the node's permission bits (udev's default is 0666; a node
 *   of 0600 needs its owner or CAP_DAC_OVERRIDE), or, where the bits allow, a
 *   nodev mount or a security module (SELinux, AppArmor);
 * - EPERM at open: a device cgroup (systemd without DeviceAllow=, a container
 *   without the device);
 * - EACCES at TUNSETIFF with the capability: a security module.
 */
export function describeOpenError(e: unknown, name: string, ctx: OpenErrorContext = SYSTEM): DpError {
  if (isSystemError(e) && (e.code === 'EPERM' || e.code === 'EACCES')) {
    const netAdmin = ctx.netAdmin();
    if (netAdmin !== false && e.syscall === 'open') {
      if (e.code === 'EPERM') {
        return new DpError(
          'ERR_PRIVILEGE',
          `creating TUN device '${name}': opening /dev/net/tun is not permitted (EPERM: a device cgroup refuses it): ` +
            'under systemd allow it (DeviceAllow=/dev/net/tun rw, as the units in packaging/systemd do); in a container pass it in (--device /dev/net/tun)',
          { cause: e, exitCode: 2 },
        );
      }
      const why = ctx.modeAllows()
        ? 'not its permission bits: a nodev mount or a security module such as SELinux or AppArmor refuses it'
        : 'run dp-tcp as root (sudo), or let this user open the device (udev makes it mode 0666; a chmod lasts until the next boot, a udev rule stays)';
      return new DpError('ERR_PRIVILEGE', `creating TUN device '${name}': this user may not open /dev/net/tun (EACCES; the device is ${ctx.mode()}): ${why}`, {
        cause: e,
        exitCode: 2,
      });
    }
    if (netAdmin === true && e.code === 'EACCES') {
      return new DpError('ERR_PRIVILEGE', `creating TUN device '${name}' was refused (EACCES) with CAP_NET_ADMIN: a security module such as SELinux refuses it`, {
        cause: e,
        exitCode: 2,
      });
    }
    return new DpError(
      'ERR_PRIVILEGE',
      `creating TUN device '${name}' needs CAP_NET_ADMIN: run dp-tcp as root (sudo) or give it cap_net_admin` +
        (ctx.root() ? ' (this root lacks it: in a container, --cap-add NET_ADMIN)' : ''),
      { cause: e, exitCode: 2 },
    );
  }
  if (isSystemError(e)) {
    if (e.code === 'ENOENT' || e.code === 'ENODEV') {
      return new DpError('ERR_TUN', `/dev/net/tun is missing: load the tun module (modprobe tun)`, {
        cause: e,
        exitCode: 2,
      });
    }
    if (e.code === 'EBUSY') {
      return new DpError('ERR_TUN', `TUN device '${name}' already exists and is in use by another process`, {
        cause: e,
        exitCode: 2,
      });
    }
  }
  return new DpError('ERR_TUN', `creating TUN device '${name}': ${(e as Error).message}`, { cause: e, exitCode: 2 });
}

/** /dev/net/tun's mode and owner, as a message names them. */
export function tunNodeMode(): string {
  try {
    const st = statSync('/dev/net/tun');
    return `mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, owner uid ${st.uid} gid ${st.gid}`;
  } catch (e) {
    return `not readable: ${errorMessage(e)}`;
  }
}

/** Who opens a file, as the kernel's permission check sees it. */
export interface Opener {
  euid: number;
  egid: number;
  groups: readonly number[];
  /** CAP_DAC_OVERRIDE: the permission bits do not apply. */
  dacOverride: boolean;
}

/**
 * Whether a node's permission bits let `who` read and write it, as the kernel
 * decides: CAP_DAC_OVERRIDE passes; else the owner's bits for the owner, the
 * group's for a member of its group, everyone's for the rest.
 */
export function modePermitsReadWrite(node: { mode: number; uid: number; gid: number }, who: Opener): boolean {
  if (who.dacOverride) return true;
  const inGroup = who.egid === node.gid || who.groups.includes(node.gid);
  const shift = who.euid === node.uid ? 6 : inGroup ? 3 : 0;
  return ((node.mode >> shift) & 0o6) === 0o6;
}

function tunNodeModeAllows(): boolean {
  try {
    return modePermitsReadWrite(statSync('/dev/net/tun'), {
      euid: process.geteuid?.() ?? -1,
      egid: process.getegid?.() ?? -1,
      groups: process.getgroups?.() ?? [],
      dacOverride: hasCap(readFileSync('/proc/self/status', 'utf8'), CAP_DAC_OVERRIDE),
    });
  } catch {
    return false;
  }
}

function hasNetAdmin(): boolean | undefined {
  try {
    return hasCap(readFileSync('/proc/self/status', 'utf8'), CAP_NET_ADMIN);
  } catch {
    return undefined;
  }
}
