// `dp-tcp check -c FILE`: validates a config, and the key and psk files it
// names, as a start would read them, without touching the system: no TUN
// device, no socket, no route, no iptables. Host names in it are looked up as
// a start looks them up (unless `resolve` is false): a name that does not
// resolve would stop the start. Exit 0 with a one-line summary, or 2 with
// every problem found, one a line, `file:line:col: field: problem`.
import { checkConfig } from '../config/load.js';
import { ResolveErrors, resolveNames, type Lookup } from '../config/resolve.js';
import type { Config, Role } from '../config/types.js';
import { DpError } from '../errors.js';

export interface CheckOutcome {
  readonly exitCode: 0 | 2;
  /** Lines for stdout (the summary) or stderr (the problems). */
  readonly lines: readonly string[];
}

function hostPort(address: string, port: number): string {
  return `${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/** The one line `check` prints for a good file. */
export function summarize(c: Config): string {
  const tun = `TUN ${c.tunnel.name} ${c.tunnel.addresses.map((a) => `${a.address}/${a.prefix}`).join(' ')} mtu ${c.tunnel.mtu}`;
  const security =
    c.security.mode === 'open'
      ? 'open mode (no key: not encrypted, anyone may join)'
      : c.security.mode === 'psk'
        ? `shared key (psk), ${c.security.encryption}`
        : c.role === 'server'
          ? `peer keys (${c.security.peers.length} peer${c.security.peers.length === 1 ? '' : 's'}), ${c.security.encryption}`
          : `peer keys, ${c.security.encryption}`;
  const links =
    c.role === 'client'
      ? c.links.map((l) => `${l.name} ${l.localAddress ?? 'any'} -> ${hostPort(l.remoteAddress, l.remotePort)}`)
      : c.links.map((l) => `${l.name} ${hostPort(l.listenAddress, l.listenPort)}`);
  const status = c.statusListen ? `status on ${hostPort(c.statusListen.address, c.statusListen.port)}` : 'status_listen off';
  return `${c.file}: ok: ${c.role}, ${tun}, ${c.links.length} link${c.links.length === 1 ? '' : 's'} (${links.join(', ')}), ${security}, ${status}`;
}

export interface CheckOptions {
  readonly role?: Role;
  /** Look host names up (default true); false: the file alone is checked. */
  readonly resolve?: boolean;
  /** The resolver (tests); the system's by default. */
  readonly lookup?: Lookup;
}

export async function check(file: string, opts: CheckOptions = {}): Promise<CheckOutcome> {
  const r = checkConfig(file, opts.role);
  if (r.config === undefined || r.problems.length > 0) {
    const n = r.problems.length;
    return { exitCode: 2, lines: [...r.problems.map((p) => p.located()), `${file}: ${n} problem${n === 1 ? '' : 's'}`] };
  }
  if (opts.resolve === false) return { exitCode: 0, lines: [summarize(r.config)] };
  try {
    const { resolved } = await resolveNames(r.config, opts.lookup);
    const names = resolved.map((x) => `${x.name} is ${x.address}`).join(', ');
    return { exitCode: 0, lines: [summarize(r.config) + (names === '' ? '' : `; ${names}`)] };
  } catch (e) {
    // Each message names the file, the link and the resolver's answer.
    if (!(e instanceof DpError)) throw e;
    const lines = e instanceof ResolveErrors ? e.errors.map((x) => x.message) : [e.message];
    return { exitCode: 2, lines: [...lines, `${file}: ${lines.length} problem${lines.length === 1 ? '' : 's'}`] };
  }
}
