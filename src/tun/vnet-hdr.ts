// The struct virtio_net_hdr in front of every packet with offloads on comes
// from the peer, over the network: the far kernel wrote it when it handed the
// packet to the far dp-tcp, and an authenticated peer that is buggy or hostile
// can send anything. checkVnetPacket() lets through what a Linux kernel's TUN
// read path produces (tun_put_user -> virtio_net_hdr_from_skb) and what the
// write path takes (tun_get_user -> virtio_net_hdr_to_skb, include/linux/
// virtio_net.h), and nothing else, so the GSO and checksum code of this kernel
// never sees a header no kernel would have written.
//
// Layout (include/uapi/linux/virtio_net.h), little-endian as the TUN of an x86
// or ARM host reads and writes it:
//   flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16
// csum_start and hdr_len count from the start of the IP header.

export const VNET_HDR_BYTES = 10;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/**
 * Set by the TUN read path (virtio_net_hdr_from_skb with has_data_valid) on
 * packets whose checksum was verified, so a peer forwards it; the write path
 * ignores it (a bad checksum under it is still dropped, seen on Linux 6.18).
 */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** GSO_BY_FRAGS: a kernel-internal gso_size the write path refuses. */
const GSO_BY_FRAGS = 0xffff;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
/** offsetof(struct tcphdr, check), offsetof(struct udphdr, check). */
export const TCP_CSUM_OFFSET = 16;
export const UDP_CSUM_OFFSET = 6;
/** IPv6 extension headers walked to find TCP/UDP, at most this many. */
const MAX_IPV6_EXTENSIONS = 8;

/** Why a packet was not written; one counter key for all of them, this for the log. */
export type VnetFault =
  | 'short' // less than a minimal IPv4 or IPv6 header after the virtio_net_hdr
  | 'ip_version' // version nibble neither 4 nor 6
  | 'ip_header' // IPv4 IHL or an IPv6 extension header runs past the packet
  | 'flags' // a flag other than NEEDS_CSUM or DATA_VALID, or both
  | 'gso_type' // not NONE, TCPV4, TCPV6 or UDP_L4 (legacy UFO too), or ECN without TCP
  | 'gso_ip_version' // TCPV4 on IPv6 or TCPV6 on IPv4
  | 'gso_l4' // GSO on a fragment, or the packet is not TCP/UDP as gso_type says, or its header is cut
  | 'gso_size' // 0, GSO_BY_FRAGS, or larger than the packet
  | 'gso_csum' // UDP_L4 without NEEDS_CSUM (the kernel needs it to segment)
  | 'hdr_len' // larger than the packet
  | 'csum_start' // inside the IP header, or (GSO) not at the TCP/UDP header
  | 'csum_offset'; // checksum field past the end, or not where TCP/UDP keep theirs

/**
 * null if `p` (virtio_net_hdr, then the IP packet) may be written to a TUN
 * with IFF_VNET_HDR, else why not. Reads only inside `p`; never throws.
 */
