// The anti-replay filter of RFC 6479: a sliding window of counters kept as a
// ring of 32-bit blocks. Moving the window forward clears whole blocks instead
// of shifting a bitmap, so a jump costs at most one pass over the ring, and a
// message costs O(1). Same algorithm as wireguard-go's replay/replay.go, with
// the check split from the update: a counter is checked before decryption
// (cheap refusal of replays) and recorded only once the message authenticated
// (a forged counter must not move the window).

import { REPLAY_WINDOW_RECORDS } from './limits.js';

export type ReplayVerdict = 'ok' | 'duplicate' | 'too_old';

const BLOCK_BITS = 32;

export class ReplayWindow {
  /** Ring size in bits (the constructor's argument). */
  readonly windowBits: number;
  /**
   * How far behind the highest counter a counter is still judged on its bit:
   * windowBits - 32. One block is left out because the block of the highest
   * counter is only partly ahead of the window; beyond this distance a counter
   * is 'too_old' whether or not it was seen.
   */
  readonly windowSize: number;
  private readonly ring: Uint32Array;
  private readonly blocks: number;
  private last = -1;

  /** `windowBits`: a multiple of 32, at least 64 (RFC 6479 needs two blocks). */
  constructor(windowBits: number = REPLAY_WINDOW_RECORDS) {
    if (!Number.isInteger(windowBits) || windowBits < 2 * BLOCK_BITS || windowBits % BLOCK_BITS !== 0 || windowBits > 1 << 24) {
      throw new RangeError(`replay window must be a multiple of ${BLOCK_BITS} bits between 64 and 2^24, got ${windowBits}`);
    }
    this.windowBits = windowBits;
    this.windowSize = windowBits - BLOCK_BITS;
    this.blocks = windowBits / BLOCK_BITS;
    this.ring = new Uint32Array(this.blocks);
  }

  /** The highest counter accepted so far; -1 before the first. */
  get highest(): number {
    return this.last;
  }

  /**
   * The verdict `accept` would give, without recording anything. A value that
   * cannot be a counter (negative, fractional, 2^53 or more) is 'too_old':
   * this runs on unauthenticated input, so it refuses rather than throws.
   */
  check(counter: number): ReplayVerdict {
    if (!Number.isSafeInteger(counter) || counter < 0) return 'too_old';
    if (counter > this.last) return 'ok';
    if (this.last - counter > this.windowSize) return 'too_old';
    const bit = 1 << (counter % BLOCK_BITS);
    return ((this.ring[this.slot(counter)] as number) & bit) === 0 ? 'ok' : 'duplicate';
  }

  /** Records the counter if it is 'ok'; call it only after the message authenticated. */
  accept(counter: number): ReplayVerdict {
    const verdict = this.check(counter);
    if (verdict !== 'ok') return verdict;
    if (counter > this.last) this.advance(counter);
    const i = this.slot(counter);
    this.ring[i] = (this.ring[i] as number) | (1 << (counter % BLOCK_BITS));
    return 'ok';
  }

  /** Forgets everything (a new key starts its counters at 0 again). */
  reset(): void {
    this.ring.fill(0);
    this.last = -1;
  }

  private slot(counter: number): number {
    return Math.floor(counter / BLOCK_BITS) % this.blocks;
  }

  /** Clears the blocks between the old highest and `counter`: their bits belong to counters a full ring ago. */
  private advance(counter: number): void {
    const to = Math.floor(counter / BLOCK_BITS);
    if (this.last < 0) {
      this.ring.fill(0);
    } else {
      const from = Math.floor(this.last / BLOCK_BITS);
      // A jump past the whole ring clears all of it, once.
      const n = Math.min(to - from, this.blocks);
      for (let b = to - n + 1; b <= to; b++) this.ring[b % this.blocks] = 0;
    }
    this.last = counter;
  }
}
