import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sourceIn } from '../../src/core/ip.js';

function v6From(src: string): Buffer {
  const p = Buffer.alloc(48);
  p[0] = 0x60;
  const groups = src === '::' ? [] : src.split(':');
  groups.forEach((g, i) => p.writeUInt16BE(parseInt(g || '0', 16), 8 + 2 * i));
  return p;
}

function v4From(src: string): Buffer {
  const p = Buffer.alloc(28);
  p[0] = 0x45;
  src.split('.').forEach((o, i) => (p[12 + i] = Number(o)));
  return p;
}

describe('source filter', () => {
  const filter = sourceIn([
    { family: 4, address: '10.0.0.2', prefix: 32 },
    { family: 6, address: 'fd00:dd::2', prefix: 128 },
  ]);
  it('passes the peer its own addresses and nothing else of its network', () => {
    assert.equal(filter(v4From('10.0.0.2')), 'ok', 'own IPv4 address');
    assert.equal(filter(v4From('10.0.0.3')), 'spoofed', 'a neighbour address');
    assert.equal(filter(v6From('fd00:dd:0:0:0:0:0:2')), 'ok', 'own IPv6 address');
    assert.equal(filter(v6From('fd00:dd:0:0:0:0:0:3')), 'spoofed', 'a neighbour IPv6 address');
  });
  it('tells link-local and unspecified IPv6 sources apart from spoofing', () => {
    assert.equal(filter(v6From('fe80:0:0:0:0:0:0:1')), 'link_local', 'fe80::1');
    assert.equal(filter(v6From('febf:0:0:0:0:0:0:1')), 'link_local', 'the top of fe80::/10');
    assert.equal(filter(v6From('fec0:0:0:0:0:0:0:1')), 'spoofed', 'just outside fe80::/10');
    assert.equal(filter(v6From('::')), 'link_local', 'the unspecified address (duplicate address detection)');
    assert.equal(filter(v6From('0:0:0:0:0:0:0:1')), 'spoofed', '::1 is not unspecified');
  });
  it('refuses truncated packets and other versions', () => {
    assert.equal(filter(Buffer.from([0x60, 0, 0])), 'spoofed', 'a truncated IPv6 header');
    assert.equal(filter(Buffer.from([0x45, 0, 0])), 'spoofed', 'a truncated IPv4 header');
    assert.equal(filter(Buffer.from([0x20, 0, 0])), 'spoofed', 'version 2');
  });
});