export function checkVnetPacket(p: Buffer): VnetFault | null {
  const o = VNET_HDR_BYTES;
  const len = p.length - o; // bytes of IP packet
  if (len < 20) return 'short';
  const version = (p[o] as number) >> 4;
  // Where the TCP/UDP header starts (IPv6: after its extension headers, below).
  let l4: number;
  if (version === 4) {
    l4 = ((p[o] as number) & 0x0f) * 4;
    if (l4 < 20 || l4 > len) return 'ip_header';
  } else if (version === 6) {
    if (len < 40) return 'short';
    l4 = 40;
  } else {
    return 'ip_version';
  }

  const flags = p[0] as number;
  if (flags !== 0 && flags !== VIRTIO_NET_HDR_F_NEEDS_CSUM && flags !== VIRTIO_NET_HDR_F_DATA_VALID) return 'flags';
  const gso = p[1] as number;
  const gsoBase = gso & ~VIRTIO_NET_HDR_GSO_ECN;
  if (
    gso !== VIRTIO_NET_HDR_GSO_NONE &&
    gsoBase !== VIRTIO_NET_HDR_GSO_TCPV4 &&
    gsoBase !== VIRTIO_NET_HDR_GSO_TCPV6 &&
    gso !== VIRTIO_NET_HDR_GSO_UDP_L4
  ) {
    return 'gso_type';
  }
  if (le16(p, 2) > len) return 'hdr_len';
  const needsCsum = flags === VIRTIO_NET_HDR_F_NEEDS_CSUM;
  if (!needsCsum && gso === VIRTIO_NET_HDR_GSO_NONE) return null; // the common small packet: nothing to point at

  // Which protocol the TCP/UDP header is, if it is one.
  let proto: number;
  let fragment: boolean;
  if (version === 4) {
    proto = p[o + 9] as number;
    fragment = (((p[o + 6] as number) & 0x3f) | (p[o + 7] as number)) !== 0; // MF or a fragment offset
  } else {
    proto = p[o + 6] as number;
    fragment = false;
    // Hop-by-hop, routing and destination options may come before TCP/UDP.
    for (let n = 0; n < MAX_IPV6_EXTENSIONS && (proto === 0 || proto === 43 || proto === 60); n++) {
      if (l4 + 8 > len) return 'ip_header';
      const next = p[o + l4] as number;
      l4 += ((p[o + l4 + 1] as number) + 1) * 8;
      proto = next;
    }
    if (l4 > len) return 'ip_header';
    if (proto === 44) fragment = true;
  }

  const csumStart = le16(p, 6);
  const csumOffset = le16(p, 8);
  if (needsCsum) {
    if (csumStart < (version === 4 ? l4 : 40)) return 'csum_start';
    if (csumStart + csumOffset + 2 > len) return 'csum_offset';
  }

  if (gso === VIRTIO_NET_HDR_GSO_NONE) {
    // A checksum for the packet's own TCP/UDP header must land on its check
    // field; one deeper in (the inner header of a tunnel) is only bounded.
    if (!fragment && csumStart === l4) {
      if (proto === IPPROTO_TCP && csumOffset !== TCP_CSUM_OFFSET) return 'csum_offset';
      if (proto === IPPROTO_UDP && csumOffset !== UDP_CSUM_OFFSET) return 'csum_offset';
    }
    return null;
  }

  const gsoSize = le16(p, 4);
  if (gsoSize === 0 || gsoSize === GSO_BY_FRAGS || gsoSize > len) return 'gso_size';
  const tcp = gsoBase !== VIRTIO_NET_HDR_GSO_UDP_L4;
  if (gsoBase === VIRTIO_NET_HDR_GSO_TCPV4 && version !== 4) return 'gso_ip_version';
  if (gsoBase === VIRTIO_NET_HDR_GSO_TCPV6 && version !== 6) return 'gso_ip_version';
  if (fragment || proto !== (tcp ? IPPROTO_TCP : IPPROTO_UDP)) return 'gso_l4';
  if (tcp) {
    if (l4 + 20 > len) return 'gso_l4';
    const doff = ((p[o + l4 + 12] as number) >> 4) * 4;
    if (doff < 20 || l4 + doff > len) return 'gso_l4';
  } else if (l4 + 8 > len) {
    return 'gso_l4';
  }
  if (needsCsum) {
    if (csumStart !== l4) return 'csum_start';
    if (csumOffset !== (tcp ? TCP_CSUM_OFFSET : UDP_CSUM_OFFSET)) return 'csum_offset';
  } else if (!tcp) {
    return 'gso_csum';
  }
  return null;
}

/** Offsets are in bounds: the caller checked the length first. */
function le16(p: Buffer, at: number): number {
  return (p[at] as number) | ((p[at + 1] as number) << 8);
}
