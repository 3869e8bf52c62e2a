// Keypairs: the transport keys of one handshake, their counters, lifetimes and
// anti-replay windows; and the ring of a session's keypairs (docs/protocol.md,
// "Rekey" and "SEALED records").
import { performance } from 'node:perf_hooks';
import { ProtocolError, TamperedError } from '../errors.js';
import type { CipherName } from '../protocol/handshake.js';
import {
  MAX_KEYPAIRS,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME_MS,
} from './limits.js';
import { recordHeader, recordKey, type RecordAlloc, type RecordKey } from './record.js';
import { ReplayWindow } from './replay.js';

export class Keypair {
  readonly createdMs: number;
  /** Counter of the next record sealed under this keypair. */
  private sendCounter = 0;
  readonly replay = new ReplayWindow();
  /**
   * An authentic record under it was received (the peer holds it). The
   * initiator's keypairs are confirmed by the RESPONSE itself.
   */
  confirmed: boolean;

  constructor(
    /** The index the peer puts in records for us (we chose it). */
    readonly localIndex: number,
    /** The index we put in records for the peer (it chose it). */
    readonly remoteIndex: number,
    readonly cipher: CipherName,
    private readonly sendKey: Buffer,
    private readonly recvKey: Buffer,
    readonly initiator: boolean,
    nowMs = performance.now(),
  ) {
    this.confirmed = initiator;
    this.createdMs = nowMs;
    this.sealer = recordKey(cipher, sendKey, true);
    this.opener = recordKey(cipher, recvKey, false);
  }

  /** Set up once per keypair; retire() destroys them (the addon cleanses the key schedules). */
  private readonly sealer: RecordKey;
  private readonly opener: RecordKey;
  private retiredFlag = false;

  /** retire() ran: the keys are zeroed and nothing seals or opens with it. */
  get retired(): boolean {
    return this.retiredFlag;
  }

  /**
   * The keypair's ring let go of it (evicted, expired, or the session's keys
   * cleared): its native cipher contexts are freed, which cleanses their key
   * schedules, and the raw keys are zeroed. The ring calls it when it drops
   * its last use, and a client for one it refuses before use; nothing else
   * seals or opens with a keypair (the server's pending links keep theirs
   * only to compare it). seal and open
   * throw afterwards. Idempotent.
   */
  retire(): void {
    if (this.retiredFlag) return;
    this.retiredFlag = true;
    this.sealer.destroy();
    this.opener.destroy();
    this.sendKey.fill(0);
    this.recvKey.fill(0);
  }

  get sent(): number {
    return this.sendCounter;
  }

  usable(nowMs: number): boolean {
    return !this.retiredFlag && nowMs - this.createdMs < REJECT_AFTER_TIME_MS;
  }

  canSeal(nowMs: number): boolean {
    return this.usable(nowMs) && this.sendCounter < REJECT_AFTER_MESSAGES;
  }

  /** The initiator's cue to start the next handshake. */
  wantsRekey(nowMs: number): boolean {
    return nowMs - this.createdMs >= REKEY_AFTER_TIME_MS || this.sendCounter >= REKEY_AFTER_MESSAGES;
  }

  seal(frames: Buffer, alloc?: RecordAlloc): Buffer {
    if (this.retiredFlag) throw new Error('keypair retired: its keys are erased');
    if (this.sendCounter >= REJECT_AFTER_MESSAGES) throw new Error('keypair exhausted: a new handshake is needed');
    return this.sealer.seal(this.remoteIndex, this.sendCounter++, frames, alloc);
  }

  /** For tests of counter exhaustion. */
  skipCounter(to: number): void {
    if (to < this.sendCounter) throw new RangeError('counters never go back');
    this.sendCounter = to;
  }

  open(counter: number, buf: Buffer, start: number, end: number): Buffer | undefined {
    if (this.retiredFlag) throw new Error('keypair retired: its keys are erased');
    return this.opener.open(counter, buf, start, end);
  }
}

/** Why a record was dropped without closing its link. */
export type RecordDrop = 'unknown_key' | 'duplicate' | 'too_old' | 'expired';

export interface Opened {
  readonly plain: Buffer;
  readonly keypair: Keypair;
  /** This record confirmed the keypair (it was unconfirmed until now). */
  readonly confirmedNow: boolean;
}

/**
 * What one link has carried of a session's records: per keypair, the highest
 * counter. On a slow link in duplicate mode every data copy loses the race and
 * is dropped unopened, and the peer's PINGs may wait seconds behind them; a copy
 * whose tag verifies, newer than any the link carried before (so not a replay of
 * the link's own), then shows the link alive (KeyRing.open: `proveDuplicate`).
 */
export class RecordsSeen {
  private readonly highest = new Map<number, number>();
  /** Set by the last KeyRing.open asked to prove a duplicate: it was authentic and new on this link. */
  provedLife = false;

  /** Records `counter` under keypair `index`; true if it is above every counter seen under it. */
  note(index: number, counter: number): boolean {
    const h = this.highest.get(index);
    if (h !== undefined && counter <= h) return false;
    // Bounded: a session keeps at most MAX_KEYPAIRS; indexes of keypairs gone are forgotten.
    if (h === undefined && this.highest.size >= 2 * MAX_KEYPAIRS) this.highest.clear();
    this.highest.set(index, counter);
    return true;
  }
}

