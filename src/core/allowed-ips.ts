// Cryptokey routing (WireGuard's allowed IPs): which session a packet from the
// TUN belongs to, by the longest prefix holding its destination. A binary
// trie per family, walked bit by bit: a lookup costs at most 32 or 128 steps
// however many prefixes there are (thousands of peers stay fast).
import { addressBytes, type TunnelAddress } from '../protocol/handshake.js';

interface Node<T> {
  zero: Node<T> | undefined;
  one: Node<T> | undefined;
  value: T | undefined;
}

const node = <T>(): Node<T> => ({ zero: undefined, one: undefined, value: undefined });

export class AllowedIps<T> {
  private readonly v4: Node<T> = node();
  private readonly v6: Node<T> = node();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** `prefix` now leads to `value` (replacing whatever it led to). */
  insert(prefix: TunnelAddress, value: T): void {
    const bytes = addressBytes(prefix);
    let n = prefix.family === 4 ? this.v4 : this.v6;
    for (let i = 0; i < prefix.prefix; i++) {
      const bit = ((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1;
      if (bit === 0) n = n.zero ??= node();
      else n = n.one ??= node();
    }
    if (n.value === undefined) this.count++;
    n.value = value;
  }

  /** Removes every prefix that leads to `value`. */
  removeValue(value: T): void {
    const walk = (n: Node<T> | undefined): void => {
      if (n === undefined) return;
      if (n.value === value) {
        n.value = undefined;
        this.count--;
      }
      walk(n.zero);
      walk(n.one);
    };
    walk(this.v4);
    walk(this.v6);
  }

  /** The value of the longest prefix holding the address at buf[off..] (4 or 16 bytes). */
  lookup(buf: Buffer, off: number, family: 4 | 6): T | undefined {
    let n: Node<T> | undefined = family === 4 ? this.v4 : this.v6;
    let best = n.value;
    const bits = family === 4 ? 32 : 128;
    for (let i = 0; i < bits && n !== undefined; i++) {
      const bit = ((buf[off + (i >> 3)] as number) >> (7 - (i & 7))) & 1;
      n = bit === 0 ? n.zero : n.one;
      if (n?.value !== undefined) best = n.value;
    }
    return best;
  }

  /** The value for a packet's destination (IPv4 or IPv6 header at p[o..]). */
  route(p: Buffer, o: number): T | undefined {
    const version = (p[o] ?? 0) >> 4;
    if (version === 4 && p.length >= o + 20) return this.lookup(p, o + 16, 4);
    if (version === 6 && p.length >= o + 40) return this.lookup(p, o + 24, 6);
    return undefined;
  }
}
