// Random and mutated frames through the real decoder and every body decoder.
// CI runs a bounded number of cases; `npm run fuzz` runs a million
// (DPTCP_FUZZ_CASES sets the count, DPTCP_FUZZ_SEED the seed).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import { newNonce } from '../../src/protocol/auth.js';
import {
  CloseCode,
  decodeClose,
  encodeClose,
  encodeData,
  encodeLinkDown,
  encodeToken,
  FrameDecoder,
  FrameType,
} from '../../src/protocol/frame.js';
import {
  decodeAuth,
  decodeChallenge,
  decodeHello,
  decodeWelcome,
  encodeAuth,
  encodeChallenge,
  encodeHello,
  encodeWelcome,
} from '../../src/protocol/handshake.js';
import { Opener, Sealer } from '../../src/protocol/seal.js';
import { numbered } from '../helpers/packets.js';

const CASES = Number(process.env['DPTCP_FUZZ_CASES'] ?? 100_000);
let seed = Number(process.env['DPTCP_FUZZ_SEED'] ?? 0x5eed);

function rnd(n: number): number {
  // xorshift32: reproducible from the seed printed on failure
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
}

const key = randomBytes(32);
const opener = new Opener('chacha20-poly1305', key);
const sealer = new Sealer('chacha20-poly1305', key);

const corpus: Buffer[] = [
  encodeHello({
    sessionId: randomBytes(16),
    nonce: newNonce(),
    auth: true,
    encryption: 'chacha20-poly1305',
    offload: true,
    linkId: 1,
    linkCount: 2,
    addresses: [
      { family: 4, address: '10.0.0.2', prefix: 24 },
      { family: 6, address: 'fd00::2', prefix: 64 },
    ],
  }),
  encodeWelcome({ epoch: randomBytes(8), linkId: 0 }),
  encodeChallenge(newNonce(), randomBytes(32)),
  encodeAuth(randomBytes(32)),
  encodeData(12345, numbered(7)),
  encodeToken(FrameType.Ping, 99),
  encodeToken(FrameType.Pong, 99),
  encodeClose(CloseCode.ProtocolError, 'why'),
  encodeLinkDown(1),
  sealer.seal(Buffer.concat([encodeData(1, numbered(1)), encodeToken(FrameType.Ping, 5)])),
];

/** What the roles do with each frame body; only ProtocolError may escape. */
function consume(type: FrameType, buf: Buffer, start: number, end: number): void {
  switch (type) {
    case FrameType.Hello:
      decodeHello(buf, start, end);
      break;
    case FrameType.Welcome:
      decodeWelcome(buf, start, end);
      break;
    case FrameType.Challenge:
      decodeChallenge(buf, start, end);
      break;
    case FrameType.Auth:
      decodeAuth(buf, start, end);
      break;
    case FrameType.Close:
      decodeClose(buf, start, end);
      break;
    case FrameType.Sealed:
      new FrameDecoder(1 << 20, consume).push(opener.open(buf, start, end));
      break;
    default:
      break;
  }
}

function mutate(b: Buffer): Buffer {
  const out = Buffer.from(b);
  switch (rnd(6)) {
    case 0: // flip bytes
      for (let i = 0, n = 1 + rnd(4); i < n; i++) out[rnd(out.length)] = rnd(256);
      return out;
    case 1: // truncate
      return out.subarray(0, rnd(out.length));
    case 2: // junk appended
      return Buffer.concat([out, randomBytesSeeded(1 + rnd(64))]);
    case 3: // length field rewritten
      out.writeUInt32BE(rnd(4) === 0 ? 0xffffffff : rnd(out.length + 64), 0);
      return out;
    case 4: // body bytes zeroed
      out.fill(0, 8 + rnd(Math.max(1, out.length - 8)));
      return out;
    default: // pure noise
      return randomBytesSeeded(1 + rnd(200));
  }
}

function randomBytesSeeded(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = rnd(256);
  return b;
}

describe(`fuzz: ${CASES} mutated streams`, () => {
  it('the decoder and the body decoders throw ProtocolError or nothing', () => {
    const startSeed = seed;
    let rejected = 0;
    for (let c = 0; c < CASES; c++) {
      const parts: Buffer[] = [];
      for (let i = 0, n = 1 + rnd(4); i < n; i++) {
        const base = corpus[rnd(corpus.length)] as Buffer;
        parts.push(rnd(3) === 0 ? base : mutate(base));
      }
      const stream = Buffer.concat(parts);
      const d = new FrameDecoder(4096, consume);
      try {
        // Arbitrary chunking: the verdict must not depend on how TCP split the stream.
        let off = 0;
        while (off < stream.length) {
          const n = 1 + rnd(stream.length);
          d.push(stream.subarray(off, off + n));
          off += n;
        }
      } catch (e) {
        if (!(e instanceof ProtocolError)) {
          assert.fail(`case ${c} (seed ${startSeed}): ${e instanceof Error ? e.stack : String(e)}\nstream ${stream.toString('hex')}`);
        }
        rejected++;
      }
    }
    assert.ok(rejected > CASES / 4, `most mutated streams are rejected (${rejected} of ${CASES})`);
  });

  it('a SEALED frame with any single byte changed is refused by an encrypted session', () => {
    // As Session does: on an encrypted session every frame must be SEALED and authentic.
    const encrypted = (type: FrameType, buf: Buffer, start: number, end: number): void => {
      if (type !== FrameType.Sealed) throw new ProtocolError('unsealed frame on an encrypted session');
      consume(type, buf, start, end);
    };
    const good = sealer.seal(encodeData(9, numbered(9)));
    for (let i = 4; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] = (bad[i] as number) ^ (1 + rnd(255));
      assert.throws(
        () => new FrameDecoder(1 << 20, encrypted).push(bad),
        (e: unknown) => e instanceof ProtocolError,
        `byte ${i}`,
      );
    }
  });
});
