// A link's socket is read by the addon into one buffer shared by every link
// and reused for every read, in place of Node's stream reader. What a read
// delivers is valid until the end of its chunk (onChunkEnd), as a session
// uses it: it batches the accepted packets of a chunk and writes them then.
// Real TCP over loopback; needs the built addon.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Link, type LinkHandler } from '../../src/core/link.js';
import { encodeFrame, FrameType, writeDataHeader } from '../../src/protocol/frame.js';
import { loadAddon } from '../../src/tun/loader.js';
import { until } from '../helpers/harness.js';
import { socketPair, upLink } from '../helpers/loopback.js';

/** A handler that keeps views of a chunk's DATA frames until the chunk ends, as a session does, then checks and counts them. */
class Collector implements LinkHandler {
  pending: Buffer[] = [];
  seqs: number[] = [];
  bad = 0;
  closed: string | undefined;
  onFrame(_link: Link, type: FrameType, buf: Buffer, start: number, end: number): void {
    if (type === FrameType.Data) this.pending.push(buf.subarray(start, end));
  }
  onChunkEnd(): void {
    for (const f of this.pending) {
      const seq = f.readUInt32BE(4);
      // Every payload byte is its sequence number's low byte: any overwrite shows.
      for (let i = 8; i < f.length; i++) if (f[i] !== (seq & 0xff)) this.bad++;
      this.seqs.push(seq);
    }
    this.pending = [];
  }
  onClose(_link: Link, reason: string): void {
    this.closed = reason;
  }
}

/** DATA frame number `seq` with `bytes` payload bytes, each the low byte of seq. */
function data(seq: number, bytes: number): Buffer {
  const f = Buffer.alloc(16 + bytes, seq & 0xff);
  writeDataHeader(f, 0, seq, bytes);
  return f;
}

