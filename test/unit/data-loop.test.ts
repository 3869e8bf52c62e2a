// The addon's data loop (native/watch.h, src/core/data-loop.ts): while it is
// on, a natively read link's packets are handled in its own wait, and
// everything else Node's loop has (timers, immediates, Node's own sockets,
// also while a watched socket never stops being readable) still runs as soon
// as it would without it. Real TCP over loopback; needs the built addon.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { dataLoopInfo, holdDataLoop } from '../../src/core/data-loop.js';
import type { Link, LinkHandler } from '../../src/core/link.js';
import { FrameType, writeDataHeader } from '../../src/protocol/frame.js';
import { until } from '../helpers/harness.js';
import { socketPair, upLink } from '../helpers/loopback.js';

class Counter implements LinkHandler {
  frames = 0;
  bytes = 0;
  onFrame(_link: Link, type: FrameType, _buf: Buffer, start: number, end: number): void {
    if (type !== FrameType.Data) return;
    this.frames++;
    this.bytes += end - start;
  }
  onChunkEnd(): void {}
  onClose(): void {}
}

function data(seq: number, bytes: number): Buffer {
  const f = Buffer.alloc(16 + bytes, 7);
  writeDataHeader(f, 0, seq, bytes);
  return f;
}

// A process that connects to port argv[1] and writes the frame of hex argv[2] as fast as the
// socket takes it (in writes of 4096 frames).
const STREAM_WRITER = `
const s = require('node:net').connect(Number(process.argv[1]), '127.0.0.1');
const f = Buffer.concat(new Array(4096).fill(Buffer.from(process.argv[2], 'hex')));
const pump = () => { while (s.write(f)); };
s.on('connect', pump).on('drain', pump).on('error', () => process.exit(0));
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Milliseconds that `n` of `step` take one after the other. */
async function timeOf(n: number, step: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await step();
  return performance.now() - t0;
}

/** A JavaScript echo over a socket pair of Node's own: one round trip per call. */
async function echo(): Promise<{ trip: () => Promise<void>; close: () => void }> {
  const p = await socketPair();
  p.b.on('data', (d: Buffer) => p.b.write(d));
  const trip = (): Promise<void> =>
    new Promise((resolve) => {
      p.a.once('data', () => resolve());
      p.a.write('x');
    });
  return {
    trip,
    close: () => {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    },
  };
}

describe('the data loop', () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  async function linked(): Promise<{ a: Socket; counter: Counter }> {
    const p = await socketPair();
    const counter = new Counter();
    const link = upLink(p.b, counter);
    assert.equal(link.readsNatively, true);
    cleanups.push(() => {
      p.a.destroy();
      p.b.destroy();
      p.server.close();
    });
    return { a: p.a, counter };
  }

  it('reads a natively read link in its own wait while held, and leaves it to libuv once let go', async () => {
    const { a, counter } = await linked();
    const release = holdDataLoop();
    cleanups.push(release);
    const before = dataLoopInfo();
    assert.ok(before !== null && before.on, 'on while held');
    assert.ok(before.watched >= 1, 'the link is watched');
    for (let seq = 1; seq <= 40; seq++) {
      a.write(data(seq, 100));
      await sleep(2);
    }
    await until(() => counter.frames === 40, 'all 40 frames', 5000);
    const held = dataLoopInfo()!;
    // Each frame came while the process waited: most of them in the data loop's wait.
    assert.ok(held.wakeups - before.wakeups >= 20, `woken ${held.wakeups - before.wakeups} times for 40 frames`);
    // libuv's descriptor is ready along with each frame's (its set holds the link too); once the
    // frame is read the next wait does not report it, so libuv's set is rarely looked into.
    const looks = held.looks - before.looks;
    assert.ok(looks < (held.wakeups - before.wakeups) / 2, `looked into libuv's set ${looks} times in ${held.wakeups - before.wakeups} wake-ups`);
    release();
    assert.equal(dataLoopInfo()!.on, false);
    for (let seq = 41; seq <= 60; seq++) {
      a.write(data(seq, 100));
      await sleep(2);
    }
    await until(() => counter.frames === 60, 'the frames sent after it was let go', 5000);
    assert.equal(dataLoopInfo()!.wakeups, held.wakeups, 'none read in its wait once off');
  });

  it('holders count: on until the last lets go; a second release is a no-op', () => {
    const r1 = holdDataLoop();
    const r2 = holdDataLoop();
    r1();
    r1();
    assert.equal(dataLoopInfo()!.on, true);
    r2();
    assert.equal(dataLoopInfo()!.on, false);
  });

  it('timers, immediates and Node sockets run as soon as without it, idle link or busy', async () => {
    await linked();
    const e = await echo();
    cleanups.push(e.close);
    const release = holdDataLoop();
    cleanups.push(release);
    // Were any of them left to the data loop's 20 ms turn, 50 of them would take a second.
    const timers = await timeOf(50, () => sleep(1));
    const immediates = await timeOf(50, () => new Promise((r) => setImmediate(r)));
    const trips = await timeOf(50, e.trip);
    assert.ok(timers < 500, `50 timers of 1 ms took ${timers.toFixed(0)} ms`);
    assert.ok(immediates < 500, `50 immediates took ${immediates.toFixed(0)} ms`);
    assert.ok(trips < 500, `50 echoes took ${trips.toFixed(0)} ms`);
  });

  it("a watched socket that is always readable does not keep Node's own sockets waiting", async () => {
    // Another process keeps the link's socket full: each of the data loop's waits finds it
    // readable, and libuv's descriptor ready with it.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    const port = (server.address() as AddressInfo).port;
    const writer = spawn(process.execPath, ['-e', STREAM_WRITER, String(port), data(0, 100).toString('hex')], { stdio: 'ignore' });
    const [b] = await accepted;
    cleanups.push(() => {
      writer.kill('SIGKILL');
      b.destroy();
      server.close();
    });
    const counter = new Counter();
    assert.equal(upLink(b, counter).readsNatively, true);
    const e = await echo();
    cleanups.push(e.close);
    const release = holdDataLoop();
    cleanups.push(release);
    await until(() => counter.frames > 1000, 'the stream flowing', 5000);
    const framesBefore = counter.frames;
    const trips = await timeOf(20, e.trip);
    // Left to the data loop's 20 ms turns, 20 echoes would take 400 ms (measured here: 11-15 ms,
    // and 52-56 ms when libuv's set is never looked at).
    assert.ok(trips < 200, `20 echoes beside an always readable watched socket took ${trips.toFixed(0)} ms`);
    assert.ok(counter.frames > framesBefore, 'the stream kept flowing meanwhile');
  });
});
