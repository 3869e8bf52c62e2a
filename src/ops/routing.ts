// Routes, policy rules, NAT and forwarding that dp-tcp sets up when the config
// asks for them. Every change is recorded with its exact inverse and undone
// in reverse order on exit: what dp-tcp did not add, it never removes.
// (The TUN device itself is configured by the addon, not by these commands.)
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClientConfig, Prefix, ServerConfig } from '../config/types.js';
import { DpError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { listInstances } from './discovery.js';

/** Policy-routing table and rule priority of link N: BASE + N. */
export const LINK_TABLE_BASE = 25_700;

interface Undo {
  what: string;
  run: () => void;
  /** Why not to undo it after all (undefined: undo it). */
  keep?: () => string | undefined;
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr?.trim();
    throw new DpError('ERR_ROUTE', `${cmd} ${args.join(' ')} failed: ${stderr || errorMessage(e)}`, { exitCode: 2 });
  }
}

/** The halves that cover a default route without replacing the existing one. */
function expand(p: Prefix): string[] {
  if (p.prefix !== 0) return [`${p.address}/${p.prefix}`];
  return p.family === 4 ? ['0.0.0.0/1', '128.0.0.0/1'] : ['::/1', '8000::/1'];
}

/** What NetworkSetup reads of the system besides the commands it runs (tests pass their own). */
export interface NetworkSystem {
  /** Where /proc/sys is. */
  readonly procSys: string;
  /** TUN names of the dp-tcp instances running in this network namespace. */
  readonly instances: () => string[];
}

export class NetworkSetup {
  private readonly undo: Undo[] = [];

  constructor(
    private readonly log: Logger,
    private readonly sys: NetworkSystem = { procSys: '/proc/sys', instances: () => listInstances() },
  ) {}

  /** Runs `args`, and remembers `inverse` to run on teardown. */
  private apply(cmd: string, args: string[], inverse: string[]): void {
    sh(cmd, args);
    const what = `${cmd} ${args.join(' ')}`;
    this.undo.push({ what, run: () => sh(cmd, inverse) });
    this.log.info('network change', { added: what });
  }

  /**
   * Removes copies of a rule that a killed earlier run left behind. Only for
   * specifications that are dp-tcp's by construction (its rule priorities and
   * tables, its iptables comment tag), so nothing of anyone else's is touched.
   */
  private sweep(cmd: string, check: string[], del?: string[]): void {
    for (let i = 0; i < 16; i++) {
      try {
        execFileSync(cmd, check, { stdio: 'ignore' });
      } catch {
        return;
      }
      // Without a separate deletion, the check was the deletion (`ip rule del` succeeds only if it found one).
      if (del) sh(cmd, del);
      this.log.warn('removed a leftover of an earlier run', { what: `${cmd} ${(del ?? check).join(' ')}` });
    }
  }

  /**
   * Sets a sysctl, to restore at teardown. Forwarding is one setting for the
   * whole namespace: a second dp-tcp that found it on relies on it without
   * having recorded it, so while another dp-tcp runs here it is left as it is.
   */
  private sysctl(name: string, value: string, tunName: string): void {
    const path = join(this.sys.procSys, name);
    const old = readFileSync(path, 'utf8').trim();
    if (old === value) return;
    writeFileSync(path, value);
    const keep = (): string | undefined => {
      const others = this.sys.instances().filter((t) => t !== tunName);
      return others.length > 0 ? `another dp-tcp runs in this namespace (${others.join(', ')})` : undefined;
    };
    this.undo.push({ what: `${path}=${value}`, run: () => writeFileSync(path, old), keep });
    this.log.info('network change', { sysctl: path, from: old, to: value });
  }