/** A session's keypairs: the one it seals with, and the newest few it opens with. */
export class KeyRing {
  private readonly byIndex = new Map<number, Keypair>();
  /** The keypair new records are sealed with. */
  private current: Keypair | undefined;

  get sending(): Keypair | undefined {
    return this.current;
  }

  get size(): number {
    return this.byIndex.size;
  }

  /**
   * A new handshake's keypair; the initiator seals with it at once, the responder once it is
   * confirmed. Over the bound, the oldest goes first, confirmed or not; never the one records
   * are sealed with, nor the new one: answered INITIATIONs that nobody confirms (a peer's lost
   * attempts) cannot push out the keys the session runs on, and the keypair a link that just
   * joined waits on (unconfirmed until its first record, and the newest) is not pushed out by
   * older confirmed ones whose records are long through.
   */
  add(kp: Keypair): void {
    // Another keypair under the same index (a random index met again) is gone from the ring.
    const same = this.byIndex.get(kp.localIndex);
    if (same !== undefined && same !== kp) this.drop(same);
    this.byIndex.set(kp.localIndex, kp);
    while (this.byIndex.size > MAX_KEYPAIRS) {
      let victim: Keypair | undefined;
      for (const k of this.byIndex.values()) {
        if (k === kp || k === this.current) continue;
        if (victim === undefined || k.createdMs < victim.createdMs) victim = k;
      }
      if (victim === undefined) break; // MAX_KEYPAIRS >= 2: not reached
      this.drop(victim);
    }
    if (kp.confirmed) this.promote(kp);
  }

  has(index: number): boolean {
    return this.byIndex.has(index);
  }

  /** Whether seal() would seal now (a current keypair, usable, with counters left). */
  canSeal(nowMs: number): boolean {
    const kp = this.current;
    return kp !== undefined && kp.canSeal(nowMs);
  }

  /** Seals with the current keypair (into `alloc`'s buffer, if it gives one); undefined when there is none usable (no record may leave). */
  seal(frames: Buffer, nowMs: number, alloc?: RecordAlloc): Buffer | undefined {
    if (!this.canSeal(nowMs)) return undefined;
    return (this.current as Keypair).seal(frames, alloc);
  }

  /**
   * Opens a SEALED body. Returns the plaintext, or why it was dropped
   * (duplicates are normal: every link carries a copy). Throws ProtocolError
   * for a record that fails authentication: the caller closes that link.
   */
  open(buf: Buffer, start: number, end: number, nowMs: number, seen?: RecordsSeen, proveDuplicate = false): Opened | RecordDrop {
    if (seen !== undefined) seen.provedLife = false;
    const { index, counter } = recordHeader(buf, start, end);
    const kp = this.byIndex.get(index);
    if (kp === undefined) return 'unknown_key';
    if (!kp.usable(nowMs)) return 'expired';
    if (counter >= REJECT_AFTER_MESSAGES) throw new ProtocolError(`record counter ${counter} beyond the limit`);
    // Noted before any tag is checked, so that a replay of the link's own records never proves
    // anything (an unproven copy's counter counts too); the price: a forged copy with a delivered
    // counter delays the link's next proof until its copies pass that counter (injection into the
    // stream, which could as well cut it).
    const fresh = seen?.note(index, counter) ?? false;
    const before = kp.replay.check(counter);
    if (before !== 'ok') {
      // A copy another link brought first: decrypted only to prove this link alive, when asked.
      if (seen !== undefined && proveDuplicate && before === 'duplicate') seen.provedLife = fresh && kp.open(counter, buf, start, end) !== undefined;
      return before;
    }
    const plain = kp.open(counter, buf, start, end);
    if (plain === undefined) throw new TamperedError();
    if (kp.replay.accept(counter) !== 'ok') return 'duplicate';
    const confirmedNow = !kp.confirmed;
    if (confirmedNow) {
      kp.confirmed = true;
      this.promote(kp);
    }
    return { plain, keypair: kp, confirmedNow };
  }

  /** Seal with the newest confirmed keypair. */
  private promote(kp: Keypair): void {
    if (this.current === undefined || kp.createdMs >= this.current.createdMs) this.current = kp;
  }

  /** Erases keypairs past their lifetime. */
  expire(nowMs: number): void {
    for (const kp of [...this.byIndex.values()]) if (!kp.usable(nowMs)) this.drop(kp);
  }

  /** Erases every keypair (the session closed, or the peer's session started over). */
  clear(): void {
    const all = [...this.byIndex.values()];
    this.byIndex.clear();
    this.current = undefined;
    for (const kp of all) kp.retire();
  }

  /** Takes a keypair out of the ring and erases its keys: the ring was its only user. */
  private drop(kp: Keypair): void {
    if (this.byIndex.get(kp.localIndex) === kp) this.byIndex.delete(kp.localIndex);
    if (this.current === kp) this.current = undefined;
    kp.retire();
  }
}
