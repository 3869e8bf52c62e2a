// What the tunnel core needs from a TUN device. The native device and the
// tests' fake both implement it, so the same core runs against either.

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
  readonly headroom: number;
}

export interface TunDevice {
  readonly name: string;
  /** errno of the packet the last write() stopped at (0: all written). */
  readonly lastErrno: number;
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
}

export const EAGAIN = 11;
