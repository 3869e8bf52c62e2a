// WireGuard's defence against handshake floods (device/cookie.go, whitepaper
// section 5.4.7), adapted to TCP. Every handshake message ends in mac1 | mac2:
// - mac1 proves the sender knows the server's public key, so the server spends
//   no DH on a message from someone who does not;
// - mac2, required only when the server is under load, proves the sender can
//   receive at its address: it is keyed by a cookie the server sent there
//   (MAC of the address under a secret that changes every two minutes).
// Over TCP the three-way handshake already proves the address can receive, so
// mac2 adds less than over UDP; it is kept so that a server under load can
// still refuse, statelessly and before any DH, a flood of valid-mac1 messages
// from an address it has not yet answered with a cookie.
// The source is the address alone (4 or 16 bytes): a TCP client's port changes
// with every link it dials, so a cookie bound to it would be useless.
import { randomBytes } from 'node:crypto';
import { equalConstantTime, hash, KEY_BYTES, mac, MAC_BYTES, TAG_BYTES, xaeadOpen, xaeadSeal } from './primitives.js';

/** mac1 | mac2 at the end of every handshake message. */
export const MACS_BYTES = 2 * MAC_BYTES;
export const COOKIE_NONCE_BYTES = 24;
/** COOKIE body: receiver index (u32 BE) | nonce | sealed cookie. */
export const COOKIE_REPLY_BYTES = 4 + COOKIE_NONCE_BYTES + MAC_BYTES + TAG_BYTES;
/** How long the server's cookie secret lives (WireGuard's CookieRefreshTime). */
export const COOKIE_SECRET_LIFETIME_MS = 120_000;
/**
 * A client stops using a cookie this much before the server's secret could
 * have changed, so a message in flight is not refused for a stale mac2 (the
 * kernel implementation's COOKIE_SECRET_LATENCY).
 */
export const COOKIE_LATENCY_MS = 5_000;

const LABEL_MAC1 = Buffer.from('mac1----');
const LABEL_COOKIE = Buffer.from('cookie--');

function checkLength(msg: Buffer): void {
  if (msg.length < MACS_BYTES) throw new RangeError(`a message with macs is at least ${MACS_BYTES} bytes, got ${msg.length}`);
}

function checkSource(source: Buffer): void {
  if (source.length !== 4 && source.length !== 16) throw new RangeError(`a source address is 4 or 16 bytes, got ${source.length}`);
}

function checkServerKey(key: Buffer): void {
  if (key.length !== KEY_BYTES) throw new RangeError(`a public key is ${KEY_BYTES} bytes, got ${key.length}`);
}

/** The server's side: checks mac1 and mac2, and answers with cookies. */
export class CookieChecker {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private readonly secretLifetimeMs: number;
  private readonly now: () => number;
  private readonly secret = Buffer.alloc(KEY_BYTES);
  /** undefined: no secret yet, so no mac2 can be valid. */
  private secretSetAt: number | undefined;

  constructor(serverPublicKey: Buffer, opts?: { secretLifetimeMs?: number; now?: () => number }) {
    checkServerKey(serverPublicKey);
    this.mac1Key = hash(LABEL_MAC1, serverPublicKey);
    this.cookieKey = hash(LABEL_COOKIE, serverPublicKey);
    this.secretLifetimeMs = opts?.secretLifetimeMs ?? COOKIE_SECRET_LIFETIME_MS;
    this.now = opts?.now ?? (() => performance.now());
  }

  /** mac1 = MAC(HASH("mac1----" | spub), msg[.. len-32]). */
  checkMac1(msg: Buffer): boolean {
    if (msg.length < MACS_BYTES) return false;
    const m1 = msg.length - MACS_BYTES;
    return equalConstantTime(mac(this.mac1Key, msg.subarray(0, m1)), msg.subarray(m1, m1 + MAC_BYTES));
  }

