// The receive side of aggregate and adaptive sessions (docs/protocol.md,
// "Scheduling modes"): packets sent on one link only (the in-order flag) are
// released in sequence order. A packet whose predecessor is missing waits at
// most the reorder bound, which follows the waits actually seen (twice the
// recent largest wait that ended with its gap filled, plus a margin), and the
// buffer holds at most MAX_PACKETS packets and MAX_BYTES bytes; past either
// bound the gap is released past (counted) and order resumes after it. A
// packet that comes after its gap was released past is released at once:
// elimination already made sure it is the first copy, and late is better than
// lost. Memory is a fixed ring indexed by sequence number.

/** Packets that may wait (a power of two, so `seq & mask` is a slot). */
export const REORDER_MAX_PACKETS = 8192;
export const REORDER_MAX_BYTES = 8 * 1024 * 1024;
export const REORDER_MIN_BOUND_MS = 10;
export const REORDER_MAX_BOUND_MS = 1000;
export const REORDER_START_BOUND_MS = 100;
const MARGIN_MS = 5;
/** The largest recent wait halves this often when no larger one is seen. */
const WAIT_HALF_LIFE_MS = 2000;

const EMPTY = 0;
const HELD = 1;
/** Released at once (sent on every link): its number needs no waiting for. */
const DONE = 2;

export class ReorderStats {
  /** In-order packets that had to wait for a predecessor. */
  waited = 0;
  /** Sequence numbers given up on: the gap was released past (by time or by buffer size). */
  releasedPast = 0;
  /** Packets that came after their gap had been released past (released at once, out of order). */
  late = 0;
  /** The current reorder bound, ms. */
  boundMs = REORDER_START_BOUND_MS;
}

export class ReorderBuffer {
  readonly stats = new ReorderStats();
  private readonly mask = REORDER_MAX_PACKETS - 1;
  private readonly state = new Uint8Array(REORDER_MAX_PACKETS);
  /**
   * One bit per slot, set while its state is not EMPTY: a jump over a long
   * gap tests 32 slots at a time. Without it, a peer numbering each packet
   * a ring's length past the last (legal: numbers may be skipped) made every
   * packet walk the whole ring — 8,192 steps, 30 µs, per 17-byte frame.
   */
  private readonly recorded = new Uint32Array(REORDER_MAX_PACKETS / 32);
  private readonly arrival = new Float64Array(REORDER_MAX_PACKETS);
  private readonly held: (Buffer | undefined)[] = new Array<Buffer | undefined>(REORDER_MAX_PACKETS);
  /** Lowest sequence number not yet released; 0: nothing seen yet. */
  private next = 0;
  /** Highest sequence number recorded. */
  private top = 0;
  private waitingPackets = 0;
  private waitingBytes = 0;
  /**
   * Held sequence numbers in arrival order (arrival times never decrease):
   * the first still held is the oldest waiting. Released ones are dropped
   * from the front lazily, so finding the oldest costs O(1) amortised.
   */
  private arrivals: number[] = [];
  private arrivalsHead = 0;
  /** Largest wait that ended with its gap filled, decaying (ms). */
  private maxWaitMs = (REORDER_START_BOUND_MS - MARGIN_MS) / 2;
  private maxWaitAtMs = 0;
  /** When a gap was last released past, and the bound then: a late packet after it measures how much more was needed. */
  private lastPastMs = -Infinity;
  private lastPastBoundMs = 0;

  get waiting(): number {
    return this.waitingPackets;
  }

  /** When the oldest waiting packet's wait ends (ms); Infinity when none waits. */
  dueMs(): number {
    if (this.waitingPackets === 0) return Infinity;
    return this.oldestArrival() + this.stats.boundMs;
  }

  /** An in-order packet, first copy: appends to `out` what may now be released, in order. */
  push(seq: number, packet: Buffer, nowMs: number, out: Buffer[]): void {
    this.take(seq, packet, nowMs, out);
  }

  /** A packet released at once by the caller (sent on every link): its number no longer holds anything up. */
  mark(seq: number, nowMs: number, out: Buffer[]): void {
    this.take(seq, undefined, nowMs, out);
  }

  /** Releases past every gap whose oldest waiting packet has waited the bound. */
  expire(nowMs: number, out: Buffer[]): void {
    while (this.waitingPackets > 0 && nowMs - this.oldestArrival() >= this.stats.boundMs) {
      this.lastPastMs = nowMs;
      this.lastPastBoundMs = this.stats.boundMs;
      // Skip to the first number that is held (or done), then release in order from there.
      const held = this.nextRecorded(this.next, this.top + 1);
      this.stats.releasedPast += held - this.next;
      this.next = held;
      this.drain(out);
    }
  }

  /** The peer's sequence space starts over: what waits is released (in order), then everything is forgotten. */
  reset(out: Buffer[]): void {
    if (this.waitingPackets > 0) this.jump(this.top + 1, out);
    this.state.fill(EMPTY);
    this.recorded.fill(0);
    this.held.fill(undefined);
    this.next = 0;
    this.top = 0;
    this.waitingPackets = 0;
    this.waitingBytes = 0;
    this.arrivals = [];
    this.arrivalsHead = 0;
  }

