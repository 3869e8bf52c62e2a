// The native receive path's own logic against its TypeScript specification:
// the addon's elimination table against core/eliminator.ts on long random
// sequences, and its packet checks (classifyPacket) against checkVnetPacket
// and sourceIn on packets made to sit on every edge of those checks. The path
// as a whole, on a real TUN and real sockets, is test/e2e/native-path.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Eliminator } from '../../src/core/eliminator.js';
import { encodeSources } from '../../src/core/fast-path.js';
import { sourceIn } from '../../src/core/ip.js';
import type { TunnelAddress } from '../../src/protocol/handshake.js';
import { loadAddon } from '../../src/tun/loader.js';
import type { NativeEliminator } from '../../src/tun/native.js';
import { checkVnetPacket, VNET_HDR_BYTES } from '../../src/tun/vnet-hdr.js';
import { ipv4Udp, ipv6Udp } from '../helpers/packets.js';
import { rng } from '../helpers/rng.js';

const addon = loadAddon();


describe("the addon's elimination table", () => {
  it('gives the verdicts of core/eliminator.ts on random traffic: copies, late copies, jumps, ticks and resets', () => {
    const Native = addon.Eliminator;
    assert.ok(Native, 'the addon has an Eliminator');
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const window = [16, 100, 1024, 4096][seed % 4] as number;
      const ttl = [5, 50, 1000][seed % 3] as number;
      const js = new Eliminator({ windowPackets: window, ttlMs: ttl });
      const nat: NativeEliminator = new Native(window, ttl);
      let top = 1;
      let now = 0;
      for (let i = 0; i < 20_000; i++) {
        const x = r();
        let seq: number;
        if (x < 0.5) seq = ++top;
        else if (x < 0.8) seq = Math.max(1, top - Math.floor(r() * window * 1.5));
        else if (x < 0.95) seq = Math.max(1, top - Math.floor(r() * 8));
        else if (x < 0.999) seq = top += 1 + Math.floor(r() * window * 3);
        else seq = top += 2 ** 31 + Math.floor(r() * 2 ** 40);
        const exact = r() < 0.2;
        assert.equal(nat.check(seq, exact), js.check(seq, exact), `seed ${seed}, step ${i}: seq ${seq} exact ${exact}`);
        if (r() < 0.05) {
          now += r() * ttl;
          js.tick(now);
          nat.tick(now);
        }
        if (r() < 0.0005) {
          js.reset();
          nat.reset();
          top = 1;
        }
      }
      assert.deepEqual(
        [nat.accepted, nat.duplicates, nat.stale, nat.highest, nat.floorSeq, nat.windowPackets],
        [js.accepted, js.duplicates, js.stale, js.highest, js.floorSeq, js.windowPackets],
        `seed ${seed}`,
      );
    }
  });

  it('refuses a sequence number the wire cannot carry, and a window it cannot hold', () => {
    const Native = addon.Eliminator;
    assert.ok(Native);
    const e = new Native(1024, 1000);
    for (const bad of [0, -1, 1.5, 2 ** 53, NaN]) assert.throws(() => e.check(bad), RangeError, String(bad));
    assert.throws(() => new Native(2 ** 31, 1000), RangeError);
    assert.throws(() => new Native(1024, NaN), RangeError);
  });
});

/** What the native path must say of `p`, from the TypeScript checks. */
function expected(p: Buffer, vnet: number, prefixes: readonly TunnelAddress[] | undefined): number {
  if (vnet > 0 && checkVnetPacket(p) !== null) return 1;
  if (prefixes === undefined) return 0;
  return { ok: 0, spoofed: 2, link_local: 3 }[sourceIn(prefixes, vnet)(p)];
}

const V6 = (hex: string): string => hex.padEnd(32, '0');

