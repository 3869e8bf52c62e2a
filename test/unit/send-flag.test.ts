// The flag that lets the native send path (core/fast-path.ts FastSend) send on
// a link: it may be 1 only while a frame sent now would go straight to the
// socket — the link up, writable, nothing in its queues and nothing in Node's
// stream writer — or the addon's bytes would land in the middle of the
// stream. Checked after every step and on every event-loop turn while a peer
// stops reading and reads again. And what the path hands back (sendRest) and
// counts (foldSend). Real TCP over loopback; needs the built addon.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { performance } from 'node:perf_hooks';
import { setImmediate as turn } from 'node:timers/promises';
import type { Link } from '../../src/core/link.js';
import { encodeData, FrameDecoder, FrameType, readU64 } from '../../src/protocol/frame.js';
import { loadAddon } from '../../src/tun/loader.js';
import { socketPair, upLink } from '../helpers/loopback.js';

const fdOf = (s: Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;

/** What the flag must be 0 for (its private state, read as the test's). */
function mustBeZero(l: Link): string | undefined {
  const x = l as unknown as { writable: boolean; queuedBytes: number; urgentBytes: number };
  if (l.state !== 'up') return 'not up';
  if (!x.writable) return 'not writable';
  if (x.queuedBytes > 0 || x.urgentBytes > 0) return 'frames queued';
  if (l.socket.writableLength > 0) return "bytes in Node's writer";
  if (l.socket.destroyed) return 'destroyed';
  return undefined;
}

/** The peer's frames, decoded (the stream must stay whole). */
function reader(b: Socket): { seqs: number[] } {
  const out = { seqs: [] as number[] };
  const d = new FrameDecoder(66_000, (type, buf, start) => {
    if (type === FrameType.Data) out.seqs.push(readU64(buf, start));
  });
  b.on('data', (c: Buffer) => d.push(c));
  return out;
}

describe('native send flag', () => {
  it('is 1 only while a frame would go straight to the socket, through a stall and its end', async () => {
    const addon = loadAddon();
    const { server, a, b } = await socketPair(true);
    await new Promise((r) => a.once('connect', r));
    addon.setsockoptInt(fdOf(a), addon.constants.SOL_SOCKET, addon.constants.SO_SNDBUF, 16 * 1024);
    const l = upLink(a);
    assert.ok(l.nativeReader !== undefined, 'the link reads natively (the flag needs its reader)');
    const flags = new Uint8Array(1);
    l.bindSend(flags, 0, new Float64Array(2));
    assert.equal(flags[0], 1, 'an idle, writable link');
    const check = (step: string): void => {
      const why = mustBeZero(l);
      if (why !== undefined) assert.equal(flags[0], 0, `${step}: flag 1 with ${why}`);
    };
    let sawZero = false;
    let checking = true;
    // On every turn of the loop, not only after our own calls.
    const watch = (async () => {
      while (checking) {
        check('a loop turn');
        if (flags[0] === 0) sawZero = true;
        await turn();
      }
    })();
    const got = reader(b);
    let seq = 1;
    const packet = Buffer.alloc(1300, 7);
    for (let i = 0; i < 400; i++) {
      l.sendData(encodeData(seq++, packet), 1, performance.now());
      check(`after frame ${seq - 1}`);
      if (i % 20 === 19) await turn();
    }
    assert.ok(sawZero || (flags[0] as number) === 0, 'the stalled link was taken from the native path');
    b.resume();
    for (let i = 0; i < 2000 && (l.queueBytes > 0 || a.writableLength > 0); i++) await new Promise((r) => setTimeout(r, 2));
    assert.equal(l.queueBytes, 0, 'the queue drained');
    for (let i = 0; i < 1000 && (addon.unsentBytes?.(fdOf(a)) ?? 0) > 0; i++) await new Promise((r) => setTimeout(r, 2));
    // A frame sent straight to the socket heals the flag (Node's writer empties without a callback):
    // the next one, or one soon after if the kernel still held the peer's share.
    for (let i = 0; i < 50; i++) {
      l.sendData(encodeData(seq++, packet), 1, performance.now());
      check('after the stall');
      if (flags[0] === 1) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(flags[0], 1, `back on the native path once nothing waits (${mustBeZero(l)}, ${JSON.stringify({ wl: a.writableLength, unsent: addon.unsentBytes?.(fdOf(a)), q: l.queueBytes })})`);
    l.close(0 as never, 'done');
    assert.equal(flags[0], 0, 'closed');
    checking = false;
    await watch;
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(got.seqs, Array.from({ length: seq - 1 }, (_, i) => i + 1), 'every frame, whole and in order');
    b.destroy();
    server.close();
  });

  it('sendRest: the rest of a run the socket took in part follows it, frame by frame; a failed send is a dropped copy of each', async () => {
    const addon = loadAddon();
    const { server, a, b } = await socketPair(true);
    await new Promise((r) => a.once('connect', r));
    const l = upLink(a);
    const flags = new Uint8Array(1);
    const counters = new Float64Array(2);
    l.bindSend(flags, 0, counters);
    const got = reader(b);
    b.resume();
    // What the native path does: the first 100 bytes of a frame sent, then handed back.
    const frame = encodeData(1, Buffer.alloc(900, 1));
    assert.equal(addon.sendSome(fdOf(a), frame.subarray(0, 100)), 100);
    l.sendRest(frame, 100, 1, performance.now());
    // Several frames handed back at once (sendRest takes any number): the rest of the first, then the others, whole.
    for (let i = 0; i < 100 && a.writableLength > 0; i++) await new Promise((r) => setTimeout(r, 10));
    const run = Buffer.concat([encodeData(2, Buffer.alloc(60_000, 2)), encodeData(3, Buffer.alloc(30, 3))]);
    assert.equal(addon.sendSome(fdOf(a), run.subarray(0, 100)), 100);
    l.sendRest(run, 100, 2, performance.now());
    // It counted two whole frames before: folded into the link's stats.
    counters[0] = 2;
    counters[1] = 2000;
    const before = { ...l.stats };
    l.foldSend();
    assert.equal(l.stats.txPackets, before.txPackets + 2);
    assert.equal(l.stats.txBytes, before.txBytes + 2000);
    assert.equal(l.stats.nativeSentFrames, before.nativeSentFrames + 2);
    assert.equal(counters[0], 0);
    // The frames after the cut one waited in the link's queue (the addon sends nothing meanwhile: the flag is 0).
    assert.equal(flags[0], 0);
    for (let i = 0; i < 500 && (l.queueBytes > 0 || a.writableLength > 0); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(flags[0], 1, 'drained: the addon may send again (and only then hands a frame back)');
    l.sendRest(encodeData(4, Buffer.alloc(50, 4)), 0, 1, performance.now());
    for (let i = 0; i < 100 && got.seqs.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got.seqs, [1, 2, 3, 4], 'whole frames, in order');
    assert.equal(l.stats.txPackets, 2 + 4);
    // send(2) failed (EPIPE): the socket is done, the copy counted dropped, the flag 0.
    l.sendRest(Buffer.concat([encodeData(5, Buffer.alloc(50, 5)), encodeData(6, Buffer.alloc(50, 6))]), -32, 2, performance.now());
    assert.equal(l.stats.drops.link_closed, 2);
    assert.equal(l.socket.destroyed, true);
    assert.equal(flags[0], 0);
    b.destroy();
    server.close();
  });
});
