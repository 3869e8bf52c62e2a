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
 * A filter that passes only packets whose source address is one of
 * `addresses` exactly: a client may send from its own tunnel address and from
 * nothing else (not even another address of its prefix, such as the server's).
 */
export function sourceIs(addresses: readonly TunnelAddress[], ipOffset = 0): (packet: Buffer) => boolean {
  const v4 = addresses.filter((a) => a.family === 4).map((a) => addressBytes(a).readUInt32BE(0));
  const v6 = addresses.filter((a) => a.family === 6).map((a) => addressBytes(a));
  const o = ipOffset;
  return (p) => {
    const version = (p[o] ?? 0) >> 4;
    if (version === 4) return p.length >= o + 20 && v4.includes(p.readUInt32BE(o + 12));
    if (version === 6) return p.length >= o + 40 && v6.some((b) => b.equals(p.subarray(o + 8, o + 24)));
    return false;
  };
}
