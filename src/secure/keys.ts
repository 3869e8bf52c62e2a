// Keys as people handle them: base64 text (as `wg genkey` and `wg pubkey`
// make them, printed without the trailing '=' so that a key can stand in
// key=value text and shell splits — scripts write `KEY=allowed_ips` pairs and
// split them at the first '='; keys with the '=' are read as well, so wg's keys
// work here; `wg` itself wants the '=' back), in files only their owner may read. Nothing here ever puts
// key material into an error message: messages end up in logs and tickets.
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { DpError, isSystemError, errorMessage } from '../errors.js';
import { KEY_BYTES } from './primitives.js';

/** 32 bytes in base64: 43 characters (and one '=' of padding, which may be left out). */
export const KEY_TEXT_CHARS = 43;
const KEY_TEXT = /^[A-Za-z0-9+/]{43}=?$/;

/** Does this text look like a key (before any decoding)? Lets a caller refuse a key pasted where a path belongs. */
export function looksLikeKey(text: string): boolean {
  return KEY_TEXT.test(text.trim());
}

/**
 * Public keys whose private halves are published: RFC 7748's test vectors
 * (section 6.1), which the shipped examples carry as placeholders. Anyone can
 * act as their holder, so no config may trust one or use one as its own.
 */
const PUBLISHED_PUBLIC_KEYS: readonly string[] = [
  '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', // Alice's (the examples' server)
  'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', // Bob's (the examples' client)
];

export function isPublishedKey(publicKey: Buffer): boolean {
  // X25519 ignores the top bit of a public key: the same key with it set is the same key.
  const k = Buffer.from(publicKey);
  k[31] = (k[31] as number) & 0x7f;
  return PUBLISHED_PUBLIC_KEYS.includes(k.toString('hex'));
}

export function encodeKey(k: Buffer): string {
  if (k.length !== KEY_BYTES) throw new RangeError(`a key is ${KEY_BYTES} bytes, got ${k.length}`);
  return k.toString('base64').replace(/=+$/, '');
}

/** Base64 text (surrounding whitespace ignored) -> 32 bytes; throws an Error that names no key material. */
export function decodeKey(text: string): Buffer {
  const s = text.trim();
  const hint = `a key is ${KEY_TEXT_CHARS} characters of base64 (32 bytes; a trailing '=' may follow), as 'dp-tcp genkey' or 'dp-tcp pubkey' print it`;
  if (s.length !== KEY_TEXT_CHARS && s.length !== KEY_TEXT_CHARS + 1) throw new Error(`${hint}; got ${s.length} characters`);
  if (!KEY_TEXT.test(s)) throw new Error(`${hint}; got characters that are not base64`);
  const k = Buffer.from(s, 'base64');
  // Node's decoder ignores stray low bits of the last character; a key with
  // them set is a typo or a truncated copy, not another spelling of the key.
  if (k.length !== KEY_BYTES || k.toString('base64') !== s.padEnd(KEY_TEXT_CHARS + 1, '=')) throw new Error(`${hint}; got a malformed last character`);
  return k;
}

const ASCII_SPACE = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);

/** Surrounding ASCII whitespace removed, bytes untouched otherwise (a secret need not be UTF-8). */
export function trimAsciiWhitespace(b: Buffer): Buffer {
  let start = 0;
  let end = b.length;
  while (start < end && ASCII_SPACE.has(b[start] as number)) start++;
  while (end > start && ASCII_SPACE.has(b[end - 1] as number)) end--;
  return b.subarray(start, end);
}

function configError(message: string, cause?: unknown): DpError {
  return new DpError('ERR_CONFIG', message, { exitCode: 2, cause });
}

/**
 * A secret's bytes, trimmed. Refused unless the file is a regular file that
 * neither group nor others can read or write: a key readable by another user
 * is a key that user has. The mode is taken from the descriptor we read, so a
 * file swapped in between the check and the read cannot slip through.
 */
export function readSecretFile(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw configError(`cannot read ${path}: ${isSystemError(e) ? e.code : errorMessage(e)}`, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw configError(`${path} is not a regular file`);
    const mode = st.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw configError(`${path} can be read or written by group or others (mode ${mode.toString(8)}): chmod 600 ${path}`);
    }
    return trimAsciiWhitespace(readFileSync(fd));
  } catch (e) {
    if (e instanceof DpError) throw e;
    throw configError(`cannot read ${path}: ${isSystemError(e) ? e.code : errorMessage(e)}`, e);
  } finally {
    closeSync(fd);
  }
}

/** An X25519 private key from a file of base64 text (as `dp-tcp genkey > FILE` writes it). */
export function readPrivateKeyFile(path: string): Buffer {
  const bytes = readSecretFile(path);
  // latin1 keeps every byte as one character, so a binary file cannot turn
  // into a valid key through UTF-8 replacement.
  try {
    return decodeKey(bytes.toString('latin1'));
  } catch (e) {
    throw configError(`${path} does not hold a private key: ${errorMessage(e)}`);
  }
}
