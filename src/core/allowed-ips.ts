// Cryptokey routing (WireGuard's allowed IPs): which session a packet from the
// TUN belongs to, by the longest prefix holding its destination. A binary
// trie per family, walked bit by bit: a lookup costs at most 32 or 128 steps
// however many prefixes there are (thousands of peers stay fast). Removing a
// value walks only the paths of its own prefixes and prunes the nodes left
// empty, so the trie holds what is routed now, not every address ever claimed.
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
  /** The prefixes inserted for each value (some may lead elsewhere since: checked on removal). */
  private readonly prefixesOf = new Map<T, TunnelAddress[]>();

  get size(): number {
    return this.count;
  }

  /** Nodes in both tries, roots included (2 when empty). */
  get nodes(): number {
    const walk = (n: Node<T> | undefined): number => (n === undefined ? 0 : 1 + walk(n.zero) + walk(n.one));
    return walk(this.v4) + walk(this.v6);
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
    const list = this.prefixesOf.get(value);
    if (list === undefined) this.prefixesOf.set(value, [prefix]);
    else list.push(prefix);
  }

  /** The prefixes that lead to `value` now (of those inserted for it, some may lead elsewhere since). */
  prefixes(value: T): TunnelAddress[] {
    return (this.prefixesOf.get(value) ?? []).filter((p) => this.exact(p)?.value === value);
  }

  /** The node of exactly `prefix`, if the trie has one. */
  private exact(prefix: TunnelAddress): Node<T> | undefined {
    const bytes = addressBytes(prefix);
    let n: Node<T> | undefined = prefix.family === 4 ? this.v4 : this.v6;
    for (let i = 0; i < prefix.prefix && n !== undefined; i++) {
      const bit = ((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1;
      n = bit === 0 ? n.zero : n.one;
    }
    return n;
  }

  /** Removes every prefix that leads to `value`. */
  removeValue(value: T): void {
    const list = this.prefixesOf.get(value);
    if (list === undefined) return;
    this.prefixesOf.delete(value);
    for (const p of list) this.remove(p, value);
  }

  /** Clears `prefix` if it leads to `value`, and prunes the nodes that leaves with nothing below them. */
  private remove(prefix: TunnelAddress, value: T): void {
    const bytes = addressBytes(prefix);
    const path: Node<T>[] = [prefix.family === 4 ? this.v4 : this.v6];
    for (let i = 0; i < prefix.prefix; i++) {
      const n = path[i] as Node<T>;
      const next = (((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1) === 0 ? n.zero : n.one;
      if (next === undefined) return;
      path.push(next);
    }
    const end = path[path.length - 1] as Node<T>;
    if (end.value !== value) return;
    end.value = undefined;
    this.count--;
    for (let i = path.length - 1; i > 0; i--) {
      const n = path[i] as Node<T>;
      if (n.value !== undefined || n.zero !== undefined || n.one !== undefined) return;
      const parent = path[i - 1] as Node<T>;
      if (parent.zero === n) parent.zero = undefined;
      else parent.one = undefined;
    }
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
