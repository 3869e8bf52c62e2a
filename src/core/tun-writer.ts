// Writes accepted packets to the TUN device in batches. When the device
// pushes back (EAGAIN) the rest waits, in order, in a bounded backlog until
// the device is writable again. With offloads, every packet's virtio_net_hdr
// came from the peer: one that no kernel would have written is dropped here,
// before the kernel's GSO and checksum code sees it.
import type { Logger } from '../log.js';
import { EAGAIN, type TunDevice } from '../tun/device.js';
import { checkVnetPacket } from '../tun/vnet-hdr.js';

/** The refused key of packets dropped for their virtio_net_hdr (tun/vnet-hdr.ts). */
export const BAD_VNET_HDR = 'bad_vnet_hdr';

export class TunWriterStats {
  packets = 0;
  bytes = 0;
  /**
   * Packets not written, by reason: `errno_N` when the kernel refused one,
   * `bad_vnet_hdr` when its virtio_net_hdr did not pass checkVnetPacket.
   */
  refused: Record<string, number> = {};
  /** Packets dropped because the backlog was full. */
  backlogFull = 0;
}

export class TunWriter {
  readonly stats = new TunWriterStats();
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  private waiting = false;
  /** Told when a backlog starts (true) and when it is written out (false): the native receive path then holds back. */
  onWaiting: ((waiting: boolean) => void) | undefined;

  /** Packets wait for the device to take writes again. */
  get isWaiting(): boolean {
    return this.waiting;
  }

  constructor(
    private readonly tun: TunDevice,
    private readonly maxBacklogBytes: number,
    private readonly log: Logger,
  ) {}

  write(batch: Buffer[]): void {
    const packets = this.tun.vnetHdrBytes > 0 ? this.dropBadVnetHdr(batch) : batch;
    if (this.waiting) {
      this.enqueue(packets, 0);
      return;
    }
    this.writeFrom(packets, 0);
  }

  /**
   * The packets of `batch` whose virtio_net_hdr passes, in order: the batch
   * itself when all do (no copy on the clean path), else a new array.
   */
  private dropBadVnetHdr(batch: Buffer[]): Buffer[] {
    let kept: Buffer[] | undefined;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i] as Buffer;
      const fault = checkVnetPacket(p);
      if (fault === null) {
        kept?.push(p);
        continue;
      }
      kept ??= batch.slice(0, i);
      this.stats.refused[BAD_VNET_HDR] = (this.stats.refused[BAD_VNET_HDR] ?? 0) + 1;
      if (this.log.enabled('debug')) {
        this.log.debug('dropped a packet with a bad virtio_net_hdr', {
          fault,
          bytes: p.length,
          header: p.toString('hex', 0, Math.min(p.length, 10)),
        });
      }
    }
    return kept ?? batch;
  }

  private writeFrom(packets: Buffer[], start: number): void {
    let i = start;
    while (i < packets.length) {
      const next = this.tun.write(packets, i);
      for (let j = i; j < next; j++) this.stats.bytes += (packets[j] as Buffer).length;
      this.stats.packets += next - i;
      i = next;
      if (i >= packets.length) return;
      const errno = this.tun.lastErrno;
      if (errno === EAGAIN) {
        this.waiting = true;
        this.onWaiting?.(true);
        this.enqueue(packets, i);
        this.tun.waitWritable(() => this.flush());
        return;
      }
      const key = `errno_${errno}`;
      this.stats.refused[key] = (this.stats.refused[key] ?? 0) + 1;
      this.log.debug('TUN refused a packet', { errno, bytes: (packets[i] as Buffer).length });
      i++;
    }
  }

  private enqueue(packets: Buffer[], start: number): void {
    for (let i = start; i < packets.length; i++) {
      const p = packets[i] as Buffer;
      if (this.backlogBytes + p.length > this.maxBacklogBytes) {
        this.stats.backlogFull++;
        continue;
      }
      // A copy: the packet may be a view of the links' shared read buffer, which the next read overwrites.
      this.backlog.push(Buffer.from(p));
      this.backlogBytes += p.length;
    }
  }

  private flush(): void {
    this.waiting = false;
    const packets = this.backlog;
    this.backlog = [];
    this.backlogBytes = 0;
    this.writeFrom(packets, 0);
    if (!this.waiting) this.onWaiting?.(false);
  }
}
