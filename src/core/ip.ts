// Just enough IP address arithmetic for routing by tunnel address and for
// anti-spoofing: addresses as bytes, prefix membership, packet source checks.
import { addressBytes, type TunnelAddress } from '../protocol/handshake.js';

/** Is `a` inside the network `net`/`net.prefix` (same family)? */
export function inPrefix(a: TunnelAddress, net: TunnelAddress): boolean {
  if (a.family !== net.family) return false;
  const x = addressBytes(a);
  const y = addressBytes(net);
  let bits = net.prefix;
  for (let i = 0; i < x.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((x[i] as number) & mask) !== ((y[i] as number) & mask)) return false;
  }
  return true;
}

/**
 * A filter that passes only packets whose source address lies in one of
 * `prefixes`. With the client's own tunnel addresses as host prefixes (/32,
 * /128), a client may send from its own tunnel address and from nothing else
 * (not even another address of its prefix, such as the server's). IPv6
 * link-local and unspecified (::) sources (the client kernel's router
 * solicitations, duplicate address detection) are told apart: dropped, but
 * not counted as spoofing.
 */
export function sourceIn(prefixes: readonly TunnelAddress[], ipOffset = 0): (packet: Buffer) => 'ok' | 'spoofed' | 'link_local' {
  const nets = prefixes.map((p) => ({ family: p.family, bytes: addressBytes(p), prefix: p.prefix }));
  const o = ipOffset;
  // A loop, not nets.some(): a closure per packet is garbage per packet.
  const matches = (p: Buffer, at: number, family: 4 | 6): boolean => {
    for (let i = 0; i < nets.length; i++) {
      const n = nets[i] as (typeof nets)[number];
      if (n.family === family && bitsEqual(p, at, n.bytes, n.prefix)) return true;
    }
    return false;
  };
  return (p) => {
    const version = (p[o] ?? 0) >> 4;
    if (version === 4) return p.length >= o + 20 && matches(p, o + 12, 4) ? 'ok' : 'spoofed';
    if (version === 6) {
      if (p.length < o + 40) return 'spoofed';
      if (matches(p, o + 8, 6)) return 'ok';
      if (p[o + 8] === 0xfe && ((p[o + 9] as number) & 0xc0) === 0x80) return 'link_local';
      // The unspecified address :: (duplicate address detection, MLD reports before an address is up).
      for (let i = o + 8; i < o + 24; i++) if (p[i] !== 0) return 'spoofed';
      return 'link_local';
    }
    return 'spoofed';
  };
}

/** The first `bits` bits of p[at..] equal those of `net`. */
function bitsEqual(p: Buffer, at: number, net: Buffer, bits: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((p[at + i] as number) & mask) !== ((net[i] as number) & mask)) return false;
  }
  return true;
}

/** The client's own tunnel addresses as host prefixes. */
export function hostPrefixes(addresses: readonly TunnelAddress[]): TunnelAddress[] {
  return addresses.map((a) => ({ ...a, prefix: a.family === 4 ? 32 : 128 }));
}
