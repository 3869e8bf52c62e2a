// RecordArenas: a session seals outgoing records into reused buffers; bytes a
// link keeps (pins) are never sealed over until released.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RECORD_ARENA_IDLE_MS, RecordArenas } from '../../src/core/record-arenas.js';

/** Whether two views share a byte. */
function overlap(a: Buffer, b: Buffer): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

describe('record arenas', () => {
  it('reuses the same arena while nothing holds it', () => {
    const r = new RecordArenas(4, 1 << 20);
    const a = r.alloc(1000) as Buffer;
    const b = r.alloc(2000) as Buffer;
    assert.equal(a.length, 1000);
    assert.equal(b.length, 2000);
    assert.equal(a.buffer, b.buffer, 'same memory');
    assert.deepEqual(r.use, { allocated: 1, pinned: 0 });
  });

  it('a kept record is never sealed over until every pin is released (each release counts once)', () => {
    const r = new RecordArenas(4, 1 << 20);
    const a = r.alloc(1000) as Buffer;
    const pin = r.pinOf(a);
    assert.ok(pin);
    const release1 = pin() as () => void;
    const release2 = pin() as () => void;
    const b = r.alloc(1000) as Buffer;
    assert.equal(overlap(a, b), false, 'placed after the kept record');
    assert.equal(b.buffer, a.buffer, 'in the same arena');
    release1();
    release1();
    assert.equal(overlap(a, r.alloc(1000) as Buffer), false, 'still kept by the other holder');
    release2();
    const c = r.alloc(1000) as Buffer;
    assert.equal(c.buffer, a.buffer);
    assert.equal(c.byteOffset, a.byteOffset, 'nothing kept: the arena starts over');
    assert.deepEqual(r.use, { allocated: 1, pinned: 0 });
  });

  it('records kept by links share the arenas: 40 kept records of 32 KiB, none sealed over another', () => {
    const r = new RecordArenas();
    const kept: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      const b = r.alloc(32 * 1024 + 40);
      assert.ok(b, `record ${i} has room`);
      (r.pinOf(b) as () => () => void)();
      b.fill(i);
      kept.push(b);
    }
    for (let i = 0; i < kept.length; i++) {
      assert.ok((kept[i] as Buffer).every((x) => x === i), `record ${i} intact`);
      for (let j = i + 1; j < kept.length; j++) assert.equal(overlap(kept[i] as Buffer, kept[j] as Buffer), false);
    }
    assert.ok(r.use.allocated <= 3, `in ${r.use.allocated} arenas`);
  });

  it('pins only the buffer it handed out last', () => {
    const r = new RecordArenas(4, 1 << 20);
    const a = r.alloc(100) as Buffer;
    r.alloc(100);
    assert.equal(r.pinOf(a), undefined, 'an older record');
    assert.equal(r.pinOf(Buffer.alloc(100)), undefined, 'a buffer of its own');
  });

  it('is bounded: no buffer when every arena and block is held, or for a record larger than an arena', () => {
    const r = new RecordArenas(2, 4096, 2048, 1024);
    for (let i = 0; i < 2; i++) {
      const b = r.alloc(4096) as Buffer;
      (r.pinOf(b) as () => () => void)();
    }
    assert.equal(r.alloc(2049), undefined, 'every arena held, and larger than the blocks may be');
    const blocks: Buffer[] = [];
    for (let i = 0; i < 2; i++) {
      const b = r.alloc(1000) as Buffer;
      assert.equal(b.length, 1000, `block ${i}`);
      (r.pinOf(b) as () => () => void)();
      blocks.push(b);
    }
    assert.equal(overlap(blocks[0] as Buffer, blocks[1] as Buffer), false);
    assert.equal(r.alloc(10), undefined, 'every block held too');
    assert.equal(new RecordArenas(2, 4096).alloc(4097), undefined);
    assert.deepEqual(r.use, { allocated: 2, pinned: 2 });
    assert.deepEqual(r.blockUse, { allocated: 2, pinned: 2, bytes: 2048 });
  });

  it('a block is reused once no link holds it, and one never pinned at the next record', () => {
    const r = new RecordArenas(1, 4096, 4096, 1024);
    const release = (r.pinOf(r.alloc(4096) as Buffer) as () => () => void)();
    const a = r.alloc(500) as Buffer;
    const releaseA = (r.pinOf(a) as () => () => void)();
    const b = r.alloc(600) as Buffer; // written at once by every link: never pinned
    assert.notEqual(b.buffer, a.buffer);
    const c = r.alloc(700) as Buffer;
    assert.equal(c.buffer, b.buffer, 'the unpinned block again');
    assert.equal(c.length, 700);
    releaseA();
    assert.equal((r.alloc(100) as Buffer).buffer, a.buffer, 'the released block again');
    assert.deepEqual(r.blockUse, { allocated: 2, pinned: 0, bytes: 2048 });
    r.trim(0);
    r.trim(RECORD_ARENA_IDLE_MS);
    assert.deepEqual(r.blockUse, { allocated: 0, pinned: 0, bytes: 0 }, 'an idle session lets go of its blocks');
    release();
  });

  it('larger records get blocks in multiples of the size, the smallest that fits, within one budget', () => {
    const r = new RecordArenas(1, 8192, 4096, 1024);
    const release = (r.pinOf(r.alloc(8192) as Buffer) as () => () => void)();
    const pinned = (bytes: number): { buf: Buffer; release: () => void } => {
      const buf = r.alloc(bytes) as Buffer;
      assert.equal(buf.length, bytes);
      return { buf, release: (r.pinOf(buf) as () => () => void)() as () => void };
    };
    const small = pinned(1000);
    const large = pinned(2500); // a block of 3072
    assert.deepEqual(r.blockUse, { allocated: 2, pinned: 2, bytes: 4096 });
    assert.equal(r.alloc(100), undefined, 'the budget is spent, and every block held');
    small.release();
    large.release();
    assert.equal((r.alloc(900) as Buffer).buffer, small.buf.buffer, 'the smallest block that fits');
    assert.equal((r.alloc(1500) as Buffer).buffer, large.buf.buffer);
    const held = pinned(3000);
    assert.equal(held.buf.buffer, large.buf.buffer);
    assert.equal(r.alloc(2000), undefined, 'no room for 2048 beside the held 3072, even without the free 1024');
    held.release();
    // 4096 wanted: both free blocks are given up for it.
    const whole = pinned(3500);
    assert.notEqual(whole.buf.buffer, small.buf.buffer);
    assert.notEqual(whole.buf.buffer, large.buf.buffer);
    assert.deepEqual(r.blockUse, { allocated: 1, pinned: 1, bytes: 4096 });
    whole.release();
    release();
  });

  it('a link that keeps every other record (it drains at half the rate) is served without buffers of their own', () => {
    // Duplicate mode under load: the slower link keeps a record whenever its 4 MiB queue has room
    // again and drops the others, so the records it keeps lie scattered over every arena.
    const run = (r: RecordArenas): number => {
      const RECORD = 64_818;
      const QUEUE = 4 * 1024 * 1024;
      const queue: Array<{ bytes: number; release: () => void }> = [];
      let queued = 0;
      let credit = 0;
      let outside = 0;
      for (let i = 0; i < 2000; i++) {
        const b = r.alloc(RECORD);
        if (b === undefined) {
          outside++;
          continue;
        }
        // The faster link writes it at once; the slower keeps it if it has room.
        if (queued + RECORD <= QUEUE) {
          queue.push({ bytes: RECORD, release: (r.pinOf(b) as () => () => void)() as () => void });
          queued += RECORD;
        }
        credit += RECORD / 2;
        while (queue.length > 0 && (queue[0] as { bytes: number }).bytes <= credit) {
          const q = queue.shift() as { bytes: number; release: () => void };
          credit -= q.bytes;
          queued -= q.bytes;
          q.release();
        }
      }
      return outside;
    };
    assert.ok(run(new RecordArenas(4, undefined, 0)) > 100, 'arenas alone run out (the test would catch their return)');
    assert.equal(run(new RecordArenas()), 0, 'records sealed outside the arenas and blocks');
  });

  it('replaces a free arena too small for a larger record', () => {
    const r = new RecordArenas(1, 1 << 20);
    r.alloc(100);
    const big = r.alloc(300_000) as Buffer;
    assert.equal(big.length, 300_000);
    assert.deepEqual(r.use, { allocated: 1, pinned: 0 });
  });

  it('an arena taken up again after a full one starts at its beginning, and records start on 64-byte boundaries', () => {
    const r = new RecordArenas(2, 4096);
    const a = r.alloc(1000) as Buffer;
    const releaseA = (r.pinOf(a) as () => () => void)();
    const b = r.alloc(1000) as Buffer;
    assert.equal(b.buffer, a.buffer);
    assert.equal(b.byteOffset - a.byteOffset, 1024, 'after the kept record, on the next 64-byte boundary');
    const releaseB = (r.pinOf(b) as () => () => void)();
    const c = r.alloc(2048) as Buffer;
    assert.equal(c.buffer, a.buffer, 'an exact fit stays in the arena');
    assert.equal(c.byteOffset - a.byteOffset, 2048);
    const releaseC = (r.pinOf(c) as () => () => void)();
    const d = r.alloc(3000) as Buffer; // the first is full and kept: a second arena
    assert.notEqual(d.buffer, a.buffer);
    assert.equal(d.length, 3000);
    const releaseD = (r.pinOf(d) as () => () => void)();
    releaseA();
    releaseB();
    releaseC();
    // The second is current and kept; the first is free again, with its fill at 4096 from before.
    const e = r.alloc(3500) as Buffer;
    assert.equal(e.buffer, a.buffer, 'the free arena is taken up again');
    assert.equal(e.byteOffset - a.byteOffset, 0, 'from its beginning');
    assert.equal(e.length, 3500, 'the whole record, not what was left after its old fill');
    assert.equal(overlap(e, d), false);
    releaseD();
  });

  it('an idle session lets go of its arenas, except one a link still holds', () => {
    const r = new RecordArenas(4, 4096);
    const held = r.alloc(3000) as Buffer;
    const release = (r.pinOf(held) as () => () => void)();
    r.alloc(3000);
    assert.deepEqual(r.use, { allocated: 2, pinned: 1 }, 'no room after the kept record: a second arena');
    r.trim(0);
    r.trim(RECORD_ARENA_IDLE_MS - 1);
    assert.deepEqual(r.use, { allocated: 2, pinned: 1 }, 'not idle long enough');
    r.trim(RECORD_ARENA_IDLE_MS);
    assert.deepEqual(r.use, { allocated: 1, pinned: 1 }, 'the free one is gone, the held one stays');
    release();
    const next = r.alloc(500) as Buffer;
    assert.equal(next.length, 500);
    assert.equal(next.buffer, held.buffer, 'the released arena is used again');
    assert.equal(next.byteOffset - held.byteOffset, 0, 'from its beginning');
    // A session that keeps sealing keeps its arenas.
    for (let t = 0; t <= 5 * RECORD_ARENA_IDLE_MS; t += 100) {
      r.alloc(100);
      r.trim(RECORD_ARENA_IDLE_MS + t);
    }
    assert.equal(r.use.allocated, 1);
  });
});
