// What the tunnel core needs from a TUN device. The native device and the
// tests' fake both implement it, so the same core runs against either.
import type { NativeTun } from './native.js';

/**
 * Packets read in one batch, laid out as the native reader leaves them:
 * packet i starts `headroom` bytes after the end of packet i-1 (packet 0 at
 * `headroom`), so a frame header can be written in front of each in place.
 * Valid only during the onBatch call.
 */
export interface PacketBatch {
  readonly arena: Buffer;
  readonly lengths: Uint32Array;
  readonly count: number;
  /** The first packet to route: those before it were sent by the native send path (absent: 0). */
  readonly start?: number;
  readonly headroom: number;
  /**
   * During the onBatch call: keeps this batch's arena from later reads until
   * the returned release() runs (once per pin), so bytes of it can wait in a
   * socket's writer without a copy. Undefined, or returning undefined: not
   * possible (now); the caller copies.
   */
  readonly pin?: (() => (() => void) | undefined) | undefined;
}

export interface TunDevice {
  readonly name: string;
  /**
   * Bytes of struct virtio_net_hdr in front of every packet read or written
   * (10 with offloads, else 0): the IP header starts after them.
   */
  readonly vnetHdrBytes: number;
  /** errno of the packet the last write() stopped at (0: all written). */
  readonly lastErrno: number;
  /**
   * Reads the device dropped because their length cannot be a packet (shorter
   * than the virtio_net_hdr, or longer than asked for). Absent: never any.
   */
  readonly readDiscards?: number;
  /** The addon's device, for the native receive path (core/fast-path.ts); absent on a fake. */
  readonly native?: NativeTun;
  start(onBatch: (batch: PacketBatch) => void, onError: (err: Error) => void): void;
  /** Writes packets[start..]; returns the index of the first not written. */
  write(packets: readonly Buffer[], start: number): number;
  waitWritable(cb: () => void): void;
  close(): void;
}

export interface TunAddress {
  readonly address: string;
  readonly prefix: number;
}

export interface TunOptions {
  readonly name: string;
  readonly mtu: number;
  readonly addresses: readonly TunAddress[];
  /** Packets per read batch. */
  readonly batchPackets: number;
  /** Bytes reserved in front of each packet for the frame header. */
  readonly headroom: number;
  /**
   * TSO/USO and checksum offload (IFF_VNET_HDR): the kernel hands over TCP/UDP
   * super-packets of up to 64 KiB with their virtio_net_hdr, and takes them back.
   */
  readonly offload: boolean;
}

/** Largest packet the TUN hands over with offloads: an IP packet of 64 KiB plus its virtio_net_hdr. */
export const MAX_OFFLOAD_PACKET = 65_535 + 10;

export const EAGAIN = 11;
