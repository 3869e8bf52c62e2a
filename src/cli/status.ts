// `dp-tcp status`: finds the running dp-tcp instances of this network
// namespace (or asks the one it is pointed at) and prints their links.
//
// Where it asks:
// - `--url URL`: that endpoint (a bare `host:port` is taken as http://host:port/status);
// - `-c FILE` (`-r ROLE` optional: the file says which side it is): the
//   instance with that config's TUN name, by its control socket, else the
//   config's status_listen. Only the TUN name and status_listen are read: no
//   key or psk file (a status query needs no secret);
// - neither: every instance in this namespace (src/ops/discovery.ts), only
//   clients or servers with `-r`.
import { readFileSync } from 'node:fs';
import type { Role } from '../config/types.js';
import { DEFAULT_STATUS_PORT } from '../config/types.js';
import { DpError, errorMessage } from '../errors.js';
import { getFromInstance, listInstances, untrustedStatusPort } from '../ops/discovery.js';
import { formatStatus, type StatusDocument } from '../ops/format.js';

export interface StatusOptions {
  readonly url?: string;
  readonly config?: string;
  readonly role?: Role;
  readonly json?: boolean;
  readonly watch?: boolean;
  readonly intervalMs?: number;
}

/** Where one status document comes from. */
export type StatusSource = { readonly url: string } | { readonly tun: string };

function describeSource(s: StatusSource): string {
  return 'url' in s ? s.url : `dp-tcp on ${s.tun}`;
}

/**
 * The URL `--url` means: a scheme is added when there is none
 * (`127.0.0.1:9401` is http://127.0.0.1:9401/status), a bare host or `/` gets
 * `/status`, and `/metrics` (the Prometheus text of the same endpoint) is read
 * as `/status`. Not a URL: an error naming the option (exit 2).
 */
export function normalizeStatusUrl(input: string): string {
  const text = input.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:/i.test(text) && !/^[^/]*:\d+(\/|$)/.test(text) ? text : `http://${text}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new DpError('ERR_CONFIG', `--url '${input}' is not a URL (e.g. http://127.0.0.1:9400/status, or 127.0.0.1:9400)`, { exitCode: 2 });
  }
  if (u.protocol === 'file:') return u.href;
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new DpError('ERR_CONFIG', `--url '${input}': dp-tcp serves its status over http://, not ${u.protocol}`, { exitCode: 2 });
  }
  if (u.pathname === '/' || u.pathname === '' || /\/metrics\/?$/.test(u.pathname)) u.pathname = u.pathname.replace(/\/(metrics\/?)?$/, '') + '/status';
  return u.href;
}

function parseDocument(body: string, from: string): StatusDocument {
  let d: unknown;
  try {
    d = JSON.parse(body);
  } catch {
    throw new DpError('ERR_LISTEN', `${from} did not answer with a dp-tcp status document (is it dp-tcp's /status?)`);
  }
  if (d === null || typeof d !== 'object' || !Array.isArray((d as { sessions?: unknown }).sessions)) {
    throw new DpError('ERR_LISTEN', `${from} did not answer with a dp-tcp status document (is it dp-tcp's /status?)`);
  }
  return d as StatusDocument;
}

export async function fetchStatus(source: StatusSource): Promise<StatusDocument> {
  if ('tun' in source) return parseDocument(await getFromInstance(source.tun, '/status'), describeSource(source));
  const url = source.url;
  if (url.startsWith('file:')) {
    let text: string;
    try {
      text = readFileSync(new URL(url), 'utf8');
    } catch (e) {
      throw new DpError('ERR_LISTEN', `cannot read ${url}: ${errorMessage(e)}`);
    }
    return parseDocument(text, url);
  }
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  } catch (e) {
    throw new DpError('ERR_LISTEN', `cannot reach ${url}: ${errorMessage((e as { cause?: unknown }).cause ?? e)} (is dp-tcp running, with status_listen on?)`);
  }
  if (!res.ok) throw new DpError('ERR_LISTEN', `${url} answered ${res.status}`);
  return parseDocument(await res.text(), url);
}

/** What to ask, and whether the answer is one document (--url, -c) or every instance found. */
export async function statusSources(opts: StatusOptions): Promise<{ sources: StatusSource[]; single: boolean }> {
  if (opts.url !== undefined) return { sources: [{ url: normalizeStatusUrl(opts.url) }], single: true };
  if (opts.config !== undefined) {
    const { outlineConfig } = await import('../config/load.js');
    const o = outlineConfig(opts.config, opts.role);
    if (listInstances().includes(o.tunName)) return { sources: [{ tun: o.tunName }], single: true };
    if (o.statusListen === undefined) {
      throw new DpError('ERR_LISTEN', `no dp-tcp with TUN ${o.tunName} runs in this network namespace (and ${opts.config} has status_listen off)`);
    }
    const { address, port } = o.statusListen;
    const url = `http://${address.includes(':') ? `[${address}]` : address}:${port}/status`;
    // The instance is not there to vouch for the port (no control socket): believe it only from root or you.
    const why = address === '127.0.0.1' ? untrustedStatusPort(port) : undefined;
    if (why !== undefined) throw new DpError('ERR_LISTEN', `no dp-tcp with TUN ${o.tunName} answers on its control socket, and at ${url}: ${why}`);
    return { sources: [{ url }], single: true };
  }
  return { sources: listInstances().map((tun) => ({ tun })), single: false };
}

