// The virtio_net_hdr checks against a real kernel; run as root inside a
// network namespace (test/e2e/native.test.ts does). Prints one JSON line.
//   node --import tsx test/helpers/vnet-probe.ts capture|write
// capture: the headers this kernel writes in front of TCP (TSO), UDP and
//   UDP GSO packets read from a TUN with offloads, each with checkVnetPacket's
//   verdict. A TCP handshake is answered by hand so the kernel sends data.
// write: batches with broken headers through TunWriter and the real device:
//   the good packets arrive, the others are counted, the process lives on.
import { execFile } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import { TunWriter } from '../../src/core/tun-writer.js';
import { createLogger } from '../../src/log.js';
import type { PacketBatch } from '../../src/tun/device.js';
import { NativeTunDevice } from '../../src/tun/native-device.js';
import { checkVnetPacket, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../src/tun/vnet-hdr.js';
import { ipv4Udp } from './packets.js';

const mode = process.argv[2];
const execFileP = promisify(execFile);

const V4_LOCAL = '10.9.2.1';
const V4_PEER = '10.9.2.2';
const V6_LOCAL = 'fd00:9:2::1';
const V6_PEER = 'fd00:9:2::2';

function open(): NativeTunDevice {
  return NativeTunDevice.open({
    name: 'dpv0',
    mtu: 1400,
    addresses: [
      { address: V4_LOCAL, prefix: 24 },
      { address: V6_LOCAL, prefix: 64 },
    ],
    batchPackets: 16,
    headroom: 16,
    offload: true,
  });
}

function ipChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** SYN+ACK for a SYN read from the TUN (after its vnet header), with the TCP checksum left to NEEDS_CSUM. */
function synAck(syn: Buffer): Buffer {
  const v6 = (syn[0] as number) >> 4 === 6;
  const ipLen = v6 ? 40 : ((syn[0] as number) & 0x0f) * 4;
  const tcp = 24; // 20 + MSS option
  const p = Buffer.alloc(10 + ipLen + tcp);
  p[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p.writeUInt16LE(ipLen, 6);
  p.writeUInt16LE(16, 8);
  const ip = p.subarray(10);
  if (v6) {
    ip[0] = 0x60;
    ip.writeUInt16BE(tcp, 4);
    ip[6] = 6;
    ip[7] = 64;
    syn.copy(ip, 8, 24, 40); // source: the SYN's destination
    syn.copy(ip, 24, 8, 24);
  } else {
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + tcp, 2);
    ip[8] = 64;
    ip[9] = 6;
    syn.copy(ip, 12, 16, 20);
    syn.copy(ip, 16, 12, 16);
    ip.writeUInt16BE(ipChecksum(ip.subarray(0, 20)), 10);
  }
  const th = ip.subarray(ipLen);
  const synTh = syn.subarray(ipLen);
  th.writeUInt16BE(synTh.readUInt16BE(2), 0);
  th.writeUInt16BE(synTh.readUInt16BE(0), 2);
  th.writeUInt32BE(0x10000000, 4);
  th.writeUInt32BE((synTh.readUInt32BE(4) + 1) >>> 0, 8);
  th[12] = (tcp / 4) << 4;
  th[13] = 0x12; // SYN, ACK
  th.writeUInt16BE(65535, 14);
  th.writeUInt32BE(0x02040550, 20); // MSS 1360
  return p;
}

interface Captured {
  kind: string;
  hex: string;
  length: number;
  fault: string | null;
}

/** What the kernel hands over for a TCP connection (IPv4 and IPv6), UDP and UDP GSO. */
async function capture(): Promise<unknown> {
  const tun = open();
  const seen: Captured[] = [];
  let answered = 0;
  tun.start(
    (b: PacketBatch) => {
      let off = 0;
      for (let i = 0; i < b.count; i++) {
        const len = b.lengths[i] as number;
        const pkt = b.arena.subarray(off + b.headroom, off + b.headroom + len);
        off += b.headroom + len;
        const ip = pkt.subarray(10);
        const v = (ip[0] as number) >> 4;
        const l4 = v === 4 ? ((ip[0] as number) & 0x0f) * 4 : 40;
        const proto = v === 4 ? ip[9] : ip[6];
        if (proto !== 6 && proto !== 17) continue; // router solicitations, MLD
        const fam = v === 4 ? '4' : '6';
        let kind: string;
        if (proto === 6) {
          const flags = ip[l4 + 13] as number;
          if (flags & 0x02) {
            tun.write([synAck(ip)], 0);
            answered++;
            kind = `tcp${fam}_syn`;
          } else kind = pkt[1] === 0 ? `tcp${fam}` : `tcp${fam}_gso`;
        } else kind = pkt[1] === 0 ? `udp${fam}` : `udp${fam}_gso`;
        // The headers and the length are what the checks look at; the payload is zeros in the fixtures.
        const hdrs = Math.min(len, 10 + l4 + (proto === 6 ? ((ip[l4 + 12] as number) >> 4) * 4 : 8));
        seen.push({ kind, hex: pkt.toString('hex', 0, hdrs), length: len, fault: checkVnetPacket(pkt) });
      }
    },
    (e) => {
      throw e;
    },
  );
  const data = Buffer.alloc(200_000, 0x61);
  const tcpFlow = (host: string, local: string): Promise<void> =>
    new Promise((resolve) => {
      const s = connect({ host, port: 5555, localAddress: local }, () => s.write(data));
      s.on('error', () => {});
      setTimeout(() => (s.destroy(), resolve()), 600);
    });
  await tcpFlow(V4_PEER, V4_LOCAL);
  await tcpFlow(V6_PEER, V6_LOCAL);
  const u4 = createSocket('udp4');
  const u6 = createSocket('udp6');
  await new Promise<void>((r) => u4.bind(0, V4_LOCAL, () => r()));
  await new Promise<void>((r) => u6.bind(0, V6_LOCAL, () => r()));
  u4.send(Buffer.alloc(300, 0x62), 9999, V4_PEER);
  u6.send(Buffer.alloc(300, 0x62), 9999, V6_PEER);
  // UDP GSO (UDP_SEGMENT): Node's dgram cannot set it; python can.
  const gso = (fam: string, host: string, local: string): string =>
    `import socket; s=socket.socket(socket.${fam}, socket.SOCK_DGRAM); s.bind(('${local}', 0)); ` +
    `s.setsockopt(17, 103, 1200); s.sendto(b'c' * 6000, ('${host}', 9999))`;
  let udpGso = true;
  for (const [fam, host, local] of [
    ['AF_INET', V4_PEER, V4_LOCAL],
    ['AF_INET6', V6_PEER, V6_LOCAL],
  ] as const) {
    try {
      await execFileP('python3', ['-c', gso(fam, host, local)]);
    } catch {
      udpGso = false; // no python3, or a kernel without UDP_SEGMENT
    }
  }
  await new Promise((r) => setTimeout(r, 300));
  u4.close();
  u6.close();
  tun.close();
  return { answered, udpGso, packets: seen };
}

function udpTo(port: number, text: string): Buffer {
  const pkt = ipv4Udp(V4_PEER, V4_LOCAL, Buffer.from(text));
  pkt.writeUInt16BE(port, 22);
  pkt.writeUInt16BE(0, 26); // no UDP checksum (allowed for IPv4)
  return Buffer.concat([Buffer.alloc(10), pkt]);
}

function collect(sock: Socket): string[] {
  const got: string[] = [];
  sock.on('message', (m) => got.push(m.toString()));
  return got;
}

/** Broken headers through the writer and the real device. */
async function write(): Promise<unknown> {
  const tun = open();
  tun.start(
    () => {},
    (e) => {
      throw e;
    },
  );
  const writer = new TunWriter(tun, 1 << 20, createLogger('error', 'probe'));
  const rx = createSocket('udp4');
  const got = collect(rx);
  await new Promise<void>((r) => rx.bind(7777, V4_LOCAL, () => r()));

  // One corrupted header among good packets: legacy UFO, which no kernel hands a TUN reader.
  const ufo = udpTo(7777, 'ufo');
  ufo[1] = 3;
  ufo.writeUInt16LE(8, 4);
  writer.write([udpTo(7777, 'one'), ufo, udpTo(7777, 'two')]);
  await new Promise((r) => setTimeout(r, 300));
  const first = { delivered: [...got].sort(), written: writer.stats.packets, refused: { ...writer.stats.refused } };

  // Random headers on good packets, many batches: each packet is written or counted, never a crash.
  // Half the fields take values a kernel uses, so some headers pass and reach the kernel.
  let seed = 0x5eed;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pick = (plausible: number[], range: number): number =>
    rnd(2) === 0 ? (plausible[rnd(plausible.length)] as number) : rnd(range);
  const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
  const before = { written: writer.stats.packets, refused: sum(writer.stats.refused) };
  const total = 2000;
  for (let b = 0; b < total / 50; b++) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 50; i++) {
      const p = udpTo(7778, 'x');
      p[0] = pick([0, 1, 2], 256);
      p[1] = pick([0, 1, 3, 4, 5], 256);
      for (const at of [2, 4, 6, 8]) p.writeUInt16LE(pick([0, 1, 6, 16, 20, 29], 0x10000), at);
      batch.push(p);
    }
    writer.write(batch);
  }
  await new Promise((r) => setTimeout(r, 300));
  const written = writer.stats.packets - before.written;
  const refused = sum(writer.stats.refused) - before.refused;
  rx.close();
  tun.close();
  return {
    first,
    random: { total, accounted: written + refused + writer.stats.backlogFull, written, refused: { ...writer.stats.refused } },
    readDiscards: tun.readDiscards,
  };
}

const result = mode === 'capture' ? await capture() : await write();
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
