// checkVnetPacket: what a kernel writes in front of a packet passes, each
// kind of broken virtio_net_hdr is named, and no 10 bytes make it throw.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkVnetPacket,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  type VnetFault,
} from '../../src/tun/vnet-hdr.js';
import { ipv4Udp, ipv6Udp } from '../helpers/packets.js';

// Read from a TUN with offloads (TUN_F_CSUM | TSO4 | TSO6 | USO4 | USO6) on
// Linux 6.18 by test/helpers/vnet-probe.ts capture: virtio_net_hdr, IP and
// TCP/UDP headers as read, and the whole length; the payload was not kept.
const CAPTURED = {
  tcp4_syn: ['010000000000140010004500003c39dd40004006e8ca0a0902010a090202917d15b32a62745500000000a002ff0018430000020405500402080a0b11ec54000000000103030a', 70],
  tcp4: ['010000000000140010004500002839de40004006e8dd0a0902010a090202917d15b32a627456100000015010ff00182f0000', 50],
  tcp4_gso: ['0101280050051400100045001ab839df40004006ce4c0a0902010a090202917d15b32a627456100000015018ff0032bf0000', 6850],
  tcp6_syn: ['01000000000028001000600a33f500280640fd000009000200000000000000000001fd00000900020000000000000000000290af15b3ad45b70d00000000a002fb40fa4800000204053c0402080a92d0b941000000000103030a', 90],
  tcp6: ['01000000000028001000600a33f500140640fd000009000200000000000000000001fd00000900020000000000000000000290af15b3ad45b70e100000015010fb40fa340000', 70],
  tcp6_gso: ['01043c003c0528001000600a33f51a400640fd000009000200000000000000000001fd00000900020000000000000000000290af15b3ad45b70e100000015018fb4014610000', 6770],
  udp4: ['01000000000014000600450001488a704000401197200a0902010a090202ba51270f0134195a', 338],
  udp6: ['010000000000280006006008345901341140fd000009000200000000000000000001fd000009000200000000000000000002b04e270f0134fb5f', 358],
  udp4_gso: ['01051c00b004140006004500178c8ae600004011c0660a0902010a090202951b270f17782f9e', 6038],
  udp6_gso: ['01053000b004280006006006b1f517781140fd000009000200000000000000000001fd000009000200000000000000000002b67c270f177811a4', 6058],
} as const satisfies Record<string, readonly [string, number]>;

function captured(kind: keyof typeof CAPTURED): Buffer {
  const [hex, length] = CAPTURED[kind];
  const p = Buffer.alloc(length);
  Buffer.from(hex, 'hex').copy(p);
  return p;
}

interface Hdr {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}

/** `ip` with a virtio_net_hdr in front. */
function vnet(ip: Buffer, h: Hdr = {}): Buffer {
  const p = Buffer.alloc(10 + ip.length);
  p[0] = h.flags ?? 0;
  p[1] = h.gsoType ?? VIRTIO_NET_HDR_GSO_NONE;
  p.writeUInt16LE(h.hdrLen ?? 0, 2);
  p.writeUInt16LE(h.gsoSize ?? 0, 4);
  p.writeUInt16LE(h.csumStart ?? 0, 6);
  p.writeUInt16LE(h.csumOffset ?? 0, 8);
  ip.copy(p, 10);
  return p;
}

/** A copy of `p` with header fields replaced. */
function withHdr(p: Buffer, h: Hdr): Buffer {
  const q = Buffer.from(p);
  if (h.flags !== undefined) q[0] = h.flags;
  if (h.gsoType !== undefined) q[1] = h.gsoType;
  if (h.hdrLen !== undefined) q.writeUInt16LE(h.hdrLen, 2);
  if (h.gsoSize !== undefined) q.writeUInt16LE(h.gsoSize, 4);
  if (h.csumStart !== undefined) q.writeUInt16LE(h.csumStart, 6);
  if (h.csumOffset !== undefined) q.writeUInt16LE(h.csumOffset, 8);
  return q;
}

/** A copy of `p` with bytes of the IP packet (offsets after the vnet header) replaced. */
function withIp(p: Buffer, at: number, bytes: number[]): Buffer {
  const q = Buffer.from(p);
  Buffer.from(bytes).copy(q, 10 + at);
  return q;
}

