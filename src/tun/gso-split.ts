// Cuts a segmentation-offload packet (virtio_net_hdr, then an IPv4 or IPv6
// TCP packet of many segments, or a UDP one of many datagrams (UDP_SEGMENT,
// as QUIC sends), as the TUN read path hands it over with offloads on) into
// smaller ones of the same kind: on a link paced at a few
// Mbit/s a 64 KiB packet takes tens of milliseconds, and on a TCP connection
// whatever follows it (a ping) waits that long. Each piece is again an offload
// packet of whole segments (or one plain segment) that the far kernel
// finishes as it would the original: its checksum field holds the
// pseudo-header sum for its own length (CHECKSUM_PARTIAL), the IPv4 header
// checksum is whole, sequence numbers and IP ids continue, FIN and PSH stay on
// the last piece and CWR on the first, as the kernel's own segmentation does
// (net/ipv4/tcp_offload.c); a UDP piece's length field is its own
// (net/ipv4/udp_offload.c). Anything else (IPv6 extension headers, a packet
// without NEEDS_CSUM, lengths that disagree) is left whole.
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VNET_HDR_BYTES,
  TCP_CSUM_OFFSET,
  UDP_CSUM_OFFSET,
} from './vnet-hdr.js';

/** The pieces of a split packet, laid out in one buffer with `headroom` free bytes before each. */
export interface GsoPieces {
  readonly buf: Buffer;
  /** Piece i is buf[starts[i], ends[i]): its virtio_net_hdr, then its IP packet. */
  readonly starts: number[];
  readonly ends: number[];
}

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const UDP_HDR = 8;

/**
 * `p` (virtio_net_hdr and IP packet) as pieces of at most `maxPayload` TCP or
 * UDP payload bytes each (rounded down to whole segments, at least one), or
 * undefined when it is not an offload packet this cuts, or already small
 * enough. `p` is only read.
 */
export function splitGso(p: Buffer, maxPayload: number, headroom: number): GsoPieces | undefined {
  const o = VNET_HDR_BYTES;
  if (p.length < o + 40) return undefined;
  const gso = (p[1] as number) & ~VIRTIO_NET_HDR_GSO_ECN;
  const udp = p[1] === VIRTIO_NET_HDR_GSO_UDP_L4;
  if (p[0] !== VIRTIO_NET_HDR_F_NEEDS_CSUM || (gso !== VIRTIO_NET_HDR_GSO_TCPV4 && gso !== VIRTIO_NET_HDR_GSO_TCPV6 && !udp)) return undefined;
  const mss = p.readUInt16LE(4);
  const csumStart = p.readUInt16LE(6);
  const version = (p[o] as number) >> 4;
  // A UDP offload packet's type does not say the IP version; a TCP one's must match it.
  const v4 = udp ? version === 4 : gso === VIRTIO_NET_HDR_GSO_TCPV4;
  const proto = udp ? PROTO_UDP : PROTO_TCP;
  let ipHdr: number;
  if (v4) {
    ipHdr = ((p[o] as number) & 0x0f) * 4;
    if (version !== 4 || ipHdr < 20 || p[o + 9] !== proto) return undefined;
    if ((((p[o + 6] as number) & 0x3f) | (p[o + 7] as number)) !== 0) return undefined; // a fragment
  } else {
    ipHdr = 40;
    if (version !== 6 || p[o + 6] !== proto) return undefined; // extension headers: left whole
  }
  if (csumStart !== ipHdr || p.readUInt16LE(8) !== (udp ? UDP_CSUM_OFFSET : TCP_CSUM_OFFSET)) return undefined;
  const t = o + ipHdr;
  if (p.length < t + 20) return undefined;
  const l4Hdr = udp ? UDP_HDR : ((p[t + 12] as number) >> 4) * 4;
  const hdr = ipHdr + l4Hdr; // IP and TCP/UDP headers
  const ipLen = p.length - o;
  const payload = ipLen - hdr;
  if (l4Hdr < (udp ? UDP_HDR : 20) || payload <= 0 || mss === 0) return undefined;
  // The IP header's own length (and UDP's) must agree with what was read, or the packet is not what it says.
  if (v4 ? p.readUInt16BE(o + 2) !== ipLen : p.readUInt16BE(o + 4) !== ipLen - 40) return undefined;
  if (udp && p.readUInt16BE(t + 4) !== ipLen - ipHdr) return undefined;
  const chunk = Math.max(mss, Math.floor(maxPayload / mss) * mss);
  if (payload <= chunk) return undefined;
  const n = Math.ceil(payload / chunk);
  const pieceHdr = o + hdr;
  const buf = Buffer.allocUnsafe(n * (headroom + pieceHdr) + payload);
  const starts: number[] = [];
  const ends: number[] = [];
  const seq0 = udp ? 0 : p.readUInt32BE(t + 4);
  const id0 = v4 ? p.readUInt16BE(o + 4) : 0;
  const flags0 = udp ? 0 : (p[t + 13] as number);
  // The pseudo header without its length: addresses and protocol.
  const addrSum = v4 ? sum16(p, o + 12, o + 20) : sum16(p, o + 8, o + 40);
  let at = 0;
  for (let i = 0; i < n; i++) {
    const from = i * chunk;
    const bytes = Math.min(chunk, payload - from);
    const start = at + headroom;
    p.copy(buf, start, 0, pieceHdr);
    p.copy(buf, start + pieceHdr, pieceHdr + from, pieceHdr + from + bytes);
    const end = start + pieceHdr + bytes;
    const ip = start + o;
    const l4 = ip + ipHdr;
    const len = hdr + bytes;
    // hdr_len: the headers. The TUN read path writes the skb's linear length there, which after
    // a NIC's GRO may hold a whole segment too: longer than a short last piece, which the far
    // TUN would refuse.
    buf.writeUInt16LE(hdr, start + 2);
    if (bytes <= mss) {
      buf[start + 1] = VIRTIO_NET_HDR_GSO_NONE;
      buf.writeUInt16LE(0, start + 4); // gso_size
    } else if (i > 0) {
      buf[start + 1] = gso; // no ECN bit: CWR stays on the first piece only
    }
    if (v4) {
      buf.writeUInt16BE(len, ip + 2);
      buf.writeUInt16BE((id0 + from / mss) & 0xffff, ip + 4);
      buf.writeUInt16BE(0, ip + 10);
      buf.writeUInt16BE(~fold(sum16(buf, ip, ip + ipHdr)) & 0xffff, ip + 10);
    } else {
      buf.writeUInt16BE(len - 40, ip + 4);
    }
    if (udp) {
      buf.writeUInt16BE(len - ipHdr, l4 + 4);
    } else {
      buf.writeUInt32BE((seq0 + from) >>> 0, l4 + 4);
      let flags = flags0;
      if (i < n - 1) flags &= ~(TCP_FIN | TCP_PSH);
      if (i > 0) flags &= ~TCP_CWR;
      buf[l4 + 13] = flags;
    }
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum for this piece's TCP/UDP length.
    buf.writeUInt16BE(fold(addrSum + proto + (len - ipHdr)), l4 + (udp ? UDP_CSUM_OFFSET : TCP_CSUM_OFFSET));
    starts.push(start);
    ends.push(end);
    at = end;
  }
  return { buf, starts, ends };
}

/** The ones' complement sum of the big-endian 16-bit words of b[from, to) (an even span), unfolded. */
function sum16(b: Buffer, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i += 2) s += ((b[i] as number) << 8) | (b[i + 1] as number);
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}
