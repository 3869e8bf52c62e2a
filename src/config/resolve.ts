// Host names in a config — the original dp-tcp resolved them (`tcp1_dial_addr:
// vpn.example.com`) — become addresses once, at start and on a server's
// reload, as WireGuard resolves an endpoint: everything after (routes, policy
// rules, the listeners, status) works with the address. A name that does not
// resolve stops the start with the link and the resolver's answer.
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { DpError, errorMessage, isSystemError } from '../errors.js';
import type { ClientLinkConfig, Config, ServerLinkConfig } from './types.js';

/** A name's first address of `family` (0: either). */
export type Lookup = (name: string, family: 0 | 4 | 6) => Promise<string>;

const systemLookup: Lookup = async (name, family) => (await dnsLookup(name, { family })).address;

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
      if (!resolved.some((r) => r.link === link)) resolved.push({ link, name, address });
      return address;
    } catch (e) {
      const why = isSystemError(e) && e.code !== undefined ? e.code : errorMessage(e);
      const fam = family === 0 ? '' : ` to an IPv${family} address (its local address is one)`;
      throw new DpError('ERR_CONFIG', `${config.file}: link ${link}: cannot resolve ${what} '${name}'${fam}: ${why}`, { exitCode: 2, cause: e });
    }
  };
  if (config.role === 'client') {
    const links = await Promise.all(
      config.links.map(async (l): Promise<ClientLinkConfig> => {
        const family = l.localAddress === undefined ? 0 : (isIP(l.localAddress) as 4 | 6);
        const remoteAddress = await resolve(l.name, l.remoteAddress, family, "the server's name");
        return remoteAddress === l.remoteAddress ? l : Object.freeze({ ...l, remoteAddress });
      }),
    );
    const client: Config = { ...config, links: Object.freeze(links) };
    return { config: Object.freeze(client), resolved };
  }
  const links = await Promise.all(
    config.links.map(async (l): Promise<ServerLinkConfig> => {
      const listenAddress = await resolve(l.name, l.listenAddress, 0, 'the listen name');
      return listenAddress === l.listenAddress ? l : Object.freeze({ ...l, listenAddress });
    }),
  );
  const server: Config = { ...config, links: Object.freeze(links) };
  return { config: Object.freeze(server), resolved };
}
