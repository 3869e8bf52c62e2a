import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import {
  decodeHello,
  decodeWelcome,
  encodeHello,
  encodeWelcome,
  formatAddress,
  ipv6Bytes,
  type Hello,
} from '../../src/protocol/handshake.js';

describe('open-mode handshake frames', () => {
  it('HELLO round-trips with IPv4 and IPv6 addresses', () => {
    const h: Hello = {
      sessionId: randomBytes(16),
      encryption: 'none',
      offload: true,
      mode: 'adaptive',
      linkId: 1,
      linkCount: 2,
      addresses: [
        { family: 4, address: '10.0.0.2', prefix: 24 },
        { family: 6, address: 'fd00:dd::2', prefix: 64 },
      ],
    };
    const f = encodeHello(h);
    assert.deepEqual(decodeHello(f, 8, f.length), h);
  });

  it('HELLO without magic, with a bad family, trailing bytes or link id out of range is refused', () => {
    const h: Hello = {
      sessionId: Buffer.alloc(16, 1),
      encryption: 'none',
      offload: false,
      mode: 'duplicate',
      linkId: 0,
      linkCount: 1,
      addresses: [],
    };
    const f = encodeHello(h);
    const noMagic = Buffer.from(f);
    noMagic[8] = 0x58;
    assert.throws(() => decodeHello(noMagic, 8, noMagic.length), ProtocolError);
    const trailing = Buffer.concat([f, Buffer.from([0])]);
    assert.throws(() => decodeHello(trailing, 8, trailing.length), /trailing/);
    const badId = encodeHello({ ...h, linkId: 3, linkCount: 2 });
    assert.throws(() => decodeHello(badId, 8, badId.length), /link id 3 of 2/);
    const badFamily = encodeHello({ ...h, addresses: [{ family: 4, address: '1.2.3.4', prefix: 8 }] });
    badFamily[8 + 4 + 16 + 1 + 5] = 5;
    assert.throws(() => decodeHello(badFamily, 8, badFamily.length), /family 5/);
  });

  it('WELCOME round-trips', () => {
    const w = { epoch: randomBytes(8), linkId: 3 };
    const f = encodeWelcome(w);
    assert.deepEqual(decodeWelcome(f, 8, f.length), w);
  });

  it('IPv6 text and bytes convert both ways (RFC 5952 output)', () => {
    for (const [text, canonical] of [
      ['fd00:dd::2', 'fd00:dd::2'],
      ['::1', '::1'],
      ['::', '::'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['::ffff:10.1.2.3', '::ffff:a01:203'],
      ['fe80::1:2:3:4:5', 'fe80::1:2:3:4:5'],
    ] as const) {
      assert.equal(formatAddress(ipv6Bytes(text)), canonical, text);
    }
  });
});