const V4 = ipv4Udp('10.0.0.2', '10.0.0.1', Buffer.alloc(100));
const V6 = ipv6Udp('fd000000000000000000000000000002', 'fd000000000000000000000000000001', Buffer.alloc(100));

/** IPv6 TCP super-packet with a hop-by-hop options header (8 bytes) before TCP. */
function tcp6WithHopByHop(): Buffer {
  const ip = Buffer.alloc(40 + 8 + 20 + 3000);
  ip[0] = 0x60;
  ip.writeUInt16BE(ip.length - 40, 4);
  ip[6] = 0; // hop-by-hop
  ip[7] = 64;
  ip[40] = 6; // then TCP
  ip[41] = 0; // (0 + 1) * 8 bytes
  ip[40 + 8 + 12] = 5 << 4;
  return vnet(ip, {
    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: VIRTIO_NET_HDR_GSO_TCPV6,
    hdrLen: 68,
    gsoSize: 1200,
    csumStart: 48,
    csumOffset: 16,
  });
}

/** IPv4 with 4 bytes of options, TCP, as a TSO super-packet. */
function tcp4WithOptions(): Buffer {
  const ip = Buffer.alloc(24 + 20 + 4000);
  ip[0] = 0x46;
  ip.writeUInt16BE(ip.length, 2);
  ip[9] = 6;
  ip[24 + 12] = 5 << 4;
  return vnet(ip, {
    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
    hdrLen: 44,
    gsoSize: 1448,
    csumStart: 24,
    csumOffset: 16,
  });
}

/** GRE (IPv4 in IPv4) whose inner TCP checksum is left to the device: csum_start points past GRE. */
function greInnerCsum(): Buffer {
  const inner = Buffer.alloc(20 + 20 + 50);
  inner[0] = 0x45;
  inner[9] = 6;
  inner[20 + 12] = 5 << 4;
  const ip = Buffer.alloc(20 + 4 + inner.length);
  ip[0] = 0x45;
  ip[9] = 47; // GRE
  ip.writeUInt16BE(0x0800, 22);
  inner.copy(ip, 24);
  return vnet(ip, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 24 + 20, csumOffset: 16 });
}

