import type { Pin } from './link.js';

/** Records up to this size are sealed into an arena (a TUN batch of 1 MiB plus its record overhead). */
export const RECORD_ARENA_MAX_BYTES = 1024 * 1024 + 64 * 1024;
/** A first arena's size, for small records: it grows (is replaced) when a larger record needs it. */
const RECORD_ARENA_MIN_BYTES = 64 * 1024;
/** Arenas per session, at most: beyond, a record gets a buffer of its own (as without arenas). */
export const RECORD_ARENAS = 4;
/**
 * Blocks are made in multiples of this size: one packet of 64 KiB (a TUN read
 * with offloads), framed and sealed, fits the smallest.
 */
export const RECORD_BLOCK_BYTES = 68 * 1024;
/** Bytes of blocks per session, at most: two links' default queues (4 MiB each), and a little more. */
export const RECORD_BLOCK_BUDGET = 128 * RECORD_BLOCK_BYTES;
/** A session that sealed nothing for this long lets go of its arenas (a server may hold many idle sessions). */
export const RECORD_ARENA_IDLE_MS = 2000;
const EMPTY = Buffer.alloc(0);

/**
 * Reused buffers that a session seals outgoing records into, so that a record
 * every link writes at once costs no allocation. Each record is handed to the
 * links as a borrowed view (OutFrames): a link that must keep it pins its
 * arena (`pinOf`) until the bytes are written or dropped. While records in
 * the current arena are kept, the next ones are placed after them; an arena
 * with no pin starts over from its beginning; a full arena is left for one
 * with no pin (or a new one, of the largest size, since records are being
 * kept). Kept bytes are never sealed over. Sealed records are ciphertext.
 * An open-mode session (which seals nothing) uses them as the spill of its
 * OutFrames: frames a link must keep when their TUN batch cannot be pinned.
 *
 * Without arenas every record was a buffer of up to 1 MiB that only V8's
 * collector freed: the process held about 20 MB more under load than in open
 * mode (bench, 2026-12-04). With one record per arena, records queued on the
 * links pinned all four under load and nearly every record got a buffer of
 * its own again (4595 of them, 281 MB in a 17 s iperf3 run, 2026-12-04).
 *
 * A link that falls behind the others (in duplicate mode the slower one always
 * does) keeps a record whenever its queue has room again, and drops the ones
 * between: the records it keeps lie scattered over every arena sealed since,
 * and each holds its arena. With eight arenas a ChaCha20-Poly1305 client under
 * iperf3 -P 4 still found all of them held (7.7 MB kept in 8.4 MB) and sealed
 * over a thousand 64 KiB records outside them in 5 s, which grew glibc's heap
 * by 30-40 MB (peak RSS 94-105 MB, 2026-12-07). So a record of up to
 * RECORD_BLOCK_BYTES that finds every arena held goes into a block: a buffer
 * of that size, reused once no link holds it, at most 128 of them (with 64,
 * one run of three still sealed 164 records outside; with 128, none in three;
 * peak RSS 71-74 MB). Larger ones (an open-mode spill: a whole TUN batch, up
 * to 512 KiB) get blocks in multiples of that size, all within one budget.
 */
export class RecordArenas {
  private readonly arenas: Buffer[] = [];
  private readonly pins: number[] = [];
  /** Where the next record goes in each arena. */
  private readonly fill: number[] = [];
  /** The arena records go into, or -1. */
  private current = -1;
  private last = -1;
  private lastBuf: Buffer | undefined;
  private readonly blocks: Buffer[] = [];
  private readonly blockPins: number[] = [];
  /** Bytes of all blocks made (and not freed by trim). */
  private blockTotal = 0;
  /** The block of the buffer alloc returned last, or -1 (an arena's, or none). */
  private lastBlock = -1;
  /** alloc was called since the last trim. */
  private used = false;
  private idleSince = NaN;

  constructor(
    private readonly maxArenas = RECORD_ARENAS,
    private readonly maxBytes = RECORD_ARENA_MAX_BYTES,
    private readonly blockBudget = RECORD_BLOCK_BUDGET,
    private readonly blockBytes = RECORD_BLOCK_BYTES,
  ) {}

