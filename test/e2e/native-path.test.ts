// The native receive path (core/fast-path.ts, native/fastpath.h) on a real
// TUN and real sockets: the same byte stream — copies on two links (the lagging
// link's dropped unread, a long one across reads), a frame
// cut across reads, control frames between data, a spoofed source, a
// virtio_net_hdr no kernel writes, a frame too long, frames longer than a read
// or trickling in past the dead interval, a peer that closes or resets inside
// a frame, a frame limit lowered or raised on a link read natively — gives the
// same packets behind the TUN, in the same order, and the
// same counters with the native path as with the TypeScript path alone
// (DPTCP_NATIVE_PATH=0); the native path did take frames, and read an echo
// request's reply from the TUN right after writing the request. Runs inside a
// network namespace of its own.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, skipReason, Testbed } from '../helpers/netns.js';

const skip = skipReason();

interface ProbeLink {
  state: string;
  nativeFrames: number;
  droppedUnread: number;
  [k: string]: unknown;
}
interface Probe {
  received: string[];
  longNative: number;
  echoReplied: boolean;
  readsAfterWrite: number;
  links: ProbeLink[];
  lastLink: ProbeLink;
  limits: ProbeLink[];
  [k: string]: unknown;
}

describe('native receive path', { skip, timeout: 120_000 }, () => {
  let tb: Testbed;
  before(async () => {
    tb = await Testbed.create('npa');
  });
  after(async () => {
    await tb?.destroy();
  });

  const probe = async (mode: string, native: boolean): Promise<Probe> => {
    const env = native ? [] : ['DPTCP_NATIVE_PATH=0'];
    const { stdout } = await tb.run('server', 'env', [...env, process.execPath, '--import', 'tsx', join(ROOT, 'test/helpers/native-path-probe.ts'), mode], 60_000);
    return JSON.parse(stdout) as Probe;
  };

  for (const mode of ['plain', 'offload']) {
    it(`${mode}: the same packets, in order, and the same counters as the TypeScript path`, async () => {
      const fast = await probe(mode, true);
      const slow = await probe(mode, false);
      // p7 has a spoofed source; with offloads p9 has a virtio_net_hdr flag no kernel sets.
      const want = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p8', ...(mode === 'offload' ? [] : ['p9']), 'p10', 'p11', 'p26', 'p27:30003', 'p28', 'p12', 'p13', 'p14', 'p15', 'p16', 'p18', 'p19', 'p20:65024', 'p21', 'p23:40003', 'p29:30003', 'p30', 'p31:30003', 'p32', 'p33:20003', 'p34:20003', 'p35', 'p36:30003', 'p41:2003'];
      assert.deepEqual(fast.received, want);
      assert.deepEqual(slow.received, want);
      // Every link that sent a whole DATA frame (link 3 sent only the start of one).
      assert.ok(
        fast.links.every((l, i) => i === 3 || l.nativeFrames > 0),
        `the native path took frames on every link: ${fast.links.map((l) => l.nativeFrames).join(', ')}`,
      );
      assert.ok(slow.links.every((l) => l.nativeFrames === 0));
      // Link 0 took 6 whole frames natively before the cut one (more if reads ran together), and
      // the 2 after it: a read that ends inside a frame does not turn the native path off.
      assert.ok((fast.links[0]?.nativeFrames ?? 0) >= 8, `native frames on link 0: ${fast.links[0]?.nativeFrames}`);
      // The frame longer than a read, in three parts: whole on the native path, not through the decoder.
      assert.equal(fast.longNative, 1, 'the frame longer than a read went the native way');
      assert.equal(slow.longNative, 0);
      // The echo request's answer went back on the links, read from the TUN right after the
      // write on the native path (on the TypeScript path, by the TUN's next poll).
      assert.equal(fast.echoReplied, true, 'the echo reply came back on link 0');
      assert.equal(slow.echoReplied, true);
      assert.ok(fast.readsAfterWrite >= 1, `TUN batches read right after a native write: ${fast.readsAfterWrite}`);
      assert.equal(slow.readsAfterWrite, 0);
      // Link b's copy of 27 (in two reads), which link a had delivered, was dropped in the kernel
      // unread; its short copies (of 9, 10, 2 and 26) were read; on the TypeScript path every
      // byte is read.
      assert.equal(fast.links[1]?.droppedUnread, 1, 'a long copy dropped unread on the lagging link');
      assert.ok(slow.links.every((l) => l.droppedUnread === 0));
      // Link d held the start of 29 when link a delivered it, and read the start of 31 after:
      // the rest of each was dropped unread; then, lagging after its whole copy of 33, 34 unread.
      assert.equal(fast.links[4]?.droppedUnread, 3, 'long copies another link delivered, dropped unread');
      // The last link's copy of 36, dropped from its first read's end; the bytes of that read are
      // a sign of life: without them it would hear nothing for 800 ms, its dead interval 600.
      assert.equal(fast.lastLink.droppedUnread, 1, 'the copy the last link held the start of, dropped unread');
      assert.equal(fast.lastLink.state, 'up', 'the last link, heard only through the copy it dropped');
      assert.equal(slow.lastLink.state, 'up');
      // A frame limit lowered on a link read natively: the frame past it closed the link, undelivered
      // (p40 is not in the list); raised: the frame under it went the native way.
      assert.deepEqual(fast.limits.map((l) => l.state), ['down', 'up'], 'lowered: closed; raised: up');
      assert.equal(fast.limits[1]?.nativeFrames, 1, 'the frame under the raised limit went the native way');
      const zero = (l: ProbeLink): ProbeLink => ({ ...l, nativeFrames: 0, droppedUnread: 0 });
      const strip = (p: Probe): Probe => ({ ...p, longNative: 0, readsAfterWrite: 0, links: p.links.map(zero), lastLink: zero(p.lastLink), limits: p.limits.map(zero) });
      assert.deepEqual(strip(fast), strip(slow));
      assert.deepEqual(
        fast.links.map((l) => l.state),
        ['up', 'down', 'down', 'down', 'up'],
        'the link that sent a frame past the limit was closed, and the ones whose peer closed or reset half-way through a frame; the others not (one of them heard only pieces of a frame for 900 ms, its dead interval 300)',
      );
    });
  }
});
