// A token bucket: `burst` tokens at most, `perMs` more each millisecond. The
// one rate limiter of the project (status requests, PONGs, handshakes per
// peer, resealing given-back data); the numbers are each caller's.

export class TokenBucket {
  private tokens: number;
  private atMs: number;

  constructor(
    readonly burst: number,
    readonly perMs: number,
    nowMs = performance.now(),
  ) {
    this.tokens = burst;
    this.atMs = nowMs;
  }

  /** Tokens there are at `nowMs` (a time before the last one seen adds none, and is not counted again later). */
  available(nowMs: number): number {
    if (nowMs > this.atMs) {
      this.tokens = Math.min(this.burst, this.tokens + (nowMs - this.atMs) * this.perMs);
      this.atMs = nowMs;
    }
    return this.tokens;
  }

  /** Takes `n` tokens if there are that many at `nowMs`. */
  take(n: number, nowMs: number): boolean {
    if (this.available(nowMs) < n) return false;
    this.tokens -= n;
    return true;
  }
}