/** Packets around every edge of checkVnetPacket's GSO-less branch and of sourceIn, each with a random virtio_net_hdr. */
function packets(r: () => number, vnet: number): Buffer[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const out: Buffer[] = [];
  for (let i = 0; i < 4000; i++) {
    const size = pick([0, 1, 4, 20, 64, 300]);
    const src4 = pick(['10.0.0.2', '10.0.0.3', '10.7.1.9', '192.168.1.1']);
    const src6 = pick([V6('fd00000000000000000000000000000002'), V6('fe80'), '0'.repeat(32), V6('fd01')]);
    let ip =
      r() < 0.5
        ? ipv4Udp(src4, '10.0.0.1', Buffer.alloc(size))
        : ipv6Udp(src6, V6('fd000000000000000000000000000001'), Buffer.alloc(size));
    // Protocol, IHL, fragment bits, extension headers: the fields the checks walk.
    if (r() < 0.3) ip[ip[0]! >> 4 === 4 ? 9 : 6] = pick([6, 17, 1, 0, 43, 44, 60, 58]);
    if (r() < 0.1 && ip[0]! >> 4 === 4) ip[0] = 0x40 | Math.floor(r() * 16);
    if (r() < 0.1 && ip[0]! >> 4 === 4) ip[6] = pick([0x20, 0x00, 0x01]);
    if (r() < 0.05) ip[0] = Math.floor(r() * 256);
    if (r() < 0.1) ip = ip.subarray(0, Math.floor(r() * ip.length));
    for (let k = 0; k < 3 && r() < 0.3 && ip.length > 0; k++) ip[Math.floor(r() * ip.length)] = Math.floor(r() * 256);
    if (vnet === 0) {
      out.push(ip);
      continue;
    }
    const h = Buffer.alloc(VNET_HDR_BYTES);
    const v6 = ip[0]! >> 4 === 6;
    if (r() < 0.3 && ip.length >= (v6 ? 40 : 20) + 20) {
      // A GSO packet as a kernel writes it (TCP or UDP, checksum to fill in), then maybe one field changed.
      const tcp = r() < 0.5;
      const l4 = v6 ? 40 : 20;
      if (!v6) ip[0] = 0x45;
      ip[v6 ? 6 : 9] = tcp ? 6 : 17;
      if (!v6) ip[6] = ip[7] = 0;
      if (tcp) ip[l4 + 12] = 0x50;
      h[0] = 1;
      h[1] = tcp ? (v6 ? 4 : 1) | (r() < 0.2 ? 0x80 : 0) : 5;
      h.writeUInt16LE(l4 + (tcp ? 20 : 8), 2);
      h.writeUInt16LE(pick([1, 100, ip.length - l4]), 4);
      h.writeUInt16LE(l4, 6);
      h.writeUInt16LE(tcp ? 16 : 6, 8);
      if (r() < 0.5) h[Math.floor(r() * VNET_HDR_BYTES)] = pick([0, 1, 2, 4, 5, 0xff]);
      if (r() < 0.2) ip[pick([0, 6, 9, l4 + 12])] = Math.floor(r() * 256);
      out.push(Buffer.concat([h, ip]));
      continue;
    }
    h[0] = pick([0, 0, 1, 1, 2, 3, 4]);
    h[1] = pick([0, 0, 0, 0, 1, 4, 5, 0x81, 3]);
    h.writeUInt16LE(pick([0, 0, 20, 40, 60, 0xffff, ip.length, ip.length + 1]), 2);
    h.writeUInt16LE(pick([0, 100, 1400]), 4);
    const l4 = ip[0]! >> 4 === 6 ? 40 : ((ip[0] ?? 0) & 0x0f) * 4;
    h.writeUInt16LE(pick([l4, l4, 0, 19, 20, 40, 48, ip.length, 0xffff]), 6);
    h.writeUInt16LE(pick([6, 16, 6, 16, 0, 2, ip.length, 0xfff0]), 8);
    out.push(Buffer.concat([h, ip]));
  }
  return out;
}

describe('the native path checks packets as the TypeScript path does', () => {
  const prefixes: TunnelAddress[] = [
    { family: 4, address: '10.0.0.2', prefix: 32 },
    { family: 4, address: '10.7.0.0', prefix: 16 },
    { family: 6, address: 'fd00::2', prefix: 128 },
  ];
  for (const vnet of [0, VNET_HDR_BYTES]) {
    for (const sources of [undefined, prefixes]) {
      it(`virtio_net_hdr ${vnet} bytes, ${sources ? 'a source filter' : 'any source'}: the same verdict for every packet`, () => {
        const classify = addon.classifyPacket;
        assert.ok(classify, 'the addon has classifyPacket');
        const encoded = sources === undefined ? null : encodeSources(sources);
        const r = rng(vnet + (sources ? 100 : 0) + 7);
        const seen = new Set<number>();
        let gsoPassed = 0;
        for (const p of packets(r, vnet)) {
          const want = expected(p, vnet, sources);
          seen.add(want);
          if (vnet > 0 && p[1] !== 0 && want === 0) gsoPassed++;
          assert.equal(classify(p, vnet, encoded), want, `packet ${p.toString('hex')}`);
        }
        // The generator reached every verdict this setting can give.
        const reachable = [0, ...(vnet > 0 ? [1] : []), ...(sources ? [2, 3] : [])];
        assert.deepEqual([...seen].sort(), reachable, 'verdicts seen');
        if (vnet > 0) assert.ok(gsoPassed > 0, 'GSO packets the checks pass were among them');
      });
    }
  }

  it('refuses arguments that are not what it takes, before it reads anything', () => {
    const classify = addon.classifyPacket;
    const FastPath = addon.FastPath;
    assert.ok(classify && FastPath && addon.Eliminator);
    assert.throws(() => classify(Buffer.alloc(40), 4, null), RangeError);
    assert.throws(() => classify(Buffer.alloc(40), 0, Buffer.alloc(19)), RangeError);
    assert.throws(() => classify(Buffer.alloc(40), 0, Buffer.from([5, 8, 0, 0, ...Buffer.alloc(16)])), RangeError);
    const table = new addon.Eliminator(16, 10);
    // Objects of another class are refused, not unwrapped as the wrong one.
    assert.throws(() => new FastPath(table as never, table, 0, new Float64Array(2), () => {}), TypeError);
    assert.throws(() => new FastPath({} as never, table, 0, new Float64Array(2), () => {}), TypeError);
  });
});