describe('native socket reads', () => {
  it('the addon has SocketReader, and a link over a real socket uses it', async () => {
    assert.equal(typeof loadAddon().SocketReader, 'function');
    const p = await socketPair();
    try {
      assert.equal(upLink(p.b, new Collector()).readsNatively, true);
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });

  it('frames split anywhere across reads arrive intact and in order, held until their chunk ends', async () => {
    const p = await socketPair();
    const c = new Collector();
    upLink(p.b, c);
    try {
      // Sizes that make frames straddle reads, and chunks that complete one gathered frame and start the next.
      const frames: Buffer[] = [];
      for (let seq = 1; seq <= 3000; seq++) frames.push(data(seq, [1, 700, 1400, 9000, 65_000][seq % 5] as number));
      const stream = Buffer.concat(frames);
      let off = 0;
      let cut = 1;
      while (off < stream.length) {
        cut = (cut * 7919 + 13) % 150_000; // 0..150 kB pieces, some of one or two bytes
        const piece = stream.subarray(off, Math.min(stream.length, off + Math.max(1, cut % 5 === 0 ? cut % 3 : cut)));
        off += piece.length;
        if (!p.a.write(piece)) await new Promise((r) => p.a.once('drain', r));
      }
      await until(() => c.seqs.length === 3000, 'all frames', 10_000);
      assert.equal(c.bad, 0, 'no payload byte overwritten before its chunk ended');
      assert.deepEqual(c.seqs, Array.from({ length: 3000 }, (_, i) => i + 1));
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });

  it('a peer that closes: the link closes, and so does the connection (the reader gives its descriptor back)', async () => {
    const p = await socketPair();
    const c = new Collector();
    upLink(p.b, c);
    let peerEnded = false;
    p.a.on('end', () => (peerEnded = true));
    p.a.resume();
    try {
      p.a.end(data(7, 10));
      await until(() => c.closed !== undefined, 'link closed', 3000);
      assert.equal(c.closed, 'peer closed the connection');
      assert.deepEqual(c.seqs, [7], 'what came before the close was delivered');
      await until(() => peerEnded, 'the peer saw our side close', 3000);
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });

  it('a reset connection closes the link', async () => {
    const p = await socketPair();
    const c = new Collector();
    upLink(p.b, c);
    try {
      p.a.resetAndDestroy();
      await until(() => c.closed !== undefined, 'link closed', 3000);
      assert.equal(p.b.destroyed, true);
    } finally {
      p.server.close();
    }
  });

  it('a reset connection is reported as ECONNRESET, as Node reports it (not as EBADF, libuv\'s word for any poll error)', async () => {
    const p = await socketPair();
    const c = new Collector();
    let code: string | undefined;
    p.b.on('error', (e: NodeJS.ErrnoException) => (code = e.code));
    upLink(p.b, c);
    try {
      p.a.resetAndDestroy();
      await until(() => c.closed !== undefined && p.b.destroyed, 'link closed', 3000);
      // The dialer's hint for ECONNRESET ('a firewall, or not a dp-tcp server') depends on it.
      assert.equal(code, 'ECONNRESET');
    } finally {
      p.server.close();
    }
  });

  it('a bad frame after good ones in the same read: the good ones are delivered, the link closes', async () => {
    const p = await socketPair();
    const c = new Collector();
    upLink(p.b, c);
    try {
      const bad = encodeFrame(FrameType.Data, Buffer.alloc(12));
      bad[4] = 99; // no such protocol version
      p.a.write(Buffer.concat([data(1, 100), data(2, 100), bad]));
      await until(() => c.closed !== undefined, 'link closed', 3000);
      assert.match(c.closed ?? '', /protocol version/);
      assert.deepEqual(c.seqs, [1, 2]);
      assert.equal(c.bad, 0);
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });

  it('a frame that makes the handler close the link (a CLOSE): what came before it in the read is still handed on at the end of the chunk', async () => {
    const p = await socketPair();
    const c = new Collector();
    const onFrame = c.onFrame.bind(c);
    c.onFrame = (link, type, buf, start, end) => {
      if (type === FrameType.Close) link.destroy('peer closed');
      else onFrame(link, type, buf, start, end);
    };
    upLink(p.b, c);
    try {
      p.a.write(Buffer.concat([data(1, 100), data(2, 100), encodeFrame(FrameType.Close, Buffer.alloc(8))]));
      await until(() => c.closed !== undefined, 'link closed', 3000);
      assert.deepEqual(c.seqs, [1, 2], 'the chunk ended for the frames before the CLOSE');
      assert.equal(c.pending.length, 0);
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });

  it('pauseReading stops reading (the sender backs up) until resumeReading; nothing is lost', async () => {
    const p = await socketPair();
    const c = new Collector();
    const l = upLink(p.b, c);
    try {
      l.pauseReading();
      let seq = 0;
      while (p.a.write(data(++seq, 60_000)) && seq < 2000);
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(seq < 2000, 'the sender backed up');
      assert.equal(c.seqs.length, 0, 'nothing read while paused');
      l.resumeReading();
      await until(() => c.seqs.length === seq, 'all frames after resuming', 10_000);
      assert.equal(c.bad, 0);
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });

  it('a closed reader lets go of its callbacks: a closed link and what it holds can be collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const { SocketReader } = loadAddon();
    const p = await socketPair();
    const collected: string[] = [];
    const registry = new FinalizationRegistry<string>((what) => collected.push(what));
    try {
      // As a link holds its reader and the reader's callbacks hold the link.
      (() => {
        const owner: { reader?: unknown; big: Buffer } = { big: Buffer.alloc(1 << 20) };
        const fd = (p.b as unknown as { _handle: { fd: number } })._handle.fd;
        const reader = new SocketReader(fd, Buffer.alloc(4096), () => (owner.big.length > 0 ? 0 : -1), () => void owner.big);
        owner.reader = reader;
        registry.register(owner, 'owner');
        reader.close();
      })();
      for (let i = 0; i < 20 && collected.length === 0; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(collected, ['owner'], 'the owner of a closed reader was collected');
    } finally {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    }
  });
});