  /**
   * mac2 = MAC(cookie, msg[.. len-16]), cookie = MAC(secret, source). As
   * wireguard-go: one secret; once it is older than its lifetime no mac2 is
   * valid until the next reply makes a new one (the client then needs a new
   * cookie, which it asks for by being refused).
   */
  checkMac2(msg: Buffer, source: Buffer): boolean {
    checkSource(source);
    if (msg.length < MACS_BYTES || !this.secretFresh()) return false;
    const m2 = msg.length - MAC_BYTES;
    return equalConstantTime(mac(this.cookie(source), msg.subarray(0, m2)), msg.subarray(m2));
  }

  /**
   * The COOKIE body for the sender of `msg` (whose mac1 should have been
   * checked): receiver index | nonce | XChaCha20-Poly1305(HASH("cookie--" | spub),
   * nonce, cookie, ad = msg's mac1). Binding to mac1 means only the sender of
   * that message can open it.
   */
  createReply(msg: Buffer, receiverIndex: number, source: Buffer): Buffer {
    checkLength(msg);
    checkSource(source);
    if (!this.secretFresh()) {
      randomBytes(KEY_BYTES).copy(this.secret);
      this.secretSetAt = this.now();
    }
    const m1 = msg.length - MACS_BYTES;
    const out = Buffer.alloc(COOKIE_REPLY_BYTES);
    out.writeUInt32BE(receiverIndex >>> 0, 0);
    const nonce = randomBytes(COOKIE_NONCE_BYTES);
    nonce.copy(out, 4);
    xaeadSeal(this.cookieKey, nonce, this.cookie(source), msg.subarray(m1, m1 + MAC_BYTES)).copy(out, 4 + COOKIE_NONCE_BYTES);
    return out;
  }

  private secretFresh(): boolean {
    return this.secretSetAt !== undefined && this.now() - this.secretSetAt <= this.secretLifetimeMs;
  }

  private cookie(source: Buffer): Buffer {
    return mac(this.secret, source);
  }
}

/** The client's side: adds the macs to its handshake messages and keeps the cookie it was sent. */
export class CookieGenerator {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private readonly now: () => number;
  private lastMac1: Buffer | undefined;
  private cookie: Buffer | undefined;
  private cookieSetAt = 0;

  constructor(serverPublicKey: Buffer, opts?: { now?: () => number }) {
    checkServerKey(serverPublicKey);
    this.mac1Key = hash(LABEL_MAC1, serverPublicKey);
    this.cookieKey = hash(LABEL_COOKIE, serverPublicKey);
    this.now = opts?.now ?? (() => performance.now());
  }

  /** Writes mac1 and mac2 into the last 32 bytes of `msg`; mac2 is zeros without a fresh cookie. */
  addMacs(msg: Buffer): void {
    checkLength(msg);
    const m1 = msg.length - MACS_BYTES;
    const m2 = msg.length - MAC_BYTES;
    const mac1 = mac(this.mac1Key, msg.subarray(0, m1));
    mac1.copy(msg, m1);
    // The reply to this message is sealed with its mac1 as ad.
    this.lastMac1 = mac1;
    if (this.cookie !== undefined && this.now() - this.cookieSetAt < COOKIE_SECRET_LIFETIME_MS - COOKIE_LATENCY_MS) {
      mac(this.cookie, msg.subarray(0, m2)).copy(msg, m2);
    } else {
      msg.fill(0, m2);
    }
  }

  /**
   * Takes the cookie from a COOKIE body (the caller has matched its receiver
   * index). False, and nothing kept, if no message was sent yet, the body is
   * not 60 bytes, or it does not open with the mac1 of the last message sent.
   */
  consumeReply(body: Buffer): boolean {
    if (this.lastMac1 === undefined || body.length !== COOKIE_REPLY_BYTES) return false;
    const nonce = body.subarray(4, 4 + COOKIE_NONCE_BYTES);
    const cookie = xaeadOpen(this.cookieKey, nonce, body.subarray(4 + COOKIE_NONCE_BYTES), this.lastMac1);
    if (cookie === undefined) return false;
    this.cookie = cookie;
    this.cookieSetAt = this.now();
    return true;
  }
}
