// Routes, policy rules, NAT and forwarding that dp-tcp sets up when the config
// asks for them. Every change is recorded with its exact inverse and undone
// in reverse order on exit: what dp-tcp did not add, it never removes.
// (The TUN device itself is configured by the addon, not by these commands.)
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClientConfig, Prefix, ServerConfig } from '../config/types.js';
import { DpError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { instancesWithTun } from './discovery.js';

/** Policy-routing table and rule priority of link N: BASE + N. */
export const LINK_TABLE_BASE = 25_700;
/** The metric of the `unreachable` fallback in a link's table: below every real route. */
const UNREACHABLE_METRIC = 4_294_967_295;

interface Undo {
  what: string;
  run: () => void;
  /** Why not to undo it after all (undefined: undo it). */
  keep?: () => string | undefined;
}

/**
 * A command that failed: exit code 2 (a restart will not fix it), but 1 when another tool
 * (Docker, firewalld, a boot script) held the xtables lock past `-w`'s wait: that passes, and
 * the systemd units restart after any exit code but 2.
 */
function failed(cmd: string, args: string[], stderr: string | undefined, e: unknown): DpError {
  const text = stderr?.trim() || errorMessage(e);
  // Its last word on the lock (older versions print "holding the xtables lock; waiting" lines first, then may fail otherwise).
  return new DpError('ERR_ROUTE', `${cmd} ${args.join(' ')} failed: ${text}`, { exitCode: /xtables lock\. (Stopped waiting|Perhaps you want)[^\n]*$/.test(text) ? 1 : 2 });
}

/**
 * A synchronous `ip`/`iptables` never blocks the process for longer than
 * this: teardown runs them on the event loop, where a hung one would keep
 * every signal from being handled.
 */
const SH_TIMEOUT_MS = 10_000;

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: SH_TIMEOUT_MS });
  } catch (e) {
    throw failed(cmd, args, (e as { stderr?: string }).stderr, e);
  }
}

/** sh without blocking the event loop (a redial's route check runs while the other links carry traffic). */
function shAsync(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // A hung `ip` must not hold up the link's redials for ever.
    execFile(cmd, args, { encoding: 'utf8', timeout: 5000 }, (err, stdout, stderr) => (err ? reject(failed(cmd, args, stderr, err)) : resolve(stdout)));
  });
}

/** A route as `ip -j route show` prints it. */
export interface ShownRoute {
  dst: string;
  type?: string;
  gateway?: string;
  dev?: string;
  metric?: number;
}

/**
 * The path (`[via GW] dev DEV`) of the most specific unicast route among
 * `routes` that does not lead into the tunnel `tunName` (lowest metric among
 * equals); undefined if none.
 */
export function bestPath(routes: readonly ShownRoute[], tunName: string): string[] | undefined {
  let best: ShownRoute | undefined;
  let bestLen = -1;
  for (const r of routes) {
    if ((r.type !== undefined && r.type !== 'unicast') || r.dev === undefined || r.dev === tunName) continue;
    const len = r.dst === 'default' ? 0 : r.dst.includes('/') ? Number(r.dst.split('/')[1]) : r.dst.includes(':') ? 128 : 32;
    if (len > bestLen || (len === bestLen && (r.metric ?? 0) < (best?.metric ?? 0))) {
      best = r;
      bestLen = len;
    }
  }
  return best && pathOf(best);
}

/** `[via GW] dev DEV` of a route; undefined if it names no device. */
function pathOf(r: ShownRoute | undefined): string[] | undefined {
  return r?.dev === undefined ? undefined : [...(r.gateway ? ['via', r.gateway] : []), 'dev', r.dev];
}

/** The device of a `[via GW] dev DEV` path. */
function devOf(path: readonly string[] | undefined): string | undefined {
  const i = path?.indexOf('dev') ?? -1;
  return i < 0 ? undefined : path?.[i + 1];
}

/**
 * A link's own route to its server. An interface that goes down takes its
 * routes with it, and nothing puts them back when it comes up again: so the
 * route is set again, if it is missing, before each dial of the link.
 */
interface LinkRoute {
  readonly name: string;
  readonly family: '-4' | '-6';
  readonly remote: string;
  /** remote/32 or /128. */
  readonly host: string;
  /** The link's own table (it has a source address); undefined: a host route in the main table. */
  readonly table: string | undefined;
  /** The link's source address, if it has one. */
  readonly local: string | undefined;
  /** `[via GW] dev DEV` of the route last set; undefined: none set yet. */
  path: string[] | undefined;
  /** The path it had at start, or the first one set: the link's own uplink, where its route goes back to. */
  home: string[] | undefined;
}

/** `ip` arguments to replace or delete a link's route to its server on `path`. */
function routeArgs(r: LinkRoute, op: 'replace' | 'del', path: readonly string[]): string[] {
  return [r.family, 'route', op, r.host, ...path, ...(r.table ? ['table', r.table] : [])];
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
  /** TUN names of the dp-tcp instances running in this network namespace (a control socket and a TUN device of that name). */
  readonly instances: () => string[];
}

