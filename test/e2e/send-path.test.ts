// The native send path (core/fast-path.ts FastSend, native/sendpath.h) on a
// real TUN and real sockets: UDP datagrams into the TUN reach both links'
// peers numbered and framed as the TypeScript path frames them, those no
// session holds are counted, and a peer that stops reading — its socket
// taking part of a frame, or none, its queue overflowing — gets a stream that
// stays whole and in order, with every byte and packet counted. The same
// checks hold with DPTCP_NATIVE_PATH=0, and only the native run sends natively.
// Runs inside a network namespace of its own.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, skipReason, Testbed } from '../helpers/netns.js';

const skip = skipReason();

interface ProbeLink {
  state: string;
  txPackets: number;
  txBytes: number;
  drops: Record<string, number>;
  nativeSentFrames: number;
  broken: string | null;
  peerBytes: number;
  rests: number[];
  restBuffers: number;
  frames: string[];
}
interface Probe {
  tun: { rxPackets: number; noSession: number };
  txPackets: number;
  links: ProbeLink[];
}

/** What the first phase sends, as `seq:payload`: u0-u299, then u310-u399 (u300-u309 have no session). */
const firstPhase = [...Array.from({ length: 300 }, (_, i) => `u${i}`), ...Array.from({ length: 90 }, (_, i) => `u${310 + i}`)].map((p, i) => `${i + 1}:${p}`);

describe('native send path', { skip, timeout: 180_000 }, () => {
  let tb: Testbed;
  before(async () => {
    tb = await Testbed.create('nsp');
  });
  after(async () => {
    await tb?.destroy();
  });

  const probe = async (mode: string, native: boolean): Promise<Probe> => {
    const env = native ? [] : ['DPTCP_NATIVE_PATH=0'];
    const { stdout } = await tb.run('server', 'env', [...env, process.execPath, '--import', 'tsx', join(ROOT, 'test/helpers/send-path-probe.ts'), mode], 90_000);
    return JSON.parse(stdout) as Probe;
  };

  /** What holds whichever path sent the frames. */
  const check = (p: Probe, what: string): void => {
    assert.ok(p.tun.noSession >= 10, `${what}: the 10 datagrams no session holds are counted (${p.tun.noSession})`);
    assert.equal(p.txPackets, p.tun.rxPackets - p.tun.noSession, `${what}: every other packet read is the session's`);
    const payloadOf = new Map<string, string>();
    for (const [i, l] of p.links.entries()) {
      const name = `${what}, link ${i}`;
      assert.equal(l.broken, null, `${name}: the stream stays whole`);
      assert.equal(l.state, 'up', name);
      assert.equal(l.peerBytes, l.txBytes, `${name}: every byte counted as sent reached the peer`);
      const dropped = (l.drops['queue_full'] ?? 0) + (l.drops['queue_age'] ?? 0) + (l.drops['link_closed'] ?? 0);
      assert.equal(l.txPackets + dropped, p.txPackets, `${name}: every packet sent or counted dropped`);
      assert.equal(l.frames.length, l.txPackets, `${name}: as many frames as counted`);
      assert.deepEqual(l.frames.slice(0, firstPhase.length), firstPhase, `${name}: numbered in order, once each`);
      const seen = new Set<string>();
      for (const f of l.frames) {
        const [seq, payload] = f.split(':') as [string, string];
        assert.ok(!seen.has(seq), `${name}: ${seq} arrived twice`);
        seen.add(seq);
        const other = payloadOf.get(seq);
        assert.ok(other === undefined || other === payload, `${name}: ${seq} carries ${payload}, on the other link ${other}`);
        payloadOf.set(seq, payload);
      }
    }
    // Link 0's peer always reads: nothing waited long enough there to be passed or dropped.
    const first = p.links[0] as ProbeLink;
    if (first.txPackets === p.txPackets) assert.deepEqual(first.frames.map((f) => Number(f.split(':')[0])), Array.from({ length: p.txPackets }, (_, i) => i + 1));
  };

  for (const mode of ['plain', 'offload']) {
    it(`${mode}: frames numbered and counted as on the TypeScript path, and whole when a socket takes part`, async () => {
      const fast = await probe(mode, true);
      const slow = await probe(mode, false);
      check(fast, 'native');
      check(slow, 'TypeScript');
      assert.ok(
        fast.links.every((l) => l.nativeSentFrames > 100),
        `the native path sent on both links: ${fast.links.map((l) => l.nativeSentFrames).join(', ')}`,
      );
      assert.ok(slow.links.every((l) => l.nativeSentFrames === 0 && l.rests.length === 0));
      // The peer that stopped reading: sends it did not take whole went to the link's TypeScript side.
      const rests = fast.links[1]?.rests ?? [];
      assert.ok(rests.length > 0, 'a send the socket did not take whole was handed back');
      assert.ok(
        rests.every((n) => n >= 0),
        `no send failed: ${rests.join(', ')}`,
      );
      // Each copied into the link's one rest buffer, not a buffer of its own (and still whole, above).
      assert.equal(fast.links[1]?.restBuffers, 1, `${rests.length} frames handed back, in ${fast.links[1]?.restBuffers} buffers`);
    });
  }
});
