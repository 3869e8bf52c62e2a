import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { splitGso } from '../../src/tun/gso-split.js';
import { checkVnetPacket } from '../../src/tun/vnet-hdr.js';

const sum16 = (b: Buffer, from: number, to: number): number => {
  let s = 0;
  for (let i = from; i < to; i += 2) s += (b[i]! << 8) | (i + 1 < to ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
};

/** A TCP offload packet as the TUN read path gives it: virtio_net_hdr, IP, TCP, `payload` bytes in segments of `mss`. */
function gsoPacket(v6: boolean, payload: number, mss: number, flags: number, seq: number): Buffer {
  const ipHdr = v6 ? 40 : 20;
  const p = Buffer.alloc(10 + ipHdr + 20 + payload);
  p[0] = 1; // NEEDS_CSUM
  p[1] = v6 ? 4 : 1;
  p.writeUInt16LE(ipHdr + 20, 2);
  p.writeUInt16LE(mss, 4);
  p.writeUInt16LE(ipHdr, 6);
  p.writeUInt16LE(16, 8);
  const ip = 10;
  if (v6) {
    p[ip] = 0x60;
    p.writeUInt16BE(20 + payload, ip + 4);
    p[ip + 6] = 6;
    p[ip + 7] = 64;
    Buffer.from('fd00dd00000000000000000000000002', 'hex').copy(p, ip + 8);
    Buffer.from('fd00dd00000000000000000000000001', 'hex').copy(p, ip + 24);
  } else {
    p[ip] = 0x45;
    p.writeUInt16BE(ipHdr + 20 + payload, ip + 2);
    p.writeUInt16BE(0xfffe, ip + 4); // the ids wrap too
    p[ip + 6] = 0x40; // DF
    p[ip + 8] = 64;
    p[ip + 9] = 6;
    Buffer.from([10, 0, 0, 2, 10, 0, 0, 1]).copy(p, ip + 12);
    p.writeUInt16BE(~sum16(p, ip, ip + 20) & 0xffff, ip + 10);
  }
  const t = ip + ipHdr;
  p.writeUInt16BE(40000, t);
  p.writeUInt16BE(5201, t + 2);
  p.writeUInt32BE(seq, t + 4);
  p.writeUInt32BE(77, t + 8);
  p[t + 12] = 5 << 4;
  p[t + 13] = flags;
  p.writeUInt16BE(502, t + 14);
  for (let i = 0; i < payload; i++) p[t + 20 + i] = (i * 7 + 3) & 0xff;
  return p;
}

/** The folded pseudo-header sum a CHECKSUM_PARTIAL field holds, from the packet's own addresses. */
function pseudo(pkt: Buffer, v6: boolean, tcpLen: number): number {
  const a = v6 ? sum16(pkt, 10 + 8, 10 + 40) : sum16(pkt, 10 + 12, 10 + 20);
  let s = a + 6 + tcpLen;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

describe('splitting TCP offload packets for slow links', () => {
  for (const v6 of [false, true]) {
    it(`IPv${v6 ? 6 : 4}: whole segments per piece, sequence, ids, flags, lengths and checksums as the kernel would make them`, () => {
      const ipHdr = v6 ? 40 : 20;
      const mss = 1000;
      const p = gsoPacket(v6, 10_500, mss, 0x80 | 0x10 | 0x08 | 0x01, 0xffffe000);
      const pieces = splitGso(p, 3500, 12);
      assert.ok(pieces, 'split');
      assert.equal(pieces.starts.length, 4, '3000 + 3000 + 3000 + 1500 bytes');
      const payloads: Buffer[] = [];
      pieces.starts.forEach((start, i) => {
        const end = pieces.ends[i]!;
        assert.equal(start, i === 0 ? 12 : pieces.ends[i - 1]! + 12, 'headroom before each piece');
        const q = pieces.buf.subarray(start, end);
        assert.equal(checkVnetPacket(q), null, `piece ${i} passes the receiver's check`);
        const bytes = i < 3 ? 3000 : 1500;
        assert.equal(q.length, 10 + ipHdr + 20 + bytes);
        assert.equal(q[1], v6 ? 4 : 1, 'still an offload packet of whole segments');
        assert.equal(q.readUInt16LE(4), mss);
        const t = 10 + ipHdr;
        assert.equal(q.readUInt32BE(t + 4), (0xffffe000 + i * 3000) >>> 0, 'sequence numbers continue (and wrap)');
        assert.equal(q[t + 13], i === 0 ? 0x80 | 0x10 : i < 3 ? 0x10 : 0x10 | 0x08 | 0x01, 'CWR first, PSH and FIN last');
        if (v6) {
          assert.equal(q.readUInt16BE(10 + 4), 20 + bytes);
        } else {
          assert.equal(q.readUInt16BE(10 + 2), 20 + 20 + bytes);
          assert.equal(q.readUInt16BE(10 + 4), (0xfffe + i * 3) & 0xffff, 'one IP id per segment');
          assert.equal(sum16(q, 10, 30), 0xffff, 'the IPv4 header checksum is whole');
        }
        assert.equal(q.readUInt16BE(t + 16), pseudo(q, v6, 20 + bytes), 'the pseudo-header sum for this length');
        payloads.push(q.subarray(t + 20));
      });
      assert.deepEqual(Buffer.concat(payloads), p.subarray(10 + ipHdr + 20), 'the payload, in order, once');
    });
  }

  it('a last piece of one segment or less is a plain packet', () => {
    const pieces = splitGso(gsoPacket(false, 7_000, 1000, 0x10, 1), 3000, 0);
    assert.ok(pieces);
    const last = pieces.buf.subarray(pieces.starts[2]!, pieces.ends[2]!);
    assert.equal(last.length, 10 + 40 + 1000);
    assert.equal(last[1], 0, 'GSO none');
    assert.equal(last.readUInt16LE(4), 0, 'no gso_size');
    assert.equal(checkVnetPacket(last), null);
  });

  it('hdr_len says the headers on every piece, though the read path said more (a GRO head of a whole segment)', () => {
    const p = gsoPacket(false, 4 * 1448 + 300, 1448, 0x10, 1);
    p.writeUInt16LE(40 + 1448, 2); // skb_headlen after a NIC's GRO: headers and the first segment
    const pieces = splitGso(p, 2896, 0);
    assert.ok(pieces);
    assert.equal(pieces.starts.length, 3);
    pieces.starts.forEach((start, i) => {
      const q = pieces.buf.subarray(start, pieces.ends[i]);
      assert.equal(q.readUInt16LE(2), 40, `piece ${i}: hdr_len`);
      assert.equal(checkVnetPacket(q), null, `piece ${i} (${q.length - 10} bytes) passes the receiver's check`);
    });
  });

  it('TCP options go on every piece; the ECN bit of the offload type only on the first', () => {
    const p = gsoPacket(false, 6000, 1000, 0x80 | 0x10, 1);
    p[1] = 1 | 0x80; // TCPV4 with ECN
    // Make room for 12 bytes of options (timestamps) after the 20-byte TCP header.
    const withOpts = Buffer.concat([p.subarray(0, 50), Buffer.from([1, 1, 8, 10, 0, 0, 0, 42, 0, 0, 0, 7]), p.subarray(50)]);
    withOpts[30 + 12] = 8 << 4;
    withOpts.writeUInt16LE(52, 2);
    withOpts.writeUInt16BE(20 + 32 + 6000, 10 + 2);
    const pieces = splitGso(withOpts, 2000, 0);
    assert.ok(pieces);
    assert.equal(pieces.starts.length, 3);
    pieces.starts.forEach((start, i) => {
      const q = pieces.buf.subarray(start, pieces.ends[i]);
      assert.deepEqual(q.subarray(50, 62), withOpts.subarray(50, 62), `piece ${i}: the options`);
      assert.equal(q.length, 10 + 52 + 2000);
      assert.equal(q[1], i === 0 ? 1 | 0x80 : 1, `piece ${i}: offload type`);
      assert.equal(checkVnetPacket(q), null);
    });
    const frag = gsoPacket(false, 5000, 1000, 0x10, 1);
    frag[10 + 6] = 0x20; // MF
    assert.equal(splitGso(frag, 1000, 0), undefined, 'a fragment is left whole');
  });

  it('at least one segment per piece, whatever the bound', () => {
    const pieces = splitGso(gsoPacket(false, 3_000, 1000, 0x10, 1), 10, 0);
    assert.equal(pieces?.starts.length, 3);
  });

  it('leaves whole what it does not cut: small enough, a type that is not the protocol, no NEEDS_CSUM, extension headers, lengths that disagree', () => {
    assert.equal(splitGso(gsoPacket(false, 3_000, 1000, 0x10, 1), 3000, 0), undefined, 'already small enough');
    const udp = gsoPacket(false, 5_000, 1000, 0x10, 1);
    udp[1] = 5; // UDP offload, on a TCP packet
    assert.equal(splitGso(udp, 1000, 0), undefined);
    const tcp = udpGsoPacket(false, 5_000, 1000);
    tcp[1] = 1; // TCP offload, on a UDP packet
    assert.equal(splitGso(tcp, 1000, 0), undefined);
    const udpLen = udpGsoPacket(true, 5_000, 1000);
    udpLen.writeUInt16BE(900, 10 + 40 + 4); // UDP's length disagrees
    assert.equal(splitGso(udpLen, 1000, 0), undefined);
    const noCsum = gsoPacket(false, 5_000, 1000, 0x10, 1);
    noCsum[0] = 0;
    assert.equal(splitGso(noCsum, 1000, 0), undefined);
    const ext = gsoPacket(true, 5_000, 1000, 0x10, 1);
    ext[10 + 6] = 0; // hop-by-hop first
    assert.equal(splitGso(ext, 1000, 0), undefined);
    const short = gsoPacket(false, 5_000, 1000, 0x10, 1);
    short.writeUInt16BE(1000, 10 + 2);
    assert.equal(splitGso(short, 1000, 0), undefined);
  });
});

/** A UDP offload packet (UDP_SEGMENT): virtio_net_hdr, IP, UDP, `payload` bytes in datagrams of `size`. */
function udpGsoPacket(v6: boolean, payload: number, size: number): Buffer {
  const p = gsoPacket(v6, payload - 12, size, 0, 0); // a TCP header is 12 bytes longer than UDP's
  const ipHdr = v6 ? 40 : 20;
  p[1] = 5;
  p.writeUInt16LE(ipHdr + 8, 2);
  p.writeUInt16LE(6, 8);
  const ip = 10;
  if (v6) {
    p.writeUInt16BE(8 + payload, ip + 4);
    p[ip + 6] = 17;
  } else {
    p.writeUInt16BE(ipHdr + 8 + payload, ip + 2);
    p[ip + 9] = 17;
    p.writeUInt16BE(0, ip + 10);
    p.writeUInt16BE(~sum16(p, ip, ip + 20) & 0xffff, ip + 10);
  }
  const u = ip + ipHdr;
  p.writeUInt16BE(40001, u);
  p.writeUInt16BE(443, u + 2);
  p.writeUInt16BE(8 + payload, u + 4);
  for (let i = 0; i < payload; i++) p[u + 8 + i] = (i * 11 + 5) & 0xff;
  const a = v6 ? sum16(p, ip + 8, ip + 40) : sum16(p, ip + 12, ip + 20);
  p.writeUInt16BE(fold(a + 17 + 8 + payload), u + 6);
  return p;
}

const fold = (x: number): number => {
  while (x > 0xffff) x = (x & 0xffff) + (x >>> 16);
  return x;
};

describe('splitting UDP offload packets (UDP_SEGMENT, as QUIC sends) for slow links', () => {
  for (const v6 of [false, true]) {
    it(`IPv${v6 ? 6 : 4}: whole datagrams per piece, ids, lengths and checksums as the kernel would make them`, () => {
      const ipHdr = v6 ? 40 : 20;
      const size = 1200;
      const p = udpGsoPacket(v6, 9_000, size); // 7 datagrams of 1200, one of 600
      assert.equal(checkVnetPacket(p), null, 'the original passes the receiver\'s check');
      const pieces = splitGso(p, 2500, 12);
      assert.ok(pieces, 'split');
      assert.equal(pieces.starts.length, 4, '2400 + 2400 + 2400 + 1800 bytes');
      const payloads: Buffer[] = [];
      pieces.starts.forEach((start, i) => {
        const q = pieces.buf.subarray(start, pieces.ends[i]!);
        assert.equal(checkVnetPacket(q), null, `piece ${i} passes the receiver's check`);
        const bytes = i < 3 ? 2400 : 1800;
        assert.equal(q.length, 10 + ipHdr + 8 + bytes);
        assert.equal(q[0], 1, 'NEEDS_CSUM');
        assert.equal(q[1], 5, 'still a UDP offload packet of whole datagrams');
        assert.equal(q.readUInt16LE(2), ipHdr + 8, 'hdr_len: the headers');
        assert.equal(q.readUInt16LE(4), size);
        const u = 10 + ipHdr;
        assert.equal(q.readUInt16BE(u), 40001, 'ports kept');
        assert.equal(q.readUInt16BE(u + 4), 8 + bytes, "UDP's length is the piece's");
        if (v6) {
          assert.equal(q.readUInt16BE(10 + 4), 8 + bytes);
        } else {
          assert.equal(q.readUInt16BE(10 + 2), 20 + 8 + bytes);
          assert.equal(q.readUInt16BE(10 + 4), (0xfffe + i * 2) & 0xffff, 'one IP id per datagram');
          assert.equal(sum16(q, 10, 30), 0xffff, 'the IPv4 header checksum is whole');
        }
        const a = v6 ? sum16(q, 10 + 8, 10 + 40) : sum16(q, 10 + 12, 10 + 20);
        assert.equal(q.readUInt16BE(u + 6), fold(a + 17 + 8 + bytes), 'the pseudo-header sum for this length');
        payloads.push(q.subarray(u + 8));
      });
      assert.deepEqual(Buffer.concat(payloads), p.subarray(10 + ipHdr + 8), 'the payload, in order, once');
    });
  }

  it('a last piece of one datagram or less is a plain packet', () => {
    const pieces = splitGso(udpGsoPacket(false, 5_000, 1000), 2000, 0);
    assert.ok(pieces);
    assert.equal(pieces.starts.length, 3);
    const last = pieces.buf.subarray(pieces.starts[2]!, pieces.ends[2]!);
    assert.equal(last[1], 0, 'GSO_NONE');
    assert.equal(last.readUInt16LE(4), 0, 'no gso_size');
    assert.equal(checkVnetPacket(last), null);
  });
});

