// Writes accepted packets to the TUN device in batches. When the device
// pushes back (EAGAIN) the rest waits, in order, in a bounded backlog until
// the device is writable again.
import type { Logger } from '../log.js';
import { EAGAIN, type TunDevice } from '../tun/device.js';

export class TunWriterStats {
  packets = 0;
  bytes = 0;
  /** Packets the kernel refused (malformed, ...), by errno. */
  refused: Record<string, number> = {};
  /** Packets dropped because the backlog was full. */
  backlogFull = 0;
}

export class TunWriter {
  readonly stats = new TunWriterStats();
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  private waiting = false;

  constructor(
    private readonly tun: TunDevice,
    private readonly maxBacklogBytes: number,
    private readonly log: Logger,
  ) {}

  write(packets: Buffer[]): void {
    if (this.waiting) {
      this.enqueue(packets, 0);
      return;
    }
    this.writeFrom(packets, 0);
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
      this.backlog.push(p);
      this.backlogBytes += p.length;
    }
  }

  private flush(): void {
    this.waiting = false;
    const packets = this.backlog;
    this.backlog = [];
    this.backlogBytes = 0;
    this.writeFrom(packets, 0);
  }
}