  /** A buffer of `bytes` in an arena (or, every arena held, a block), clear of every record a link keeps; or undefined (too large, or no room). */
  readonly alloc = (bytes: number): Buffer | undefined => {
    this.last = -1;
    this.lastBlock = -1;
    this.lastBuf = undefined;
    if (bytes > this.maxBytes) return undefined;
    this.used = true;
    let i = this.current;
    if (i >= 0 && this.pins[i] === 0) this.fill[i] = 0;
    if (i < 0 || (this.fill[i] as number) + bytes > (this.arenas[i] as Buffer).length) {
      // Records kept in the current arena fill it: later arenas are made large enough for many.
      const keeping = i >= 0 && (this.pins[i] as number) > 0;
      i = this.arenas.findIndex((a, k) => this.pins[k] === 0 && a.length >= bytes);
      if (i < 0) {
        // A free arena too small for this record is replaced by a larger one.
        i = this.pins.findIndex((p) => p === 0);
        if (i < 0) {
          if (this.arenas.length >= this.maxArenas) return this.block(bytes);
          i = this.arenas.length;
          this.pins.push(0);
          this.fill.push(0);
        }
        this.arenas[i] = Buffer.allocUnsafeSlow(keeping ? this.maxBytes : Math.min(this.maxBytes, Math.max(bytes, RECORD_ARENA_MIN_BYTES)));
      }
      this.current = i;
      this.fill[i] = 0;
    }
    const at = this.fill[i] as number;
    // The next record starts on a cache line of its own.
    this.fill[i] = (at + bytes + 63) & ~63;
    this.last = i;
    this.lastBuf = (this.arenas[i] as Buffer).subarray(at, at + bytes);
    return this.lastBuf;
  };

  /**
   * The smallest block no link holds that `bytes` fit in; else a new one (for
   * which free blocks too small are given up, largest first, if the budget
   * needs their bytes); or undefined, when the budget has no room.
   */
  private block(bytes: number): Buffer | undefined {
    let k = -1;
    let freeBytes = 0;
    for (let i = 0; i < this.blocks.length; i++) {
      if (this.blockPins[i] !== 0) continue;
      const n = (this.blocks[i] as Buffer).length;
      if (n >= bytes && (k < 0 || n < (this.blocks[k] as Buffer).length)) k = i;
      freeBytes += n;
    }
    if (k < 0) {
      const size = Math.ceil(bytes / this.blockBytes) * this.blockBytes;
      if (this.blockTotal - freeBytes + size > this.blockBudget) return undefined;
      while (this.blockTotal + size > this.blockBudget) {
        let largest = -1;
        for (let i = 0; i < this.blocks.length; i++) {
          if (this.blockPins[i] === 0 && (largest < 0 || (this.blocks[i] as Buffer).length > (this.blocks[largest] as Buffer).length)) largest = i;
        }
        this.blockTotal -= (this.blocks[largest] as Buffer).length;
        this.blocks[largest] = EMPTY;
      }
      k = this.blocks.indexOf(EMPTY); // a slot given up, or emptied by trim
      if (k < 0) {
        k = this.blocks.length;
        this.blocks.push(EMPTY);
        this.blockPins.push(0);
      }
      this.blockTotal += size;
      this.blocks[k] = Buffer.allocUnsafeSlow(size);
    }
    this.lastBlock = k;
    this.lastBuf = (this.blocks[k] as Buffer).subarray(0, bytes);
    return this.lastBuf;
  }

  /** The pin of the buffer `alloc` returned last, if `buf` is that buffer. */
  pinOf(buf: Buffer): Pin | undefined {
    if (buf !== this.lastBuf) return undefined;
    if (this.lastBlock >= 0) return this.counted(this.blockPins, this.lastBlock);
    return this.counted(this.pins, this.last);
  }

  /** A pin that counts its holders in `pins[i]`. */
  private counted(pins: number[], i: number): Pin {
    return () => {
      pins[i] = (pins[i] as number) + 1;
      let held = true;
      return () => {
        if (!held) return;
        held = false;
        pins[i] = (pins[i] as number) - 1;
      };
    };
  }

  /** Called periodically: after RECORD_ARENA_IDLE_MS without a record, frees every arena and block no link holds. */
  trim(nowMs: number): void {
    if (this.used || Number.isNaN(this.idleSince)) {
      this.used = false;
      this.idleSince = nowMs;
      return;
    }
    if (nowMs - this.idleSince < RECORD_ARENA_IDLE_MS) return;
    // A freed slot is an arena too small for any record: the next alloc replaces it.
    for (let i = 0; i < this.arenas.length; i++) {
      if (this.pins[i] !== 0) continue;
      this.arenas[i] = EMPTY;
      this.fill[i] = 0;
    }
    // A freed block is made again when it is next needed.
    for (let k = 0; k < this.blocks.length; k++) {
      if (this.blockPins[k] !== 0) continue;
      this.blockTotal -= (this.blocks[k] as Buffer).length;
      this.blocks[k] = EMPTY;
    }
    this.last = -1;
    this.lastBlock = -1;
    this.lastBuf = undefined;
  }

  /** Blocks allocated (and not freed by trim), how many are held, and their bytes (tests). */
  get blockUse(): { allocated: number; pinned: number; bytes: number } {
    return { allocated: this.blocks.filter((b) => b.length > 0).length, pinned: this.blockPins.filter((n) => n > 0).length, bytes: this.blockTotal };
  }

  /** Arenas allocated (and not freed by trim), and how many hold pins (tests). */
  get use(): { allocated: number; pinned: number } {
    return { allocated: this.arenas.filter((a) => a.length > 0).length, pinned: this.pins.filter((n) => n > 0).length };
  }
}