export class NetworkSetup {
  private readonly undo: Undo[] = [];
  private readonly linkRoutes = new Map<number, LinkRoute>();
  /** Torn down: a route check still under way sets nothing more. */
  private closed = false;
  private tunName = '';

  constructor(
    private readonly log: Logger,
    private readonly sys: NetworkSystem = { procSys: '/proc/sys', instances: () => instancesWithTun() },
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
        execFileSync(cmd, check, { stdio: 'ignore', timeout: SH_TIMEOUT_MS });
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
    let old: string;
    try {
      old = readFileSync(path, 'utf8').trim();
      if (old === value) return;
      writeFileSync(path, value);
    } catch (e) {
      // A read-only /proc/sys (a container), or no such setting: one line, exit 2, like an iptables failure.
      throw new DpError('ERR_PRIVILEGE', `cannot set ${path} to ${value}: ${errorMessage(e)} (nat_out_interface needs forwarding on: set it on the host, or run with the right to)`, { cause: e, exitCode: 2 });
    }
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
    this.tunName = tunName;
    try {
      for (const l of config.links) {
        const family = l.remoteAddress.includes(':') ? '-6' : '-4';
        const host = `${l.remoteAddress}/${family === '-6' ? 128 : 32}`;
        let path: string[] | undefined;
        try {
          const got = JSON.parse(
            sh('ip', ['-j', family, 'route', 'get', l.remoteAddress, ...(l.localAddress ? ['from', l.localAddress] : [])]),
          ) as ShownRoute[];
          path = pathOf(got[0]);
        } catch (e) {
          this.log.debug('no route to the server', { link: l.name, error: errorMessage(e) });
        }
        if (path === undefined) {
          this.log.warn('no route to this link\'s server yet (is its uplink up?): its route is set when one appears', { link: l.name, server: l.remoteAddress });
        }
        // A link with a source address: table and priority 25700+N are dp-tcp's own (replace, and sweep
        // rules a killed run left). Without: a host route in the main table.
        const table = l.localAddress ? String(LINK_TABLE_BASE + l.id) : undefined;
        if (table !== undefined) {
          // The fallback when the link's interface is down: dialling fails at once ("no route to host")
          // instead of falling through to the main table, where the tunnel's own routes would take it.
          this.apply(
            'ip',
            [family, 'route', 'replace', 'unreachable', host, 'table', table, 'metric', String(UNREACHABLE_METRIC)],
            [family, 'route', 'del', 'unreachable', host, 'table', table, 'metric', String(UNREACHABLE_METRIC)],
          );
        } else if (sh('ip', [family, 'route', 'show', 'exact', host]).trim() !== '') {
          // Someone (maybe a killed run) has this host route already: keep it, and leave it on exit.
          this.log.info('host route to the server exists already: keeping it', { route: host });
          continue;
        }
        this.addLinkRoute({ name: l.name, family, remote: l.remoteAddress, host, table, local: l.localAddress, path: undefined, home: path }, l.id, path);
        if (table !== undefined) {
          const rule = ['from', l.localAddress as string, 'to', host, 'lookup', table, 'priority', table];
          this.sweep('ip', [family, 'rule', 'del', ...rule]);
          this.apply('ip', [family, 'rule', 'add', ...rule], [family, 'rule', 'del', ...rule]);
        }
      }
      for (const p of config.routes) {
        if (!config.tunnel.addresses.some((a) => a.family === p.family)) {
          this.log.warn(`the tunnel has no IPv${p.family} address: IPv${p.family} traffic to this prefix goes into it and is dropped there (it does not leak past the tunnel)`, { route: `${p.address}/${p.prefix}` });
        }
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

  /**
   * Records link `id`'s route to its server, sets it now if `path` is known,
   * and, at teardown, deletes it by its exact specification on whatever path
   * it has by then (set again after an interface came back); already gone
   * (its interface went down) is fine.
   */
  private addLinkRoute(r: LinkRoute, id: number, path: string[] | undefined): void {
    this.linkRoutes.set(id, r);
    this.undo.push({
      what: `ip ${r.family} route ${r.host}${r.table ? ` table ${r.table}` : ''} (link ${r.name})`,
      run: () => {
        if (r.path === undefined) return;
        try {
          sh('ip', routeArgs(r, 'del', r.path));
        } catch (e) {
          if (!/No such process/.test(errorMessage(e))) throw e;
        }
      },
    });
    if (path === undefined) return;
    const args = routeArgs(r, 'replace', path);
    sh('ip', args);
    r.path = path;
    this.log.info('network change', { added: `ip ${args.join(' ')}` });
  }

  /**
   * Before a dial of link `id`: sets its route to the server again if it is
   * missing (the interface went down and took it), or moves it back home.
   * Its own path comes first. Failing that, a link with a source address
   * takes only a main-table route on its own device (its packets carry that
   * device's address: out of another uplink they would be dropped, or ride
   * beside another link), else its dial fails on the `unreachable` route; a
   * link without one takes the best main-table route outside the tunnel, and
   * goes back to its own path once that works again.
   * Never throws: a link whose interface is still down just fails its dial.
   */
  async refreshLinkRoute(id: number): Promise<void> {
    const r = this.linkRoutes.get(id);
    if (r === undefined) return;
    try {
      const shown = JSON.parse(await shAsync('ip', ['-j', r.family, 'route', 'show', 'exact', r.host, ...(r.table ? ['table', r.table] : [])])) as ShownRoute[];
      const current = shown.find((x) => (x.type === undefined || x.type === 'unicast') && x.dev !== undefined);
      const home = devOf(r.home);
      if (current !== undefined && (home === undefined || current.dev === home)) return;
      const candidates = [r.home];
      if (current === undefined) {
        // Missing: the best the main table has outside the tunnel (on the link's own device, for a link with a source address).
        const own = r.local === undefined ? undefined : (home ?? (await this.deviceOf(r.family, r.local)));
        if (this.closed) return;
        if (r.local === undefined || own !== undefined) {
          const main = JSON.parse(await shAsync('ip', ['-j', r.family, 'route', 'show', 'table', 'main', 'match', r.remote])) as ShownRoute[];
          candidates.push(bestPath(own === undefined ? main : main.filter((x) => x.dev === own), this.tunName));
        }
      }
      for (const path of candidates) {
        if (path === undefined || this.closed) continue;
        try {
          await shAsync('ip', routeArgs(r, 'replace', path));
        } catch {
          continue;
        }
        if (this.closed) {
          // Torn down while the command ran: what it set goes at once.
          await shAsync('ip', routeArgs(r, 'del', path)).catch(() => undefined);
          return;
        }
        r.path = path;
        r.home ??= path;
        this.log.info(current === undefined ? 'link route set again' : 'link route back on its own path', {
          link: r.name,
          route: `${r.host} ${path.join(' ')}${r.table ? ` table ${r.table}` : ''}`,
        });
        return;
      }
      this.log.debug('no route to this link\'s server yet', { link: r.name });
    } catch (e) {
      this.log.debug('could not check the link route', { link: r.name, error: errorMessage(e) });
    }
  }

  /** The device that holds `address`, if any. */
  private async deviceOf(family: '-4' | '-6', address: string): Promise<string | undefined> {
    const out = await shAsync('ip', ['-j', family, 'addr', 'show', 'to', address]);
    const shown = (out.trim() === '' ? [] : JSON.parse(out)) as Array<{ ifname?: string }>;
    return shown.find((x) => x.ifname !== undefined)?.ifname;
  }

  /** Server: forward and masquerade the clients' tunnel networks out of `config.natOutInterface`. */
  setupServer(config: ServerConfig, tunName: string): void {
    const out = config.natOutInterface;
    if (out === undefined) return;
    try {
      for (const a of config.tunnel.addresses) {
        const v6 = a.family === 6;
        const ipt = v6 ? 'ip6tables' : 'iptables';
        // One rule: a leftover of a killed run removed, then added, deleted at teardown. -w: wait (up to
        // 5 s) for the xtables lock another tool (Docker, firewalld) holds, instead of failing.
        const rule = (table: string[], add: string, spec: string[]): void => {
          const w = ['-w', '5', ...table];
          this.sweep(ipt, [...w, '-C', ...spec], [...w, '-D', ...spec]);
          this.apply(ipt, [...w, add, ...spec], [...w, '-D', ...spec]);
        };
        if (v6) {
          // With forwarding on, an interface whose accept_ra is 1 ignores router advertisements: a server
          // whose IPv6 default route comes from SLAAC would lose it when that expires. 2 takes them anyway.
          const ra = `net/ipv6/conf/${out}/accept_ra`;
          let current: string | undefined;
          try {
            current = readFileSync(join(this.sys.procSys, ra), 'utf8').trim();
          } catch {
            // no such interface yet, or no IPv6 on it: nothing to keep
          }
          if (current === '1') this.sysctl(ra, '2', tunName);
        }
        this.sysctl(v6 ? 'net/ipv6/conf/all/forwarding' : 'net/ipv4/ip_forward', '1', tunName);
        const net = `${a.address}/${a.prefix}`;
        const tag = ['-m', 'comment', '--comment', `dp-tcp ${tunName}`];
        const nat = ['POSTROUTING', '-s', net, '-o', out, ...tag, '-j', 'MASQUERADE'];
        rule(['-t', 'nat'], '-A', nat);
        const fwdOut = ['FORWARD', '-i', tunName, '-o', out, ...tag, '-j', 'ACCEPT'];
        rule([], '-I', fwdOut);
        const fwdIn = ['FORWARD', '-i', out, '-o', tunName, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...tag, '-j', 'ACCEPT'];
        rule([], '-I', fwdIn);
      }
    } catch (e) {
      this.teardown();
      throw e;
    }
  }

  /**
   * However the process ends from here on (an uncaught exception or
   * process.exit() too, which skip the orderly stop), what this setup added
   * goes with it. (A signal's default action ends a process without an
   * 'exit' event: the CLI handles SIGINT, SIGTERM and SIGHUP itself.)
   */
  teardownOnExit(): void {
    process.once('exit', () => this.teardown());
  }

  /** Undoes every change, newest first. Idempotent; a failed undo is logged, the rest still run. */
  teardown(): void {
    this.closed = true;
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
