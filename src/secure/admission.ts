// Who may hold a half-open handshake on the server, so that strangers
// flooding connections from many addresses cannot keep a real client out
// (docs/security.md, "Handshake flood"). The table of pending connections is
// bounded in all, per source address and per prefix; when a bound is reached
// the OLDEST pending connection of the fullest group is evicted and the new one
// is admitted. A real client answers within a round trip, so it is never the
// oldest for long; a flooder's idle connections are. Sources that fail often
// are blocked for a while. The rate of INITIATIONs tells when mac2 is required.
import { isIPv4 } from 'node:net';
import {
  BLOCK_MS,
  FAIL_LIMIT,
  FAIL_WINDOW_MS,
  MAX_PENDING_PER_PREFIX,
  MAX_PENDING_PER_SOURCE,
  MAX_TRACKED_SOURCES,
  PREFIX_BITS_V4,
  PREFIX_BITS_V6,
  UNDER_LOAD_INITIATIONS_PER_S,
  UNDER_LOAD_PENDING_SHARE,
} from './limits.js';
import { ipv6Bytes } from '../protocol/handshake.js';

/** The address bytes of a socket's remote address (an IPv4-mapped IPv6 address as IPv4). */
export function sourceBytes(address: string): Buffer {
  const v4 = address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
  if (isIPv4(v4)) return Buffer.from(v4.split('.').map(Number));
  return ipv6Bytes(address);
}

/** The prefix a source belongs to for the per-prefix bound. */
export function prefixOf(source: Buffer): string {
  const bits = source.length === 4 ? PREFIX_BITS_V4 : PREFIX_BITS_V6;
  const b = Buffer.from(source.subarray(0, Math.ceil(bits / 8)));
  if (bits % 8 !== 0) b[b.length - 1] = (b[b.length - 1] as number) & (0xff << (8 - (bits % 8)));
  return `${source.length}:${b.toString('hex')}/${bits}`;
}

export type AdmissionRefusal = 'blocked';
export type EvictionReason = 'pending_full' | 'source_full' | 'prefix_full';

interface Entry<T> {
  readonly conn: T;
  readonly source: string;
  readonly prefix: string;
}

export class AdmissionStats {
  /** Connections closed at once: their source failed too often. */
  rateLimited = 0;
  /** Pending connections evicted to make room, by the bound that was reached. */
  evicted: Record<EvictionReason, number> = { pending_full: 0, source_full: 0, prefix_full: 0 };
  /** INITIATIONs answered with a COOKIE instead of a handshake. */
  cookiesSent = 0;
}

export class Admission<T> {
  readonly stats = new AdmissionStats();
  /** Insertion order is age order: the first entry of a group is its oldest. */
  private readonly pending = new Map<T, Entry<T>>();
  private readonly bySource = new Map<string, Set<T>>();
  private readonly byPrefix = new Map<string, Set<T>>();
  private readonly failures = new Map<string, { count: number; since: number; blockedUntil: number }>();
  private initiationsWindowStart = 0;
  private initiationsInWindow = 0;
  private initiationsLastWindow = 0;

