// Which packets from the TUN are urgent: those of sparse flows (a ping, DNS,
// a game, a voice call), which must not wait behind a bulk transfer queued on
// the same link. A flow is the inner 5-tuple (addresses, protocol, ports),
// hashed into a fixed table of byte counters that decay by half every
// DECAY_MS: a flow is sparse while its counter stays under SPARSE_BYTES, as
// FQ-CoDel's sparse-flow optimisation treats a flow that never builds a
// queue. Hash collisions only ever make a sparse flow look bulk (the safe
// way: it then waits in order with the rest). Memory is constant.

import { randomBytes } from 'node:crypto';

/** Flows tracked at once (hash buckets); a power of two. */
export const FLOW_BUCKETS = 4096;
/** A flow stays urgent while it sent less than this in the last ~2 decay periods. */
export const SPARSE_BYTES = 16 * 1024;
/** Counters halve this often. */
export const DECAY_MS = 100;
/** Larger packets are never urgent (a sparse flow of full-size packets gains little). */
export const URGENT_MAX_PACKET_BYTES = 1500;
/** Drawn per process: which flows share a bucket cannot be worked out from their addresses and ports alone. */
const SEED = randomBytes(4).readInt32BE(0);

export class FlowClassifier {
  /** Bytes per bucket. Shared with the native send path (core/fast-path.ts), which counts its packets here too. */
  readonly bytes = new Uint32Array(FLOW_BUCKETS);
  /** [when the counters last halved (performance.now() ms)]: shared as `bytes` is. */
  readonly state = new Float64Array(1);

  /** `seed`: the hash's (flowHash); the process's own unless a test fixes it. */
  constructor(readonly seed = SEED) {}

  /** Halves every counter once per DECAY_MS (called with each batch). */
  decay(nowMs: number): void {
    const last = this.state[0] as number;
    if (nowMs - last < DECAY_MS) return;
    const periods = Math.min(32, Math.floor((nowMs - last) / DECAY_MS));
    // The part of a period left over counts toward the next: batches 150 ms apart halve every 100 ms on average, not every 150.
    this.state[0] = periods >= 32 ? nowMs : last + periods * DECAY_MS;
    const b = this.bytes;
    // A shift count is taken mod 32: `x >>> 32` is x, not 0.
    if (periods >= 32) {
      b.fill(0);
      return;
    }
    for (let i = 0; i < b.length; i++) b[i] = (b[i] as number) >>> periods;
  }

  /**
   * Counts the IP packet at p[o .. o+len) against its flow; true if the flow
   * is sparse (and the packet small): the packet may pass queued bulk data.
   */
  urgent(p: Buffer, o: number, len: number): boolean {
    const h = flowHash(p, o, len, this.seed) & (FLOW_BUCKETS - 1);
    const sent = (this.bytes[h] as number) + len;
    this.bytes[h] = sent > 0xffff_ffff ? 0xffff_ffff : sent;
    return len <= URGENT_MAX_PACKET_BYTES && sent <= SPARSE_BYTES;
  }
}

/**
 * A hash of the inner 5-tuple (IPv4 and IPv6; ports for TCP, UDP, SCTP, UDP-Lite).
 * Words are read signed: the same bits for mix(), and a small integer where an
 * unsigned read above 2^31 would allocate a heap number (until V8 compiles this).
 */
export function flowHash(p: Buffer, o: number, len: number, seed = SEED): number {
  const version = (p[o] as number) >> 4;
  let h = 0x811c9dc5 ^ seed;
  let proto: number;
  let l4: number;
  if (version === 4 && len >= 20) {
    proto = p[o + 9] as number;
    h = mix(h, p.readInt32BE(o + 12));
    h = mix(h, p.readInt32BE(o + 16));
    l4 = o + (((p[o] as number) & 0x0f) << 2);
    // A fragment after the first has no ports: the addresses and protocol alone.
    if ((p.readUInt16BE(o + 6) & 0x1fff) !== 0) l4 = -1;
  } else if (version === 6 && len >= 40) {
    proto = p[o + 6] as number;
    for (let i = 8; i < 40; i += 4) h = mix(h, p.readInt32BE(o + i));
    l4 = o + 40;
  } else {
    return 0;
  }
  h = mix(h, proto);
  if (l4 >= 0 && (proto === 6 || proto === 17 || proto === 132 || proto === 136) && l4 + 4 <= o + len) h = mix(h, p.readInt32BE(l4));
  // A product's bit k depends only on its input's bits 0..k, and the table is indexed by the low
  // bits: without this, the source port (the high half of the last word) never reached them, and
  // every connection to one host and port shared one counter. MurmurHash3's finalizer.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function mix(h: number, v: number): number {
  return Math.imul(h ^ v, 0x01000193) ^ (h >>> 15);
}
