import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import {
  decodeClose,
  encodeClose,
  encodeData,
  encodeFrame,
  encodeLinkDown,
  encodeToken,
  FrameDecoder,
  forEachFrame,
  frameAfter,
  sanitizeText,
  FrameType,
  readU64,
  writeU64,
  CloseCode,
} from '../../src/protocol/frame.js';
import { numbered } from '../helpers/packets.js';

interface Got {
  type: number;
  body: Buffer;
}

function decoder(max = 65_560): { d: FrameDecoder; got: Got[] } {
  const got: Got[] = [];
  const d = new FrameDecoder(max, (type, buf, start, end) => got.push({ type, body: Buffer.from(buf.subarray(start, end)) }));
  return { d, got };
}

/** A stream of mixed frames and what the decoder must report for it. */
function sampleStream(): { stream: Buffer; expected: Got[] } {
  const frames: Array<[FrameType, Buffer]> = [];
  for (let i = 1; i <= 20; i++) {
    const p = numbered(i, '10.0.0.2', '10.0.0.1', 28 + ((i * 37) % 1400));
    frames.push([FrameType.Data, encodeData(i, p)]);
    if (i % 7 === 0) frames.push([FrameType.Ping, encodeToken(FrameType.Ping, i * 1000)]);
  }
  frames.push([FrameType.Close, encodeClose(CloseCode.Shutdown, 'bye')]);
  return {
    stream: Buffer.concat(frames.map((f) => f[1])),
    expected: frames.map(([type, f]) => ({ type, body: f.subarray(8) })),
  };
}

