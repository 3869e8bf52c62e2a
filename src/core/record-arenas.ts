import type { Pin } from './link.js';

/** Records up to this size are sealed into an arena (a TUN batch of 1 MiB plus its record overhead). */
export const RECORD_ARENA_MAX_BYTES = 1024 * 1024 + 64 * 1024;
/** A first arena's size, for small records: it grows (is replaced) when a larger record needs it. */
const RECORD_ARENA_MIN_BYTES = 64 * 1024;
/** Arenas per session, at most: beyond, a record gets a buffer of its own (as without arenas). */
export const RECORD_ARENAS = 4;
/** A session that sealed nothing for this long lets go of its arenas (a server may hold many idle sessions). */
export const RECORD_ARENA_IDLE_MS = 2000;
const EMPTY = Buffer.alloc(0);

/**
 * Reused buffers that a session seals outgoing records into, so that a record
 * every link writes at once costs no allocation. Each record is handed to the
 * links as a borrowed view (OutFrames): a link that must keep it pins its
 * arena (`pinOf`) until the bytes are written or dropped; an arena is sealed
 * into again only when no pin is held on it. Sealed records are ciphertext.
 *
 * Without arenas every record was a buffer of up to 1 MiB that only V8's
 * collector freed: the process held about 20 MB more under load than in open
 * mode (bench, 2026-12-04).
 */
export class RecordArenas {
  private readonly arenas: Buffer[] = [];
  private readonly pins: number[] = [];
  private last = -1;
  private lastBuf: Buffer | undefined;
  /** alloc was called since the last trim. */
  private used = false;
  private idleSince = NaN;

  constructor(
    private readonly maxArenas = RECORD_ARENAS,
    private readonly maxBytes = RECORD_ARENA_MAX_BYTES,
  ) {}

  /** A buffer of `bytes` in a free arena, or undefined (too large, or every arena pinned). */
  readonly alloc = (bytes: number): Buffer | undefined => {
    this.last = -1;
    this.lastBuf = undefined;
    if (bytes > this.maxBytes) return undefined;
    this.used = true;
    let i = this.arenas.findIndex((a, k) => this.pins[k] === 0 && a.length >= bytes);
    if (i < 0) {
      // A free arena too small for this record is replaced by a larger one.
      i = this.pins.findIndex((p) => p === 0);
      if (i < 0) {
        if (this.arenas.length >= this.maxArenas) return undefined;
        i = this.arenas.length;
        this.pins.push(0);
      }
      this.arenas[i] = Buffer.allocUnsafeSlow(Math.min(this.maxBytes, Math.max(bytes, RECORD_ARENA_MIN_BYTES)));
    }
    this.last = i;
    this.lastBuf = (this.arenas[i] as Buffer).subarray(0, bytes);
    return this.lastBuf;
  };

  /** The pin of the buffer `alloc` returned last, if `buf` is that buffer. */
  pinOf(buf: Buffer): Pin | undefined {
    if (buf !== this.lastBuf) return undefined;
    const i = this.last;
    return () => {
      this.pins[i] = (this.pins[i] as number) + 1;
      let held = true;
      return () => {
        if (!held) return;
        held = false;
        this.pins[i] = (this.pins[i] as number) - 1;
      };
    };
  }

  /** Called periodically: after RECORD_ARENA_IDLE_MS without a record, frees every arena no link holds. */
  trim(nowMs: number): void {
    if (this.used || Number.isNaN(this.idleSince)) {
      this.used = false;
      this.idleSince = nowMs;
      return;
    }
    if (nowMs - this.idleSince < RECORD_ARENA_IDLE_MS) return;
    // A freed slot is an arena too small for any record: the next alloc replaces it.
    for (let i = 0; i < this.arenas.length; i++) if (this.pins[i] === 0) this.arenas[i] = EMPTY;
    this.last = -1;
    this.lastBuf = undefined;
  }

  /** Arenas allocated (and not freed by trim), and how many hold pins (tests). */
  get use(): { allocated: number; pinned: number } {
    return { allocated: this.arenas.filter((a) => a.length > 0).length, pinned: this.pins.filter((n) => n > 0).length };
  }
}
