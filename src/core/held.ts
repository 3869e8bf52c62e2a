// Packets read from the TUN while their session had no link up. As WireGuard
// stages the packets that arrive while it handshakes, the tunnel keeps a few
// and sends them when a link is up again (Tunnel.flushHeld): a blip of every
// link — a redial after the peer restarted, a process that stalled past
// dead_interval_ms — costs a delay, not the packets. Bounded in count, bytes
// and age; past a bound the oldest go first (counted dropped, no_link).

/** Packets one session keeps while it has no link up. */
export const HOLD_MAX_PACKETS = 256;
/** Bytes one session keeps (packets with offloads are up to 64 KiB each). */
export const HOLD_MAX_BYTES = 256 * 1024;
/** Bytes all sessions of a tunnel keep together (a server with many clients that lost their links). */
export const HOLD_MAX_TOTAL_BYTES = 4 * 1024 * 1024;
/** A packet kept longer than this is dropped: past it, the application has given up or resent it. */
export const HOLD_MAX_AGE_MS = 2000;

import type { PacketBatch } from '../tun/device.js';

/** The bytes every HeldPackets of a tunnel keeps, against HOLD_MAX_TOTAL_BYTES. */
export class HoldBudget {
  bytes = 0;
}

/** One session's held packets, oldest first, each a copy (the TUN's arenas are reused). */
export class HeldPackets {
  private packets: Buffer[] = [];
  private atMs: number[] = [];
  private bytes = 0;

  constructor(private readonly budget: HoldBudget) {}

  get count(): number {
    return this.packets.length;
  }

  /**
   * Keeps a copy of `packet`, read at `nowMs`. Returns how many packets were
   * dropped to keep the bounds: expired ones, then the oldest; `packet` itself
   * if it does not fit even alone.
   */
  hold(packet: Buffer, nowMs: number): number {
    let dropped = this.expire(nowMs);
    const len = packet.length;
    if (len > HOLD_MAX_BYTES) return dropped + 1;
    while (
      this.packets.length > 0 &&
      (this.packets.length >= HOLD_MAX_PACKETS || this.bytes + len > HOLD_MAX_BYTES || this.budget.bytes + len > HOLD_MAX_TOTAL_BYTES)
    ) {
      this.shift();
      dropped++;
    }
    if (this.budget.bytes + len > HOLD_MAX_TOTAL_BYTES) return dropped + 1; // other sessions hold the budget
    this.packets.push(Buffer.from(packet));
    this.atMs.push(nowMs);
    this.bytes += len;
    this.budget.bytes += len;
    return dropped;
  }

  /** Drops the packets older than HOLD_MAX_AGE_MS; returns how many. */
  expire(nowMs: number): number {
    let n = 0;
    while (this.atMs.length > 0 && nowMs - (this.atMs[0] as number) > HOLD_MAX_AGE_MS) {
      this.shift();
      n++;
    }
    return n;
  }

  /** Hands every packet over, oldest first, and keeps none. */
  take(): Buffer[] {
    const out = this.packets;
    this.budget.bytes -= this.bytes;
    this.packets = [];
    this.atMs = [];
    this.bytes = 0;
    return out;
  }

  /** Hands every packet over as a TUN batch with `headroom` before each (undefined if none is held). */
  takeBatch(headroom: number): PacketBatch | undefined {
    const packets = this.take();
    if (packets.length === 0) return undefined;
    let bytes = 0;
    for (const p of packets) bytes += headroom + p.length;
    const arena = Buffer.alloc(bytes);
    const lengths = new Uint32Array(packets.length);
    let off = 0;
    packets.forEach((p, i) => {
      p.copy(arena, off + headroom);
      off += headroom + p.length;
      lengths[i] = p.length;
    });
    return { arena, lengths, count: packets.length, headroom };
  }

  private shift(): void {
    const p = this.packets.shift() as Buffer;
    this.atMs.shift();
    this.bytes -= p.length;
    this.budget.bytes -= p.length;
  }
}