describe('FrameDecoder', () => {
  it('decodes merged frames from one chunk', () => {
    const { stream, expected } = sampleStream();
    const { d, got } = decoder();
    d.push(stream);
    assert.deepEqual(got, expected);
    assert.equal(d.bufferedBytes, 0);
  });

  it('decodes the same stream split at every byte position', () => {
    const { stream, expected } = sampleStream();
    for (let cut = 1; cut < stream.length; cut += 1) {
      const { d, got } = decoder();
      d.push(stream.subarray(0, cut));
      d.push(stream.subarray(cut));
      assert.deepEqual(got, expected, `split at ${cut}`);
    }
  });

  it('decodes a stream fed one byte at a time', () => {
    const { stream, expected } = sampleStream();
    const { d, got } = decoder();
    for (let i = 0; i < stream.length; i++) d.push(stream.subarray(i, i + 1));
    assert.deepEqual(got, expected);
  });

  it('decodes random chunkings (seeded)', () => {
    const { stream, expected } = sampleStream();
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const { d, got } = decoder();
      let off = 0;
      while (off < stream.length) {
        const n = 1 + rnd(3000);
        d.push(stream.subarray(off, off + n));
        off += n;
      }
      assert.deepEqual(got, expected, `round ${round}`);
    }
  });

  it('keeps the bytes of a frame received whole as a view (no copy)', () => {
    const frame = encodeData(7, numbered(7));
    const views: Buffer[] = [];
    const d = new FrameDecoder(65_560, (_t, buf, s, e) => views.push(buf.subarray(s, e)));
    d.push(frame);
    assert.equal(views[0]?.buffer, frame.buffer);
  });

  it('rejects a length over the maximum before buffering it', () => {
    const { d } = decoder(2000);
    const head = Buffer.alloc(8);
    head.writeUInt32BE(2001, 0);
    assert.throws(() => d.push(head), (e: unknown) => e instanceof ProtocolError && /exceeds the maximum/.test(e.message));
  });

  it('rejects an oversized length split across chunks', () => {
    const { d } = decoder(2000);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(0xffffffff, 0);
    d.push(head.subarray(0, 2));
    assert.throws(() => d.push(head.subarray(2)), ProtocolError);
  });

  it('rejects lengths shorter than a header, bad versions and unknown types', () => {
    const short = Buffer.from([0, 0, 0, 3, 1, 3, 0]);
    assert.throws(() => decoder().d.push(short), /shorter than a frame header/);
    const v1 = encodeToken(FrameType.Ping, 1);
    v1[4] = 1;
    assert.throws(() => decoder().d.push(v1), /unsupported protocol version 1/);
    const t9 = encodeToken(FrameType.Ping, 1);
    t9[5] = 99;
    assert.throws(() => decoder().d.push(t9), /unknown frame type 99/);
  });

  it('walks the inner frames of a record, checking every length against what is left', () => {
    const seen: number[] = [];
    const two = Buffer.concat([encodeData(1, Buffer.alloc(20)), encodeToken(FrameType.Ping, 2)]);
    forEachFrame(two, 66_000, (t) => seen.push(t));
    assert.deepEqual(seen, [FrameType.Data, FrameType.Ping]);
    const huge = Buffer.from(two);
    huge.writeUInt32BE(0xffff_fff0, 0);
    assert.throws(() => forEachFrame(huge, 66_000, () => {}), /out of range/);
    assert.throws(() => forEachFrame(two.subarray(0, two.length - 3), 66_000, () => {}), /runs past the end/);
    assert.throws(() => forEachFrame(two.subarray(0, 30), 66_000, () => {}), /runs past the end|inside a frame header/);
    forEachFrame(Buffer.alloc(0), 66_000, () => assert.fail('an empty record holds no frame'));
  });

  it('sanitizes a peer text before it is logged', () => {
    assert.equal(sanitizeText('a\nb\u001b[31mc\u202ed'), 'a?b?[31mc?d');
    assert.equal(sanitizeText('x'.repeat(300)).length, 201);
    const f = encodeClose(CloseCode.Shutdown, 'bye\r\nFAKE LOG LINE');
    assert.equal(decodeClose(f, 8, f.length).reason, 'bye??FAKE LOG LINE');
  });

  it('cuts a long CLOSE reason before a character, never inside one', () => {
    // 199 ASCII bytes, then 'é' (2 bytes) across the 200-byte bound: it goes whole or not at all.
    const f = encodeClose(CloseCode.Shutdown, `${'x'.repeat(199)}é and more`);
    const body = f.subarray(8 + 4);
    assert.equal(body.length, 199);
    assert.equal(Buffer.from(body.toString('utf8'), 'utf8').length, body.length, 'valid UTF-8');
    const g = encodeClose(CloseCode.Shutdown, '€'.repeat(100)); // 3 bytes each: 66 whole ones fit
    assert.equal(decodeClose(g, 8, g.length).reason, '€'.repeat(66));
  });

  it('rejects frames whose body is too short for their type', () => {
    assert.throws(() => decoder().d.push(encodeFrame(FrameType.Data, Buffer.alloc(8))), /DATA frame body/);
    assert.throws(() => decoder().d.push(encodeFrame(FrameType.Ping, Buffer.alloc(7))), /PING frame body/);
    assert.throws(() => decoder().d.push(encodeFrame(FrameType.Hello, Buffer.alloc(3))), /HELLO frame body/);
  });

  it('reset() forgets a partial frame', () => {
    const frame = encodeData(1, numbered(1));
    const { d, got } = decoder();
    d.push(frame.subarray(0, 10));
    d.reset();
    assert.equal(d.bufferedBytes, 0);
    d.push(frame);
    assert.equal(got.length, 1);
  });

  it('holds a truncated frame without emitting it', () => {
    const frame = encodeData(1, numbered(1));
    const { d, got } = decoder();
    d.push(frame.subarray(0, frame.length - 1));
    assert.equal(got.length, 0);
    assert.equal(d.bufferedBytes, frame.length - 1);
  });

  it('says what it needs to finish the frame it holds part of (the native reader hands it that first)', () => {
    const frame = encodeData(1, numbered(1));
    const { d, got } = decoder();
    assert.equal(d.needBytes, 0, 'nothing held');
    d.push(frame.subarray(0, 2));
    assert.equal(d.needBytes, -1, 'part of the length field: not known yet');
    d.push(frame.subarray(2, 10));
    assert.equal(d.needBytes, frame.length - 10);
    d.push(frame.subarray(10, frame.length - 3));
    assert.equal(d.needBytes, 3);
    d.push(frame.subarray(frame.length - 3));
    assert.equal(got.length, 1);
    assert.equal(d.needBytes, 0, 'whole again');
  });

  it('survives random garbage: it throws ProtocolError or waits, never anything else', () => {
    let seed = 99;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed & 0xff;
    };
    for (let i = 0; i < 2000; i++) {
      const junk = Buffer.alloc(1 + (i % 64), 0);
      for (let j = 0; j < junk.length; j++) junk[j] = rnd();
      try {
        decoder(4096).d.push(junk);
      } catch (e) {
        assert.ok(e instanceof ProtocolError, `unexpected ${String(e)}`);
      }
    }
  });
});