interface Gathered {
  instances: StatusDocument[];
  unreachable: Array<{ source: string; error: string }>;
}

/**
 * Every instance found (of `role`, if given). When none serves a control
 * socket, the default status ports are tried: an instance whose control
 * socket could not be made is still found there.
 */
async function gather(sources: StatusSource[], role: Role | undefined): Promise<Gathered> {
  const out: Gathered = { instances: [], unreachable: [] };
  const tryAll = async (list: StatusSource[], quiet: boolean): Promise<void> => {
    for (const s of list) {
      try {
        const d = await fetchStatus(s);
        if (role === undefined || d.role === role) out.instances.push(d);
      } catch (e) {
        if (!quiet) out.unreachable.push({ source: describeSource(s), error: errorMessage(e) });
      }
    }
  };
  await tryAll(sources, false);
  if (sources.length === 0) {
    const roles: Role[] = role ? [role] : ['server', 'client'];
    const trusted: StatusSource[] = [];
    for (const r of roles) {
      const url = `http://127.0.0.1:${DEFAULT_STATUS_PORT[r]}/status`;
      const why = untrustedStatusPort(DEFAULT_STATUS_PORT[r]);
      if (why === undefined) trusted.push({ url });
      else out.unreachable.push({ source: url, error: why });
    }
    await tryAll(trusted, true);
  }
  return out;
}

function nothingFound(role: Role | undefined, g: Gathered): DpError {
  const what = role === undefined ? 'dp-tcp' : `dp-tcp ${role}`;
  const why = g.unreachable.map((u) => `; ${u.source}: ${u.error}`).join('');
  return new DpError(
    'ERR_LISTEN',
    `no ${what} is running in this network namespace (none serves a control socket @dp-tcp/<tun>, nor answers on 127.0.0.1:${DEFAULT_STATUS_PORT.server} or :${DEFAULT_STATUS_PORT.client})${why}` +
      ' (in another namespace: ip netns exec NAME dp-tcp status)',
  );
}

/** One rendering of the status: the text or JSON to print. Throws when there is nothing to show. */
export async function renderStatus(opts: StatusOptions, compactJson = false): Promise<string> {
  const { sources, single } = await statusSources(opts);
  const json = (v: unknown): string => (compactJson ? JSON.stringify(v) : JSON.stringify(v, null, 2)) + '\n';
  if (single) {
    const d = await fetchStatus(sources[0] as StatusSource);
    return opts.json ? json(d) : formatStatus(d);
  }
  const g = await gather(sources, opts.role);
  if (g.instances.length === 0) throw nothingFound(opts.role, g);
  // --json for scripts: always { instances: [...] } when discovering, however many there are.
  if (opts.json) return json(g.unreachable.length > 0 ? g : { instances: g.instances });
  const parts = g.instances.map(formatStatus);
  for (const u of g.unreachable) parts.push(`${u.source}: ${u.error}\n`);
  return parts.join('\n');
}

export async function status(opts: StatusOptions): Promise<void> {
  if (!opts.watch) {
    process.stdout.write(await renderStatus(opts));
    return;
  }
  const interval = opts.intervalMs ?? 1000;
  const tty = process.stdout.isTTY === true;
  // A reader that stops reading (`| head`) ends the watch, with exit 0 and no EPIPE stack.
  let readerGone = false;
  process.stdout.on('error', () => {
    readerGone = true;
  });
  while (!readerGone) {
    let text: string;
    try {
      text = await renderStatus(opts, true);
    } catch (e) {
      // A usage error does not get better by asking again.
      if (e instanceof DpError && e.exitCode === 2) throw e;
      // With --json, stdout stays one document a line: why there is none this time goes to stderr.
      if (opts.json) {
        process.stderr.write(`dp-tcp: ${errorMessage(e)}\n`);
        text = '';
      } else {
        text = `${errorMessage(e)}\n`;
      }
    }
    // On a terminal: redraw in place; piped: one snapshot after another.
    if (text !== '') process.stdout.write(tty && !opts.json ? `\x1b[H\x1b[2J${new Date().toISOString()}  (Ctrl-C to quit)\n${text}` : text);
    await new Promise((r) => setTimeout(r, interval));
  }
}
