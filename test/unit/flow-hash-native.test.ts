// The native send path counts its packets in the tunnel's flow table
// (core/flows.ts) with its own port of flowHash: the same packet must land in
// the same bucket whichever path carried it. Random and edge packets (IPv4 and
// IPv6, fragments, options, every protocol with ports and some without, cut
// headers, other versions) and seeds: the addon's hash equals the TypeScript one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { flowHash } from '../../src/core/flows.js';
import { loadAddon } from '../../src/tun/loader.js';
import { rng } from '../helpers/rng.js';

describe("the send path's flow hash", () => {
  it('equals flowHash on 40,000 random and edge packets, with random seeds', () => {
    const native = loadAddon().flowHash;
    assert.equal(typeof native, 'function', 'the built addon exports flowHash');
    const hash = native as (p: Buffer, seed: number) => number;
    const r = rng(0x5eed);
    const protos = [6, 17, 132, 136, 1, 58, 47, 0, 255];
    for (let i = 0; i < 40_000; i++) {
      const v6 = r() < 0.4;
      const len = Math.floor(r() * (r() < 0.2 ? 60 : 200));
      const p = Buffer.alloc(len);
      for (let j = 0; j < len; j++) p[j] = Math.floor(r() * 256);
      if (len > 0 && r() < 0.9) {
        const ihl = 5 + (r() < 0.2 ? Math.floor(r() * 11) : 0);
        p[0] = v6 ? 0x60 | ((p[0] as number) & 0x0f) : 0x40 | ihl;
        if (r() < 0.1) p[0] = ((p[0] as number) & 0x0f) | (Math.floor(r() * 16) << 4); // another version
        const proto = protos[Math.floor(r() * protos.length)] as number;
        if (!v6 && len > 9) p[9] = proto;
        if (v6 && len > 6) p[6] = proto;
        if (!v6 && len > 7 && r() < 0.7) {
          p[6] = r() < 0.5 ? 0x40 : 0; // DF, or nothing: a first fragment or none
          p[7] = 0;
        }
      }
      const seed = r() < 0.5 ? (Math.floor(r() * 2 ** 32) | 0) : 0;
      assert.equal(hash(p, seed), flowHash(p, 0, len, seed), `packet ${i} (${p.toString('hex')}), seed ${seed}`);
    }
  });
});