describe('checkVnetPacket', () => {
  it('passes every header the kernel wrote on reads from a TUN with offloads', () => {
    for (const kind of Object.keys(CAPTURED) as (keyof typeof CAPTURED)[]) {
      assert.equal(checkVnetPacket(captured(kind)), null, kind);
    }
  });

  it('passes the other headers a kernel writes or takes', () => {
    const cases: Array<[string, Buffer]> = [
      ['no offload state at all', vnet(V4)],
      ['IPv6, no offload state', vnet(V6)],
      ['DATA_VALID (the read path sets it for verified checksums)', vnet(V4, { flags: 2 })],
      ['TCPV4 with the ECN bit', withHdr(captured('tcp4_gso'), { gsoType: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN })],
      ['TCPV6 with the ECN bit', withHdr(captured('tcp6_gso'), { gsoType: VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN })],
      ['TSO without NEEDS_CSUM (checksum already valid)', withHdr(captured('tcp4_gso'), { flags: 2, csumStart: 0, csumOffset: 0 })],
      ['hdr_len the whole packet', withHdr(captured('tcp4_gso'), { hdrLen: 6840 })],
      ['gso_size the whole packet', withHdr(captured('tcp4_gso'), { gsoSize: 6840 })],
      ['IPv4 with options', tcp4WithOptions()],
      ['IPv6 with a hop-by-hop header', tcp6WithHopByHop()],
      ['the inner checksum of a GRE packet', greInnerCsum()],
      ['UDP checksum on an IPv4 fragment', withIp(vnet(V4, { flags: 1, csumStart: 20, csumOffset: 6 }), 6, [0x20, 0])],
    ];
    for (const [name, p] of cases) assert.equal(checkVnetPacket(p), null, name);
  });

  it('names what is wrong with each kind of broken header', () => {
    const tso4 = captured('tcp4_gso');
    const tso6 = captured('tcp6_gso');
    const uso4 = captured('udp4_gso');
    const udp4 = captured('udp4');
    const tcp4 = captured('tcp4');
    const cases: Array<[VnetFault, string, Buffer]> = [
      ['short', 'nothing after the header', Buffer.alloc(10)],
      ['short', 'less than an IPv4 header', vnet(V4.subarray(0, 19))],
      ['short', 'less than an IPv6 header', vnet(V6.subarray(0, 39))],
      ['short', 'not even a header', Buffer.alloc(3)],
      ['ip_version', 'version 5', withIp(tso4, 0, [0x55])],
      ['ip_version', 'version 0', vnet(Buffer.alloc(60))],
      ['ip_header', 'IPv4 IHL 4', withIp(vnet(V4), 0, [0x44])],
      ['ip_header', 'IPv4 IHL past the end', vnet(Buffer.concat([Buffer.from([0x4f]), Buffer.alloc(30)]))],
      ['ip_header', 'IPv6 extension header past the end', withIp(withIp(captured('tcp6'), 6, [0]), 41, [0xff])],
      ['flags', 'RSC_INFO', withHdr(tso4, { flags: 4 })],
      ['flags', 'NEEDS_CSUM and DATA_VALID', withHdr(tso4, { flags: 3 })],
      ['flags', 'an unknown bit', withHdr(udp4, { flags: 0x81 })],
      ['flags', 'all bits', withHdr(vnet(V4), { flags: 0xff })],
      ['gso_type', 'legacy UFO', withHdr(uso4, { gsoType: 3 })],
      ['gso_type', 'type 2', withHdr(tso4, { gsoType: 2 })],
      ['gso_type', 'type 6', withHdr(tso4, { gsoType: 6 })],
      ['gso_type', 'ECN alone', withHdr(udp4, { gsoType: 0x80, gsoSize: 100 })],
      ['gso_type', 'UDP_L4 with ECN', withHdr(uso4, { gsoType: 0x85 })],
      ['gso_type', 'UDP tunnel GSO (IPv4)', withHdr(uso4, { gsoType: 0x20 })],
      ['gso_type', 'UDP tunnel GSO (IPv6)', withHdr(uso4, { gsoType: 0x40 })],
      ['gso_ip_version', 'TCPV4 on IPv6', withHdr(tso6, { gsoType: VIRTIO_NET_HDR_GSO_TCPV4 })],
      ['gso_ip_version', 'TCPV6 on IPv4', withHdr(tso4, { gsoType: VIRTIO_NET_HDR_GSO_TCPV6 })],
      ['gso_l4', 'TCPV4 on UDP', withHdr(uso4, { gsoType: VIRTIO_NET_HDR_GSO_TCPV4, csumOffset: 16 })],
      ['gso_l4', 'UDP_L4 on TCP', withHdr(tso4, { gsoType: VIRTIO_NET_HDR_GSO_UDP_L4, csumOffset: 6 })],
      ['gso_l4', 'TSO of a fragment', withIp(tso4, 6, [0x20, 0])],
      ['gso_l4', 'TCP data offset below 5', withIp(tso4, 32, [0x40])],
      ['gso_l4', 'TCP header cut short', withHdr(tcp4.subarray(0, 10 + 20 + 12), { gsoType: 1, gsoSize: 1, hdrLen: 0, flags: 0 })],
      ['gso_size', 'gso_size 0', withHdr(tso4, { gsoSize: 0 })],
      ['gso_size', 'GSO_BY_FRAGS', withHdr(tso4, { gsoSize: 0xffff })],
      ['gso_size', 'larger than the packet', withHdr(tso4, { gsoSize: 6841 })],
      ['gso_csum', 'UDP_L4 without NEEDS_CSUM', withHdr(uso4, { flags: 0 })],
      ['hdr_len', 'one past the packet', withHdr(tso4, { hdrLen: 6841 })],
      ['hdr_len', '0xffff', withHdr(udp4, { hdrLen: 0xffff })],
      ['csum_start', 'inside the IPv4 header', withHdr(udp4, { csumStart: 10 })],
      ['csum_start', 'inside the IPv6 header', withHdr(captured('udp6'), { csumStart: 8 })],
      ['csum_start', 'TSO checksum not at the TCP header', withHdr(tso4, { csumStart: 24, csumOffset: 12 })],
      ['csum_start', 'USO checksum not at the UDP header', withHdr(uso4, { csumStart: 40, csumOffset: 6 })],
      ['csum_offset', 'checksum field past the end', withHdr(udp4, { csumStart: 20, csumOffset: 318 - 20 - 1 })],
      ['csum_offset', 'csum_start + csum_offset overflowing 16 bits', withHdr(udp4, { csumStart: 0xffff, csumOffset: 0xffff })],
      ['csum_offset', 'TSO with the UDP offset', withHdr(tso4, { csumOffset: 6 })],
      ['csum_offset', 'USO with the TCP offset', withHdr(uso4, { csumOffset: 16 })],
      ['csum_offset', 'TCP checksum on the wrong field', withHdr(tcp4, { csumOffset: 6 })],
      ['csum_offset', 'UDP checksum on the wrong field', withHdr(udp4, { csumOffset: 4 })],
    ];
    for (const [fault, name, p] of cases) assert.equal(checkVnetPacket(p), fault, name);
  });

  it('never throws on random headers, and what it passes is within the packet (property)', () => {
    let seed = Number(process.env['DPTCP_FUZZ_SEED'] ?? 0x7e57);
    const rnd = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const bodies = [
      ...(Object.keys(CAPTURED) as (keyof typeof CAPTURED)[]).map((k) => captured(k)),
      tcp6WithHopByHop(),
      greInnerCsum(),
    ];
    const cases = Number(process.env['DPTCP_FUZZ_CASES'] ?? 200_000);
    let passed = 0;
    for (let n = 0; n < cases; n++) {
      let p: Buffer;
      if (rnd(4) === 0) {
        p = Buffer.alloc(rnd(120)); // anything at all, of any length
        for (let i = 0; i < p.length; i++) p[i] = rnd(256);
      } else {
        p = Buffer.from(bodies[rnd(bodies.length)] as Buffer);
        // Mostly plausible values, so the deeper checks are reached too.
        const pick = (plausible: number[]): number => (rnd(2) === 0 ? (plausible[rnd(plausible.length)] as number) : rnd(0x10000));
        p[0] = rnd(2) === 0 ? rnd(4) : rnd(256);
        p[1] = rnd(2) === 0 ? ([0, 1, 3, 4, 5, 0x81, 0x84][rnd(7)] as number) : rnd(256);
        p.writeUInt16LE(pick([0, 40, 54, p.length - 10]), 2);
        p.writeUInt16LE(pick([0, 1, 1200, p.length - 10]), 4);
        p.writeUInt16LE(pick([0, 20, 40, 48]), 6);
        p.writeUInt16LE(pick([0, 6, 16]), 8);
      }
      const fault = checkVnetPacket(p);
      if (fault !== null) continue;
      passed++;
      // What passes must be what the kernel takes, checked here from first principles.
      const len = p.length - 10;
      const v = (p[10] as number) >> 4;
      const msg = `seed case ${n}: ${p.toString('hex', 0, 30)}`;
      assert.ok(v === 4 ? len >= 20 : v === 6 && len >= 40, msg);
      assert.ok([0, 1, 2].includes(p[0] as number), msg);
      assert.ok(p.readUInt16LE(2) <= len, msg);
      if (p[0] === VIRTIO_NET_HDR_F_NEEDS_CSUM) assert.ok(p.readUInt16LE(6) + p.readUInt16LE(8) + 2 <= len, msg);
      const gso = p[1] as number;
      if (gso !== VIRTIO_NET_HDR_GSO_NONE) {
        assert.ok([1, 4, 5, 0x81, 0x84].includes(gso), msg);
        const size = p.readUInt16LE(4);
        assert.ok(size > 0 && size <= len, msg);
        if ((gso & 0x7f) === VIRTIO_NET_HDR_GSO_TCPV4) assert.equal(v, 4, msg);
        if ((gso & 0x7f) === VIRTIO_NET_HDR_GSO_TCPV6) assert.equal(v, 6, msg);
        if (gso === VIRTIO_NET_HDR_GSO_UDP_L4) assert.equal(p[0], VIRTIO_NET_HDR_F_NEEDS_CSUM, msg);
      }
    }
    assert.ok(passed > cases / 100, `only ${passed} of ${cases} random cases passed: the generator misses the accept paths`);
  });
});
