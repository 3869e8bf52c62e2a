import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AllowedIps } from '../../src/core/allowed-ips.js';
import { ipv6Bytes } from '../../src/protocol/handshake.js';

const v4 = (a: string, prefix: number) => ({ family: 4 as const, address: a, prefix });
const v6 = (a: string, prefix: number) => ({ family: 6 as const, address: a, prefix });
const b4 = (a: string): Buffer => Buffer.from(a.split('.').map(Number));

describe('allowed IPs (cryptokey routing)', () => {
  it('the longest prefix wins, IPv4 and IPv6', () => {
    const t = new AllowedIps<string>();
    t.insert(v4('10.0.0.0', 8), 'wide');
    t.insert(v4('10.1.0.0', 16), 'site');
    t.insert(v4('10.1.2.3', 32), 'host');
    t.insert(v6('fd00::', 64), 'v6net');
    t.insert(v6('fd00::2', 128), 'v6host');
    assert.equal(t.lookup(b4('10.1.2.3'), 0, 4), 'host');
    assert.equal(t.lookup(b4('10.1.2.4'), 0, 4), 'site');
    assert.equal(t.lookup(b4('10.9.9.9'), 0, 4), 'wide');
    assert.equal(t.lookup(b4('11.0.0.1'), 0, 4), undefined);
    assert.equal(t.lookup(ipv6Bytes('fd00::2'), 0, 6), 'v6host');
    assert.equal(t.lookup(ipv6Bytes('fd00::3'), 0, 6), 'v6net');
    assert.equal(t.lookup(ipv6Bytes('fd01::3'), 0, 6), undefined);
    t.insert(v4('0.0.0.0', 0), 'default');
    assert.equal(t.lookup(b4('11.0.0.1'), 0, 4), 'default');
    t.removeValue('site');
    assert.equal(t.lookup(b4('10.1.2.4'), 0, 4), 'wide');
    assert.equal(t.size, 5);
  });

  it('removing a value prunes its paths: a trie that saw thousands of addresses come and go is empty again', () => {
    const t = new AllowedIps<number>();
    const host = (k: number): ReturnType<typeof v6> => v6(`fd00::${(k >> 16).toString(16)}:${(k & 0xffff).toString(16)}`, 128);
    t.insert(v6('fd00::', 64), -1);
    t.insert(v4('10.0.0.0', 24), -1);
    const base = t.nodes;
    for (let v = 0; v < 200; v++) {
      for (let k = 0; k < 50; k++) t.insert(host(v * 50 + k), v);
      // A value that lost one of its prefixes to another keeps the others; removing it spares that one.
      if (v > 0) {
        t.insert(host((v - 1) * 50), v);
        t.removeValue(v - 1);
      }
    }
    assert.equal(t.lookup(ipv6Bytes('fd00::0:26de'), 0, 6), 199, 'the last value, routed');
    assert.equal(t.lookup(ipv6Bytes('fd00::0:26ac'), 0, 6), 199, 'and the prefix it took over from the one before');
    assert.equal(t.lookup(ipv6Bytes('fd00::0:1'), 0, 6), -1, 'a removed value\'s address falls back to the network');
    t.removeValue(199);
    assert.equal(t.size, 2, 'only the two networks left');
    assert.equal(t.nodes, base, 'and only their nodes');
  });

  it('routes packets by their destination and agrees with a linear scan over 2,000 prefixes', () => {
    const t = new AllowedIps<number>();
    const prefixes: Array<{ net: number; bits: number; v: number }> = [];
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0);
    for (let v = 0; v < 2000; v++) {
      const bits = 8 + (rnd() % 25);
      const net = (rnd() & (bits === 32 ? 0xffffffff : ~((1 << (32 - bits)) - 1))) >>> 0;
      const a = `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}`;
      t.insert(v4(a, bits), v);
      const i = prefixes.findIndex((p) => p.net === net && p.bits === bits);
      if (i >= 0) prefixes.splice(i, 1);
      prefixes.push({ net, bits, v });
    }
    for (let k = 0; k < 5000; k++) {
      const addr = k % 2 === 0 ? rnd() >>> 0 : ((prefixes[k % prefixes.length]!.net | (rnd() & 0xff)) >>> 0);
      let best: { bits: number; v: number } | undefined;
      for (const p of prefixes) {
        const mask = p.bits === 0 ? 0 : (~0 << (32 - p.bits)) >>> 0;
        if (((addr & mask) >>> 0) === p.net && (best === undefined || p.bits > best.bits)) best = p;
      }
      const pkt = Buffer.alloc(20);
      pkt[0] = 0x45;
      pkt.writeUInt32BE(addr, 16);
      assert.equal(t.route(pkt, 0), best?.v, `address ${addr}`);
    }
  });
});
