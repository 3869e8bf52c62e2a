// Keys as text and in files, and the genkey/pubkey commands (one spawn each
// way: the functions carry the logic, the spawns prove the wiring and exit codes).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { genkeyText, pubkeyText } from '../../src/cli/keys.js';
import { DpError } from '../../src/errors.js';
import { decodeKey, encodeKey, readPrivateKeyFile, readSecretFile } from '../../src/secure/keys.js';
import { publicKeyOf } from '../../src/secure/primitives.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const root = new URL('../../', import.meta.url).pathname;

// RFC 7748 section 6.1, Alice.
const ALICE_PRIVATE = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
const ALICE_PUBLIC = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex');
const ALICE_PRIVATE_TEXT = ALICE_PRIVATE.toString('base64');
const ALICE_PUBLIC_TEXT = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';

const dir = tempDir('dptcp-keys-');
after(() => removeDir(dir));

function file(name: string, content: string | Buffer, mode: number): string {
  const f = join(dir, name);
  writeFileSync(f, content);
  chmodSync(f, mode);
  return f;
}

function configError(pattern: RegExp, secret?: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof DpError, `expected DpError, got ${String(e)}`);
    assert.equal(e.code, 'ERR_CONFIG');
    assert.equal(e.exitCode, 2);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one line');
    if (secret !== undefined) assert.ok(!e.message.includes(secret), 'no key material in the message');
    return true;
  };
}

describe('key text', () => {
  it('is base64 of 32 bytes, printed as 43 characters (no padding), read with or without the =', () => {
    assert.equal(encodeKey(ALICE_PUBLIC), ALICE_PUBLIC_TEXT.slice(0, 43));
    assert.equal(ALICE_PUBLIC_TEXT.length, 44);
    assert.deepEqual(decodeKey(ALICE_PUBLIC_TEXT), ALICE_PUBLIC, 'as wg prints it');
    assert.deepEqual(decodeKey(ALICE_PUBLIC_TEXT.slice(0, 43)), ALICE_PUBLIC, 'as dp-tcp prints it');
    assert.deepEqual(decodeKey(`  ${ALICE_PUBLIC_TEXT}\r\n`), ALICE_PUBLIC, 'surrounding whitespace ignored');
    assert.throws(() => encodeKey(Buffer.alloc(31)), RangeError);
  });

  it('refuses anything else, without repeating it', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /got 0 characters/],
      [ALICE_PUBLIC_TEXT.slice(0, 42), /got 42 characters/],
      [`${ALICE_PUBLIC_TEXT}A`, /got 45 characters/],
      [ALICE_PUBLIC_TEXT.replace('/', '_'), /not base64/], // base64url is not the format
      [`${ALICE_PUBLIC_TEXT.slice(0, 20)} ${ALICE_PUBLIC_TEXT.slice(21)}`, /not base64/],
      [`${'A'.repeat(43)}A`, /not base64/], // a 44th character that is not the padding
      [`${'A'.repeat(42)}B=`, /malformed last character/], // stray low bits: not a canonical encoding
      [Buffer.alloc(33).toString('base64'), /got 44 characters|not base64|malformed/],
    ];
    for (const [text, pattern] of cases) {
      assert.throws(
        () => decodeKey(text),
        (e: unknown) => {
          assert.ok(e instanceof Error);
          assert.match(e.message, pattern, JSON.stringify(text));
          assert.match(e.message, /a key is 43 characters of base64 \(32 bytes; a trailing '=' may follow\)/);
          if (text.length > 8) assert.ok(!e.message.includes(text.slice(4, 30)), 'no key material in the message');
          return true;
        },
      );
    }
  });
});

