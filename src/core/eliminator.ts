// Receive-side duplicate elimination, as specified in docs/protocol.md:
// exact on the sender's sequence numbers, bounded in memory by a fixed ring and
// in time by checkpoints of `top`. The ring is a bitmap: `top - floor` never
// exceeds its size, so a slot's bit can only mean the one live sequence number
// that maps to it; the slots `top` moves past are cleared as it moves (16 KiB
// for the default 131,072 packets, where a ring of numbers took 1 MiB).

export const Verdict = { Accept: 0, Duplicate: 1, Stale: 2 } as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

export interface EliminatorOptions {
  /** Ring size in sequence numbers; rounded up to a power of two. */
  readonly windowPackets: number;
  /** A copy later than this behind a higher-numbered packet is stale. */
  readonly ttlMs: number;
}

/**
 * What a session needs of its elimination table: this class, or the addon's
 * Eliminator (the same algorithm, shared with the native receive path:
 * core/fast-path.ts).
 */
export interface EliminationTable {
  check(seq: number, exact?: boolean): Verdict;
  tick(nowMs: number): void;
  reset(): void;
  readonly highest: number;
  readonly floorSeq: number;
  readonly stateBytes: number;
  readonly windowPackets: number;
  readonly ttlMs: number;
  readonly accepted: number;
  readonly duplicates: number;
  readonly stale: number;
}

/** How many checkpoints of `top` per TTL: the time bound is exact to ttlMs / CHECKPOINTS. */
export const CHECKPOINTS_PER_TTL = 8;

export class Eliminator implements EliminationTable {
  readonly windowPackets: number;
  readonly ttlMs: number;
  private readonly mask: number;
  private readonly bits: Uint32Array;
  private top = 0;
  /** Numbers at or below are stale: the higher of the ring's bound and the time bound. */
  private floor = 0;
  /** The ring's bound alone (top - windowPackets): above it every number's bit is exact. */
  private windowFloor = 0;
  // Checkpoints (time, top), oldest first; at most CHECKPOINTS_PER_TTL + 1 live.
  private readonly cpTime: Float64Array;
  private readonly cpTop: Float64Array;
  private cpHead = 0;
  private cpCount = 0;
  private lastCheckpointMs = -Infinity;

  accepted = 0;
  duplicates = 0;
  stale = 0;

  constructor(opts: EliminatorOptions) {
    if (!(opts.windowPackets >= 1) || !(opts.ttlMs > 0)) throw new RangeError('window and TTL must be positive');
    let size = 1;
    while (size < opts.windowPackets) size *= 2;
    this.windowPackets = size;
    this.mask = size - 1;
    this.ttlMs = opts.ttlMs;
    this.bits = new Uint32Array(Math.max(1, size >>> 5));
    const cp = CHECKPOINTS_PER_TTL + 2;
    this.cpTime = new Float64Array(cp);
    this.cpTop = new Float64Array(cp);
  }

  /** Highest sequence number accepted so far. */
  get highest(): number {
    return this.top;
  }

  /** Every sequence number at or below this is finished. */
  get floorSeq(): number {
    return this.floor;
  }

  /** Bytes of state, whatever the traffic: the ring and the checkpoints. */
  get stateBytes(): number {
    return this.bits.byteLength + this.cpTime.byteLength + this.cpTop.byteLength;
  }

  /**
   * `exact`: judged by the ring alone, not the time bound. For a packet sent
   * on one link only (striped, aggregate and adaptive modes), whose one copy
   * may come late (resent after its link died): the time bound is for the
   * late copies of packets sent on every link, and would drop it as stale,
   * lost. Within the ring the verdict is exact either way.
   */
  check(seq: number, exact = false): Verdict {
    if (seq <= (exact ? this.windowFloor : this.floor)) {
      this.stale++;
      return Verdict.Stale;
    }
    const slot = seq & this.mask;
    const word = slot >>> 5;
    const bit = 1 << (slot & 31);
    if (seq > this.top) {
      // The slots of (top, seq] last held numbers at or below seq - window: below the new floor.
      this.clear(this.top + 1, Math.min(seq - this.top, this.windowPackets));
      this.top = seq;
      const lowest = seq - this.windowPackets;
      if (lowest > this.windowFloor) this.windowFloor = lowest;
      if (lowest > this.floor) this.floor = lowest;
    } else if (((this.bits[word] as number) & bit) !== 0) {
      this.duplicates++;
      return Verdict.Duplicate;
    }
    this.bits[word] = (this.bits[word] as number) | bit;
    this.accepted++;
    return Verdict.Accept;
  }

  /** Clears `n` slots from the slot of `from` on, wrapping around the ring; whole words at a time where it can. */
  private clear(from: number, n: number): void {
    if (n >= this.windowPackets) {
      this.bits.fill(0);
      return;
    }
    let slot = from & this.mask;
    while (n > 0) {
      if ((slot & 31) === 0 && n >= 32) {
        const words = Math.min(n >>> 5, (this.windowPackets - slot) >>> 5);
        this.bits.fill(0, slot >>> 5, (slot >>> 5) + words);
        slot = (slot + words * 32) & this.mask;
        n -= words * 32;
        continue;
      }
      this.bits[slot >>> 5] = (this.bits[slot >>> 5] as number) & ~(1 << (slot & 31));
      slot = (slot + 1) & this.mask;
      n--;
    }
  }

  /**
   * Advances the time bound; call it at least CHECKPOINTS_PER_TTL times per
   * TTL (the session does, from a timer). `nowMs` is monotonic.
   */
  tick(nowMs: number): void {
    const n = this.cpTime.length;
    while (this.cpCount > 0 && nowMs - (this.cpTime[this.cpHead] as number) >= this.ttlMs) {
      const t = this.cpTop[this.cpHead] as number;
      // A Float64Array element is a heap number until V8 compiles this; `floor` would then be a
      // double field, and every check() before compilation would allocate to read it. `| 0` keeps
      // the small integer it is (below 2^31).
      if (t > this.floor) this.floor = t < 0x8000_0000 ? t | 0 : t;
      this.cpHead = (this.cpHead + 1) % n;
      this.cpCount--;
    }
    if (nowMs - this.lastCheckpointMs >= this.ttlMs / CHECKPOINTS_PER_TTL && this.cpCount < n) {
      const i = (this.cpHead + this.cpCount) % n;
      this.cpTime[i] = nowMs;
      this.cpTop[i] = this.top;
      this.cpCount++;
      this.lastCheckpointMs = nowMs;
    }
  }

  /** Forget everything: the sender started a new sequence space (new epoch). */
  reset(): void {
    this.bits.fill(0);
    this.top = 0;
    this.floor = 0;
    this.windowFloor = 0;
    this.cpHead = 0;
    this.cpCount = 0;
    this.lastCheckpointMs = -Infinity;
  }
}
