// Random and mutated frames through the real decoder and every body decoder.
// CI runs a bounded number of cases; `npm run fuzz` runs a million
// (DPTCP_FUZZ_CASES sets the count, DPTCP_FUZZ_SEED the seed).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import {
  CloseCode,
  decodeClose,
  encodeClose,
  encodeData,
  encodeLinkDown,
  encodeToken,
  forEachFrame,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
} from '../../src/protocol/frame.js';
import { decodeHello, decodeWelcome, encodeHello, encodeWelcome, type LinkIntro } from '../../src/protocol/handshake.js';
import { Initiator, Responder } from '../../src/secure/handshake.js';
import { KeyRing } from '../../src/secure/keypair.js';
import { keyedPair } from '../helpers/identities.js';
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

// A real handshake, so that the corpus holds genuine INITIATION, RESPONSE, COOKIE and SEALED frames.
const { serverId, clientId } = keyedPair();
const intro: LinkIntro = {
  sessionId: randomBytes(16),
  encryption: 'chacha20-poly1305',
  offload: true,
  mode: 'duplicate',
  linkId: 1,
  linkCount: 2,
  addresses: [
    { family: 4, address: '10.0.0.2', prefix: 24 },
    { family: 6, address: 'fd00::2', prefix: 64 },
  ],
};
const responder = new Responder(serverId);
const source = Buffer.from([10, 0, 1, 2]);
const body = (f: Buffer): [Buffer, number, number] => [f, FRAME_HEADER_BYTES, f.length];
const initiator = new Initiator(clientId);
const initiation = initiator.initiation(intro);
const read = responder.read(...body(initiation));
const { frame: response, keypair: serverKeypair } = responder.respond(read, randomBytes(8), 1, () => false);
const cookie = responder.cookieReply(...body(initiation), source);
const clientKeypair = initiator.response(...body(response)).keypair;
const ring = new KeyRing();
ring.add(serverKeypair);

const corpus: Buffer[] = [
  encodeHello({ ...intro, encryption: 'none' }),
  encodeWelcome({ epoch: randomBytes(8), linkId: 0 }),
  initiation,
  response,
  cookie,
  encodeData(12345, numbered(7)),
  encodeToken(FrameType.Ping, 99),
  encodeToken(FrameType.Pong, 99),
  encodeClose(CloseCode.ProtocolError, 'why'),
  encodeLinkDown(1),
  clientKeypair.seal(Buffer.concat([encodeData(1, numbered(1)), encodeToken(FrameType.Ping, 5)])),
  clientKeypair.seal(encodeClose(CloseCode.Shutdown, 'bye')),
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
    case FrameType.Initiation:
      responder.precheck(buf, start, end, source, rnd(2) === 0);
      // Past mac1 too: the Noise message and the intro must refuse garbage by themselves.
      responder.read(buf, start, end);
      break;
    case FrameType.Response: {
      const init = new Initiator(clientId);
      init.initiation(intro);
      init.response(buf, start, end);
      break;
    }
    case FrameType.Cookie:
      initiator.cookie(buf, start, end);
      break;
    case FrameType.Close:
      decodeClose(buf, start, end);
      break;
    case FrameType.Sealed: {
      const opened = ring.open(buf, start, end, 0);
      if (typeof opened !== 'string') forEachFrame(opened.plain, 66_000, consume);
      break;
    }
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

  it('a SEALED record with any single byte changed is refused, or dropped as unknown: never delivered', () => {
    const good = clientKeypair.seal(encodeData(9, numbered(9)));
    for (let i = 4; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] = (bad[i] as number) ^ (1 + rnd(255));
      const r = new KeyRing();
      r.add(serverKeypair);
      let verdict: string;
      try {
        const o = r.open(...body(bad), 0);
        verdict = typeof o === 'string' ? o : 'delivered';
      } catch (e) {
        assert.ok(e instanceof ProtocolError, `byte ${i}: ${String(e)}`);
        verdict = 'refused';
      }
      assert.notEqual(verdict, 'delivered', `byte ${i}`);
    }
  });
});
