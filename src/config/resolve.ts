// Host names in a config — the original dp-tcp resolved them (`tcp1_dial_addr:
// vpn.example.com`) — become addresses once, at start, as WireGuard resolves
// an endpoint (a server's reload leaves links as they are): everything after (routes, policy
// rules, the listeners, status) works with the address. A name that does not
// resolve stops the start with the link and the resolver's answer (every such
// name at once, not the first alone).
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { DpError, errorMessage, isSystemError } from '../errors.js';
import { listenText, overlappingListeners } from './load.js';
import type { ClientLinkConfig, Config, ServerLinkConfig } from './types.js';

/** A name's first address of `family` (0: either). */
export type Lookup = (name: string, family: 0 | 4 | 6) => Promise<string>;

const systemLookup: Lookup = async (name, family) => (await dnsLookup(name, { family })).address;

/**
 * More than one name did not resolve: each one's error, in the config's order of links (a start
 * stops on them together; `check` lists each as a problem). A config error if any of them is one.
 */
export class ResolveErrors extends DpError {
  readonly errors: readonly DpError[];

  constructor(errors: readonly DpError[]) {
    const wrongName = errors.some((e) => e.code === 'ERR_CONFIG');
    super(wrongName ? 'ERR_CONFIG' : 'ERR_RESOLVE', errors.map((e) => e.message).join('\n'), { exitCode: wrongName ? 2 : 1 });
    this.name = 'ResolveErrors';
    this.errors = errors;
  }
}

/** The values of settled lookups, or every lookup's error at once (one as itself, more as ResolveErrors). */
function allResolved<T>(settled: readonly PromiseSettledResult<T>[]): T[] {
  const failed = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (failed.length === 0) return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
  const notOurs = failed.find((e) => !(e instanceof DpError));
  if (notOurs !== undefined) throw notOurs;
  if (failed.length === 1) throw failed[0];
  throw new ResolveErrors(failed as DpError[]);
}

export interface ResolvedName {
  readonly link: string;
  readonly name: string;
  readonly address: string;
}

/** The config with every host name replaced by an address, and what was resolved (to log). */
export async function resolveNames(config: Config, lookup: Lookup = systemLookup): Promise<{ config: Config; resolved: ResolvedName[] }> {
  const resolved: ResolvedName[] = [];
  const cache = new Map<string, Promise<string>>();
  const resolve = async (link: string, name: string, family: 0 | 4 | 6, what: string): Promise<string> => {
    if (isIP(name) !== 0) return name;
    const key = `${family}/${name}`;
    let p = cache.get(key);
    if (p === undefined) {
      p = lookup(name, family);
      cache.set(key, p);
    }
    try {
      const address = await p;
      if (!resolved.some((r) => r.name === name && r.address === address)) resolved.push({ link, name, address });
      return address;
    } catch (e) {
      const code = isSystemError(e) ? e.code : undefined;
      const why = code ?? errorMessage(e);
      const fam = family === 0 ? '' : ` to an IPv${family} address (its local address is one)`;
      // No such name is a config error (exit 2: systemd does not restart it); a resolver that did not
      // answer (at boot, say) is not: exit 1, and the unit starts it again.
      const wrongName = code === 'ENOTFOUND' || code === 'ENODATA' || code === 'EAI_NONAME';
      throw new DpError(wrongName ? 'ERR_CONFIG' : 'ERR_RESOLVE', `${config.file}: link ${link}: cannot resolve ${what} '${name}'${fam}: ${why}`, {
        exitCode: wrongName ? 2 : 1,
        cause: e,
      });
    }
  };
  if (config.role === 'client') {
    const links = allResolved(
      await Promise.allSettled(
        config.links.map(async (l): Promise<ClientLinkConfig> => {
          const family = l.localAddress === undefined ? 0 : (isIP(l.localAddress) as 4 | 6);
          const remoteAddress = await resolve(l.name, l.remoteAddress, family, "the server's name");
          return remoteAddress === l.remoteAddress ? l : Object.freeze({ ...l, remoteAddress });
        }),
      ),
    );
    const client: Config = { ...config, links: Object.freeze(links) };
    return { config: Object.freeze(client), resolved };
  }
  const links = allResolved(
    await Promise.allSettled(
      config.links.map(async (l): Promise<ServerLinkConfig> => {
        const listenAddress = await resolve(l.name, l.listenAddress, 0, 'the listen name');
        return listenAddress === l.listenAddress ? l : Object.freeze({ ...l, listenAddress });
      }),
    ),
  );
  // Names hid it from the config's own check (localhost beside 127.0.0.1): the second listen would
  // fail with EADDRINUSE, which reads as another program's port.
  const overlap = links.some((l, i) => l !== config.links[i]) ? overlappingListeners(links) : undefined;
  if (overlap !== undefined) {
    const { link, other } = overlap;
    const named = config.links.find((l) => l.name === link.name)?.listenAddress ?? '';
    throw new DpError('ERR_CONFIG', `${config.file}: link ${link.name} (${named}): ${listenText(link)} overlaps ${listenText(other)}: one address and port, one link, of link ${other.name}`, {
      exitCode: 2,
    });
  }
  const server: Config = { ...config, links: Object.freeze(links) };
  return { config: Object.freeze(server), resolved };
}