  constructor(
    readonly maxPending: number,
    /** Closes an evicted connection. */
    private readonly evict: (conn: T, reason: EvictionReason) => void,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** The connections still in their handshake, oldest first. */
  connections(): IterableIterator<T> {
    return this.pending.keys();
  }

  /** A new connection. Returns a refusal (close it at once), or undefined: it is pending now. */
  admit(conn: T, source: Buffer, nowMs: number): AdmissionRefusal | undefined {
    const key = source.toString('hex');
    const f = this.failures.get(key);
    if (f && f.blockedUntil > nowMs) {
      this.stats.rateLimited++;
      return 'blocked';
    }
    const prefix = prefixOf(source);
    this.makeRoom(this.bySource.get(key), MAX_PENDING_PER_SOURCE, 'source_full');
    this.makeRoom(this.byPrefix.get(prefix), MAX_PENDING_PER_PREFIX, 'prefix_full');
    if (this.pending.size >= this.maxPending) this.evictFromFullest();
    this.pending.set(conn, { conn, source: key, prefix });
    group(this.bySource, key).add(conn);
    group(this.byPrefix, prefix).add(conn);
    return undefined;
  }

  /** The connection finished its handshake or closed. Idempotent. */
  release(conn: T): void {
    const e = this.pending.get(conn);
    if (e === undefined) return;
    this.pending.delete(conn);
    ungroup(this.bySource, e.source, conn);
    ungroup(this.byPrefix, e.prefix, conn);
  }

  /** A failed handshake from `source`; too many block it for a while. Returns true when it just got blocked. */
  failed(source: Buffer, nowMs: number): boolean {
    const key = source.toString('hex');
    let f = this.failures.get(key);
    if (!f || nowMs - f.since > FAIL_WINDOW_MS) {
      if (!f && this.failures.size >= MAX_TRACKED_SOURCES) {
        for (const [k, v] of this.failures) if (v.blockedUntil < nowMs && nowMs - v.since > FAIL_WINDOW_MS) this.failures.delete(k);
        // Still full: the oldest source not blocked now goes (forgetting a blocked one would
        // unblock it: an attacker with more addresses than the table could free its own).
        if (this.failures.size >= MAX_TRACKED_SOURCES) {
          let victim = this.failures.keys().next().value as string;
          for (const [k, v] of this.failures) {
            if (v.blockedUntil < nowMs) {
              victim = k;
              break;
            }
          }
          this.failures.delete(victim);
        }
      }
      f = { count: 0, since: nowMs, blockedUntil: f?.blockedUntil ?? 0 };
      this.failures.set(key, f);
    }
    f.count++;
    if (f.count > FAIL_LIMIT && f.blockedUntil < nowMs) {
      f.blockedUntil = nowMs + BLOCK_MS;
      return true;
    }
    return false;
  }

  /** Counts an INITIATION (for the load estimate). */
  initiation(nowMs: number): void {
    this.roll(nowMs);
    this.initiationsInWindow++;
  }

  /** Under load, INITIATIONs need a valid mac2 (a cookie) before any Diffie-Hellman is done. */
  underLoad(nowMs: number): boolean {
    this.roll(nowMs);
    return (
      this.pending.size > this.maxPending * UNDER_LOAD_PENDING_SHARE ||
      Math.max(this.initiationsInWindow, this.initiationsLastWindow) > UNDER_LOAD_INITIATIONS_PER_S
    );
  }

  private roll(nowMs: number): void {
    if (nowMs - this.initiationsWindowStart < 1000) return;
    this.initiationsLastWindow = nowMs - this.initiationsWindowStart < 2000 ? this.initiationsInWindow : 0;
    this.initiationsInWindow = 0;
    this.initiationsWindowStart = nowMs;
  }

  private makeRoom(g: Set<T> | undefined, max: number, reason: EvictionReason): void {
    while (g !== undefined && g.size >= max) this.drop(g.values().next().value as T, reason);
  }

  /** The table is full: the oldest connection of the prefix holding most of it goes. */
  private evictFromFullest(): void {
    let fullest: Set<T> | undefined;
    for (const g of this.byPrefix.values()) if (fullest === undefined || g.size > fullest.size) fullest = g;
    if (fullest !== undefined) this.drop(fullest.values().next().value as T, 'pending_full');
  }

  private drop(conn: T, reason: EvictionReason): void {
    this.release(conn);
    this.stats.evicted[reason]++;
    this.evict(conn, reason);
  }
}

function group<T>(m: Map<string, Set<T>>, key: string): Set<T> {
  let g = m.get(key);
  if (g === undefined) {
    g = new Set();
    m.set(key, g);
  }
  return g;
}

function ungroup<T>(m: Map<string, Set<T>>, key: string, conn: T): void {
  const g = m.get(key);
  if (g === undefined) return;
  g.delete(conn);
  if (g.size === 0) m.delete(key);
}
