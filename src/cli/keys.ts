// `dp-tcp genkey` and `dp-tcp pubkey`: the same text in and out as `wg genkey`
// and `wg pubkey`, so keys move between the two tools (and their habits:
// `umask 077; dp-tcp genkey | tee server.key | dp-tcp pubkey > server.pub`).
import { fstatSync } from 'node:fs';
import { DpError, errorMessage } from '../errors.js';
import { decodeKey, encodeKey, KEY_TEXT_CHARS } from '../secure/keys.js';
import { generatePrivateKey, publicKeyOf } from '../secure/primitives.js';

/** A new private key as one line of base64. */
export function genkeyText(): string {
  return `${encodeKey(generatePrivateKey())}\n`;
}

/** The public key line for a private key given as text (surrounding whitespace ignored). */
export function pubkeyText(privateKeyText: string): string {
  let priv: Buffer;
  try {
    priv = decodeKey(privateKeyText);
  } catch (e) {
    throw new DpError('ERR_CONFIG', `standard input is not a private key: ${errorMessage(e)}`, { exitCode: 2 });
  }
  return `${encodeKey(publicKeyOf(priv))}\n`;
}

/** Enough for a key and any whitespace around it; more is certainly not a key. */
const STDIN_MAX_BYTES = 4096;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > STDIN_MAX_BYTES) {
      throw new DpError('ERR_CONFIG', `standard input is not a private key: expected ${KEY_TEXT_CHARS} characters, got more than ${STDIN_MAX_BYTES} bytes`, { exitCode: 2 });
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('latin1');
}

export function genkey(): void {
  // As `wg genkey`: a key written straight into a file others can read is
  // worth a warning (it is still written; the user asked for it).
  try {
    const st = fstatSync(1);
    if (st.isFile() && (st.mode & 0o077) !== 0) {
      process.stderr.write('dp-tcp: warning: writing a private key to a file that group or others can read (run umask 077 first, or chmod 600 it)\n');
    }
  } catch {
    // No stat of stdout: nothing to warn about.
  }
  process.stdout.write(genkeyText());
}

export async function pubkey(): Promise<void> {
  process.stdout.write(pubkeyText(await readStdin()));
}