  private take(seq: number, packet: Buffer | undefined, nowMs: number, out: Buffer[]): void {
    // Senders number from 1: a fresh buffer waits for 1, unless the sender is far along
    // already (this side restarted under a running peer), then it starts where the peer is.
    if (this.next === 0) this.next = seq <= REORDER_MAX_PACKETS ? 1 : seq;
    if (seq < this.next) {
      if (packet === undefined) return;
      out.push(packet);
      this.stats.late++;
      // It needed this much more wait than it got: learn from it.
      if (nowMs - this.lastPastMs < REORDER_MAX_BOUND_MS) this.learn(nowMs - this.lastPastMs + this.lastPastBoundMs, nowMs);
      return;
    }
    // Beyond the ring: the oldest gaps are given up to make room.
    if (seq - this.next >= REORDER_MAX_PACKETS) this.jump(seq - REORDER_MAX_PACKETS + 1, out);
    const slot = seq & this.mask;
    if (this.state[slot] !== EMPTY) return; // recorded already (elimination prevents it; harmless)
    if (seq === this.next) {
      if (packet !== undefined) out.push(packet);
      this.next++;
      const after = this.next & this.mask;
      if (this.state[after] === EMPTY) return;
      // A gap filled: the packet right after it waited this long.
      if (this.state[after] === HELD) this.learn(nowMs - (this.arrival[after] as number), nowMs);
      this.drain(out);
      return;
    }
    if (seq > this.top) this.top = seq;
    this.state[slot] = packet === undefined ? DONE : HELD;
    (this.recorded[slot >>> 5] as number) |= 1 << (slot & 31);
    this.arrival[slot] = nowMs;
    if (packet !== undefined) {
      // A copy: the packet is a view of a whole socket read or record, which must not stay pinned.
      this.held[slot] = Buffer.from(packet);
      this.arrivals.push(seq);
      if (this.arrivals.length - this.arrivalsHead > 2 * REORDER_MAX_PACKETS) this.oldestArrival(); // drop the released from the front
      if (this.arrivalsHead > REORDER_MAX_PACKETS) {
        this.arrivals = this.arrivals.slice(this.arrivalsHead);
        this.arrivalsHead = 0;
      }
      this.waitingPackets++;
      this.waitingBytes += packet.length;
      this.stats.waited++;
      while (this.waitingBytes > REORDER_MAX_BYTES) this.skipOne(nowMs, out);
    }
  }

  /**
   * Releases everything below `to` in order, giving up the gaps: a test of 32
   * slots at a time over the gaps, and one step per recorded number.
   */
  private jump(to: number, out: Buffer[]): void {
    const end = Math.min(to, this.top + 1);
    while (this.next < end) {
      const n = this.nextRecorded(this.next, end);
      this.stats.releasedPast += n - this.next;
      this.next = n;
      if (n === end) break;
      this.release(n & this.mask, out);
      this.next++;
    }
    if (this.next < to) {
      this.stats.releasedPast += to - this.next;
      this.next = to;
    }
    this.drain(out);
  }

  /** Gives up the lowest outstanding number (released past), then releases what follows in order. */
  private skipOne(nowMs: number, out: Buffer[]): void {
    const slot = this.next & this.mask;
    if (this.state[slot] === EMPTY) this.stats.releasedPast++;
    else this.release(slot, out);
    this.next++;
    this.drain(out);
  }

  /** Releases consecutive recorded numbers from `next` on. */
  private drain(out: Buffer[]): void {
    for (;;) {
      const slot = this.next & this.mask;
      if (this.state[slot] === EMPTY || this.next > this.top) break;
      this.release(slot, out);
      this.next++;
    }
    if (this.waitingPackets === 0) {
      this.waitingBytes = 0;
      this.arrivals = [];
      this.arrivalsHead = 0;
    }
  }

  /** The first number in [from, end) whose slot is recorded (held or done), or `end`. */
  private nextRecorded(from: number, end: number): number {
    let seq = from;
    while (seq < end) {
      const slot = seq & this.mask;
      const bit = slot & 31;
      const word = (this.recorded[slot >>> 5] as number) >>> bit;
      if (word !== 0) return Math.min(end, seq + 31 - Math.clz32(word & -word));
      seq += 32 - bit;
    }
    return end;
  }

  private release(slot: number, out: Buffer[]): void {
    (this.recorded[slot >>> 5] as number) &= ~(1 << (slot & 31));
    if (this.state[slot] === HELD) {
      const p = this.held[slot] as Buffer;
      out.push(p);
      this.held[slot] = undefined;
      this.waitingPackets--;
      this.waitingBytes -= p.length;
    }
    this.state[slot] = EMPTY;
  }

  private oldestArrival(): number {
    const q = this.arrivals;
    while (this.arrivalsHead < q.length) {
      const s = q[this.arrivalsHead] as number;
      // Still held by that number (a slot reused by a later number cannot be: the window is the ring).
      if (s >= this.next && this.state[s & this.mask] === HELD) return this.arrival[s & this.mask] as number;
      this.arrivalsHead++;
    }
    return Infinity;
  }

  /** A wait that was needed: the bound follows twice the recent largest, plus a margin. */
  private learn(waitMs: number, nowMs: number): void {
    const decayed = this.maxWaitMs * Math.pow(0.5, (nowMs - this.maxWaitAtMs) / WAIT_HALF_LIFE_MS);
    this.maxWaitMs = Math.max(decayed, waitMs);
    this.maxWaitAtMs = nowMs;
    this.stats.boundMs = Math.min(REORDER_MAX_BOUND_MS, Math.max(REORDER_MIN_BOUND_MS, 2 * this.maxWaitMs + MARGIN_MS));
  }
}
