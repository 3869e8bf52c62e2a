// A TUN device in memory: what the core reads is injected, what it writes is
// kept. It implements the same TunDevice contract as the native device.
import type { PacketBatch, TunDevice } from '../../src/tun/device.js';
import { EAGAIN } from '../../src/tun/device.js';

export class FakeTun implements TunDevice {
  readonly written: Buffer[] = [];
  lastErrno = 0;
  closed = false;
  /** When > 0, that many write() calls report EAGAIN before accepting. */
  eagainWrites = 0;
  private onBatch: ((b: PacketBatch) => void) | undefined;
  private writableCb: (() => void) | undefined;
  private waiters: Array<{ n: number; resolve: () => void }> = [];

  constructor(
    readonly name = 'fake0',
    private readonly headroom = 16,
    /** 10: every packet injected and written starts with a virtio_net_hdr (offloads on). */
    readonly vnetHdrBytes = 0,
  ) {}

  start(onBatch: (b: PacketBatch) => void): void {
    this.onBatch = onBatch;
  }

  /** Delivers packets to the core as one batch, laid out like the native reader does. */
  inject(packets: readonly Buffer[]): void {
    if (!this.onBatch) throw new Error('FakeTun not started');
    const size = packets.reduce((a, p) => a + this.headroom + p.length, 0);
    const arena = Buffer.alloc(size);
    const lengths = new Uint32Array(packets.length);
    let off = 0;
    packets.forEach((p, i) => {
      p.copy(arena, off + this.headroom);
      lengths[i] = p.length;
      off += this.headroom + p.length;
    });
    this.onBatch({ arena, lengths, count: packets.length, headroom: this.headroom });
    // The arena is reused by the real device: scribble over it to catch keepers.
    arena.fill(0xee);
  }

  write(packets: readonly Buffer[], start: number): number {
    if (this.eagainWrites > 0) {
      this.eagainWrites--;
      this.lastErrno = EAGAIN;
      return start;
    }
    for (let i = start; i < packets.length; i++) this.written.push(Buffer.from(packets[i] as Buffer));
    this.lastErrno = 0;
    this.waiters = this.waiters.filter((w) => (this.written.length >= w.n ? (w.resolve(), false) : true));
    return packets.length;
  }

  waitWritable(cb: () => void): void {
    this.writableCb = cb;
    setTimeout(() => {
      const c = this.writableCb;
      this.writableCb = undefined;
      c?.();
    }, 5);
  }

  /** Resolves once at least n packets were written, or rejects after timeoutMs. */
  waitFor(n: number, timeoutMs = 5000): Promise<void> {
    if (this.written.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`${this.name}: ${this.written.length} of ${n} packets after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
    });
  }

  close(): void {
    this.closed = true;
  }
}