describe('secret files', () => {
  it('returns the raw bytes with surrounding ASCII whitespace trimmed', () => {
    const bytes = Buffer.from([0xff, 0x00, 0x41, 0x20, 0xfe]); // not UTF-8: must come back untouched
    const f = file('raw', Buffer.concat([Buffer.from(' \t\n'), bytes, Buffer.from('\r\n\n')]), 0o600);
    assert.deepEqual(readSecretFile(f), bytes);
    assert.deepEqual(readSecretFile(file('owner-ro', 'k', 0o400)), Buffer.from('k'));
  });

  it('refuses a file group or others can read or write, naming it and the fix', () => {
    for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602, 0o666]) {
      const f = file(`open-${mode.toString(8)}`, 'the-secret-value', mode);
      assert.throws(
        () => readSecretFile(f),
        configError(new RegExp(`^${f} can be read or written by group or others \\(mode ${mode.toString(8)}\\): chmod 600 ${f}$`), 'the-secret-value'),
      );
    }
  });

  it('refuses what cannot be read, and what is not a file', () => {
    assert.throws(() => readSecretFile(join(dir, 'missing')), configError(/^cannot read .*missing: ENOENT$/));
    const sub = join(dir, 'a-directory');
    mkdirSync(sub, { mode: 0o700 });
    assert.throws(() => readSecretFile(sub), configError(/a-directory is not a regular file/));
  });

  it('reads a private key file as wg writes it (base64 and a newline)', () => {
    const f = file('alice.key', `${ALICE_PRIVATE_TEXT}\n`, 0o600);
    assert.deepEqual(readPrivateKeyFile(f), ALICE_PRIVATE);
    const bad = file('bad.key', 'not-a-key-but-a-secret\n', 0o600);
    assert.throws(() => readPrivateKeyFile(bad), configError(/bad\.key does not hold a private key: a key is 43 characters .* got 22 characters$/, 'not-a-key'));
    const binary = file('binary.key', Buffer.alloc(32, 0xaa), 0o600);
    assert.throws(() => readPrivateKeyFile(binary), configError(/binary\.key does not hold a private key: .*got 32 characters/));
    assert.throws(() => readPrivateKeyFile(file('open.key', `${ALICE_PRIVATE_TEXT}\n`, 0o644)), configError(/chmod 600/, ALICE_PRIVATE_TEXT));
  });
});

describe('genkey and pubkey', () => {
  it('pubkey gives the RFC 7748 public key of its private key', () => {
    assert.equal(pubkeyText(`${ALICE_PRIVATE_TEXT}\n`), `${ALICE_PUBLIC_TEXT.slice(0, 43)}\n`, 'a padded private key, as wg writes it, is read');
    assert.deepEqual(publicKeyOf(ALICE_PRIVATE), ALICE_PUBLIC);
    assert.throws(() => pubkeyText('hello\n'), configError(/^standard input is not a private key: a key is 43 characters .*got 5 characters$/));
  });

  it('genkey gives a fresh, clamped private key each time', () => {
    const a = genkeyText();
    const b = genkeyText();
    assert.match(a, /^[A-Za-z0-9+/]{43}\n$/);
    assert.notEqual(a, b);
    const k = decodeKey(a);
    assert.equal((k[0] as number) & 7, 0, 'low three bits clear');
    assert.equal((k[31] as number) & 0xc0, 0x40, 'top bit clear, next set');
    assert.match(pubkeyText(a), /^[A-Za-z0-9+/]{43}\n$/);
  });

  const cli = (args: string[], input?: string) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], { cwd: root, input, encoding: 'utf8', timeout: 30_000 });

  it('runs as commands: genkey | pubkey, and a bad key exits 2 with one line', () => {
    const gen = cli(['genkey']);
    assert.equal(gen.status, 0, gen.stderr);
    assert.match(gen.stdout, /^[A-Za-z0-9+/]{43}\n$/);
    assert.equal(gen.stderr, '');
    const pub = cli(['pubkey'], gen.stdout);
    assert.equal(pub.status, 0, pub.stderr);
    assert.equal(pub.stdout, pubkeyText(gen.stdout));
    const vector = cli(['pubkey'], `${ALICE_PRIVATE_TEXT}\n`);
    assert.equal(vector.stdout, `${ALICE_PUBLIC_TEXT.slice(0, 43)}\n`);
    const bad = cli(['pubkey'], 'not a key\n');
    assert.equal(bad.status, 2);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, /^dp-tcp: error: standard input is not a private key: .*\n$/);
    assert.equal(bad.stderr.split('\n').length, 2, 'one line');
  });
});