  /**
   * Client: route `config.routes` through the tunnel. Each link's own traffic
   * to its server keeps the path it had: a policy rule `from <local> to
   * <remote>` into a table of its own (links with a source address), or a
   * host route (links without).
   */
  setupClient(config: ClientConfig, tunName: string): void {
    if (config.routes.length === 0) return;
    try {
      for (const l of config.links) {
        const family = l.remoteAddress.includes(':') ? '-6' : '-4';
        const got = JSON.parse(
          sh('ip', ['-j', family, 'route', 'get', l.remoteAddress, ...(l.localAddress ? ['from', l.localAddress] : [])]),
        ) as Array<{ dev: string; gateway?: string }>;
        const r = got[0];
        if (!r) throw new DpError('ERR_ROUTE', `no route to ${l.remoteAddress} for link ${l.name}`, { exitCode: 2 });
        const host = `${l.remoteAddress}/${family === '-6' ? 128 : 32}`;
        const via = r.gateway ? ['via', r.gateway] : [];
        if (l.localAddress) {
          // Table and priority 25700+N are dp-tcp's own: replace, and sweep rules a killed run left.
          const table = String(LINK_TABLE_BASE + l.id);
          this.apply('ip', [family, 'route', 'replace', host, ...via, 'dev', r.dev, 'table', table], [family, 'route', 'del', host, ...via, 'dev', r.dev, 'table', table]);
          const rule = ['from', l.localAddress, 'to', host, 'lookup', table, 'priority', table];
          this.sweep('ip', [family, 'rule', 'del', ...rule]);
          this.apply('ip', [family, 'rule', 'add', ...rule], [family, 'rule', 'del', ...rule]);
        } else if (sh('ip', [family, 'route', 'show', 'exact', host]).trim() !== '') {
          // Someone (maybe a killed run) has this host route already: keep it, and leave it on exit.
          this.log.info('host route to the server exists already: keeping it', { route: host });
        } else {
          this.apply('ip', [family, 'route', 'add', host, ...via, 'dev', r.dev], [family, 'route', 'del', host, ...via, 'dev', r.dev]);
        }
      }
      for (const p of config.routes) {
        for (const net of expand(p)) {
          const family = p.family === 6 ? '-6' : '-4';
          this.apply('ip', [family, 'route', 'add', net, 'dev', tunName], [family, 'route', 'del', net, 'dev', tunName]);
        }
      }
    } catch (e) {
      this.teardown();
      throw e;
    }
  }

  /** Server: forward and masquerade the clients' tunnel networks out of `config.natOutInterface`. */
  setupServer(config: ServerConfig, tunName: string): void {
    const out = config.natOutInterface;
    if (out === undefined) return;
    try {
      for (const a of config.tunnel.addresses) {
        const v6 = a.family === 6;
        const ipt = v6 ? 'ip6tables' : 'iptables';
        this.sysctl(v6 ? 'net/ipv6/conf/all/forwarding' : 'net/ipv4/ip_forward', '1', tunName);
        const net = `${a.address}/${a.prefix}`;
        const tag = ['-m', 'comment', '--comment', `dp-tcp ${tunName}`];
        const nat = ['POSTROUTING', '-s', net, '-o', out, ...tag, '-j', 'MASQUERADE'];
        this.sweep(ipt, ['-t', 'nat', '-C', ...nat], ['-t', 'nat', '-D', ...nat]);
        this.apply(ipt, ['-t', 'nat', '-A', ...nat], ['-t', 'nat', '-D', ...nat]);
        const fwdOut = ['FORWARD', '-i', tunName, '-o', out, ...tag, '-j', 'ACCEPT'];
        this.sweep(ipt, ['-C', ...fwdOut], ['-D', ...fwdOut]);
        this.apply(ipt, ['-I', ...fwdOut], ['-D', ...fwdOut]);
        const fwdIn = ['FORWARD', '-i', out, '-o', tunName, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...tag, '-j', 'ACCEPT'];
        this.sweep(ipt, ['-C', ...fwdIn], ['-D', ...fwdIn]);
        this.apply(ipt, ['-I', ...fwdIn], ['-D', ...fwdIn]);
      }
    } catch (e) {
      this.teardown();
      throw e;
    }
  }

  /** Undoes every change, newest first. Idempotent; a failed undo is logged, the rest still run. */
  teardown(): void {
    while (this.undo.length > 0) {
      const u = this.undo.pop() as Undo;
      try {
        const kept = u.keep?.();
        if (kept !== undefined) {
          this.log.info('network change left in place', { what: u.what, reason: kept });
          continue;
        }
        u.run();
        this.log.info('network change undone', { what: u.what });
      } catch (e) {
        this.log.warn('could not undo a network change', { what: u.what, error: errorMessage(e) });
      }
    }
  }
}
