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

  /** One link, no address: the fields the refusal tests change one at a time. */
  const PLAIN: Hello = {
    sessionId: Buffer.alloc(16, 1),
    encryption: 'none',
    offload: false,
    mode: 'duplicate',
    linkId: 0,
    linkCount: 1,
    addresses: [],
  };

  it('HELLO without magic, with a bad family, trailing bytes or link id out of range is refused', () => {
    const h = PLAIN;
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

  it('HELLO carries a pace only with flag bit 0; a pace out of range or cut short is refused', () => {
    const h: Hello = { ...PLAIN, addresses: [{ family: 4, address: '10.0.0.2', prefix: 24 }] };
    const plain = encodeHello(h);
    assert.equal((plain[8 + 4 + 16] as number) & 1, 0);
    assert.equal(decodeHello(plain, 8, plain.length).paceKbit, undefined);
    const paced = encodeHello({ ...h, paceKbit: 45_000 });
    assert.equal(paced.length, plain.length + 4);
    assert.equal((paced[8 + 4 + 16] as number) & 1, 1);
    assert.deepEqual(decodeHello(paced, 8, paced.length), { ...h, paceKbit: 45_000 });
    for (const kbit of [100, 10_000_000]) {
      const f = encodeHello({ ...h, paceKbit: kbit });
      assert.equal(decodeHello(f, 8, f.length).paceKbit, kbit);
    }
    for (const bad of [0, 99, 10_000_001, 0xffffffff]) {
      const f = Buffer.from(paced);
      f.writeUInt32BE(bad, f.length - 4);
      assert.throws(() => decodeHello(f, 8, f.length), /pace \d+ kbit\/s is outside 100\.\.10000000/);
      assert.throws(() => encodeHello({ ...h, paceKbit: bad }), RangeError);
    }
    // The flag without the field, and the field without the flag.
    const cut = paced.subarray(0, paced.length - 2);
    assert.throws(() => decodeHello(cut, 8, cut.length), /pace is truncated/);
    const unflagged = Buffer.from(paced);
    unflagged[8 + 4 + 16] = 0;
    assert.throws(() => decodeHello(unflagged, 8, unflagged.length), /trailing/);
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
