import { DpError, isSystemError } from '../errors.js';
import type { PacketBatch, TunDevice, TunOptions } from './device.js';
import { loadAddon } from './loader.js';
import type { NativeTun } from './native.js';

/** A kernel TUN device through the addon. Closing it removes the device. */
export class NativeTunDevice implements TunDevice {
  private readonly tun: NativeTun;
  private readonly arena: Buffer;
  private readonly lengths: Uint32Array;
  private closed = false;

  private constructor(
    tun: NativeTun,
    private readonly opts: TunOptions,
  ) {
    this.tun = tun;
    this.lengths = new Uint32Array(opts.batchPackets);
    this.arena = Buffer.allocUnsafe(opts.batchPackets * (opts.headroom + opts.mtu));
  }

  /** Creates, addresses and brings up the device; nothing is left behind on failure. */
  static open(opts: TunOptions): NativeTunDevice {
    const addon = loadAddon();
    let tun: NativeTun;
    try {
      tun = new addon.Tun(opts.name);
    } catch (e) {
      throw describeOpenError(e, opts.name);
    }
    try {
      tun.setMtu(opts.mtu);
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

  start(onBatch: (batch: PacketBatch) => void, onError: (err: Error) => void): void {
    const batch = { arena: this.arena, lengths: this.lengths, count: 0, headroom: this.opts.headroom };
    this.tun.startReading(
      this.arena,
      this.lengths,
      this.opts.headroom,
      this.opts.mtu,
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
