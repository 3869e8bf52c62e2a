import { DpError, isSystemError } from '../errors.js';
import { MAX_OFFLOAD_PACKET, type PacketBatch, type TunDevice, type TunOptions } from './device.js';
import { loadAddon } from './loader.js';
import type { NativeAddon, NativeTun } from './native.js';

/** A kernel TUN device through the addon. Closing it removes the device. */
export class NativeTunDevice implements TunDevice {
  private readonly tun: NativeTun;
  private readonly arena: Buffer;
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
    this.arena = Buffer.allocUnsafe(opts.batchPackets * (opts.headroom + this.maxPacket));
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

  start(onBatch: (batch: PacketBatch) => void, onError: (err: Error) => void): void {
    const batch = { arena: this.arena, lengths: this.lengths, count: 0, headroom: this.opts.headroom };
    this.tun.startReading(
      this.arena,
      this.lengths,
      this.opts.headroom,
      this.maxPacket,
      (count) => {
        batch.count = count;
        onBatch(batch);
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

function describeOpenError(e: unknown, name: string): DpError {
  if (isSystemError(e)) {
    if (e.code === 'EPERM' || e.code === 'EACCES') {
      return new DpError(
        'ERR_PRIVILEGE',
        `creating TUN device '${name}' needs CAP_NET_ADMIN: run dp-tcp as root (sudo) or give it cap_net_admin`,
        { cause: e, exitCode: 2 },
      );
    }
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