describe('frame encoders', () => {
  it('carries u64 sequence numbers up to 2^53 exactly', () => {
    const b = Buffer.alloc(8);
    for (const v of [0, 1, 2 ** 31 - 1, 2 ** 31, 0xffffffff, 0x1_0000_0000, 0x1_0000_0001, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER]) {
      writeU64(b, 0, v);
      assert.equal(readU64(b, 0), v);
    }
  });

  it('DATA frames carry seq and the packet unchanged', () => {
    const p = numbered(42);
    const f = encodeData(2 ** 33 + 1, p);
    assert.equal(f.readUInt32BE(0), f.length - 4);
    assert.equal(readU64(f, 8), 2 ** 33 + 1);
    assert.deepEqual(f.subarray(16), p);
  });

  it('LINKDOWN carries the link id', () => {
    const f = encodeLinkDown(3);
    const { d, got } = decoder();
    d.push(f);
    assert.equal(got[0]?.type, FrameType.LinkDown);
    assert.equal(got[0]?.body.readUInt16BE(0), 3);
  });

  it('CLOSE reasons are truncated to 200 bytes', () => {
    const f = encodeClose(CloseCode.ProtocolError, 'x'.repeat(500));
    const c = decodeClose(f, 8, f.length);
    assert.equal(c.code, CloseCode.ProtocolError);
    assert.equal(c.reason.length, 200);
  });
});

describe('frameAfter (where a partial send may cut a run of frames)', () => {
  const run = Buffer.concat([encodeData(1, Buffer.alloc(100)), encodeData(2, Buffer.alloc(10)), encodeToken(FrameType.Ping, 7), encodeData(3, Buffer.alloc(50))]);
  const ends = [116, 142, 142 + encodeToken(FrameType.Ping, 7).length, run.length];

  it('gives the end of the frame holding a byte, and how many whole frames follow', () => {
    assert.deepEqual(frameAfter(run, 0), { end: ends[0], following: 3 }, 'nothing taken: the first frame');
    assert.deepEqual(frameAfter(run, 115), { end: ends[0], following: 3 }, 'the last byte of the first frame');
    assert.deepEqual(frameAfter(run, 116), { end: ends[1], following: 2 }, 'the first byte of the second');
    assert.deepEqual(frameAfter(run, (ends[2] as number) + 1), { end: run.length, following: 0 }, 'inside the last frame');
  });

  it('bytes that are not a run of whole frames are never cut', () => {
    assert.deepEqual(frameAfter(run.subarray(0, run.length - 1), 0), { end: run.length - 1, following: 0 }, 'the last frame cut short');
    assert.deepEqual(frameAfter(Buffer.alloc(1000), 0), { end: 1000, following: 0 }, 'a zero length (no frame is that short)');
    assert.deepEqual(frameAfter(Buffer.from('bulk0'), 0), { end: 5, following: 0 }, 'a length past the end');
    assert.deepEqual(frameAfter(Buffer.alloc(3), 0), { end: 3, following: 0 }, 'shorter than a length');
  });
});
