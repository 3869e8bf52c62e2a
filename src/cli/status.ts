// `dp-tcp status`: reads a running side's /status and prints the per-link table.
import { readFileSync } from 'node:fs';
import { DpError, errorMessage } from '../errors.js';
import { formatStatus, type StatusDocument } from '../ops/format.js';

export interface StatusOptions {
  readonly url: string;
  readonly json?: boolean;
  readonly watch?: boolean;
  readonly intervalMs?: number;
}

async function fetchStatus(url: string): Promise<StatusDocument> {
  if (url.startsWith('file:')) return JSON.parse(readFileSync(new URL(url), 'utf8')) as StatusDocument;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  } catch (e) {
    throw new DpError('ERR_LISTEN', `cannot reach ${url}: ${errorMessage((e as { cause?: unknown }).cause ?? e)} (is dp-tcp running, with status_listen on?)`);
  }
  if (!res.ok) throw new DpError('ERR_LISTEN', `${url} answered ${res.status}`);
  return (await res.json()) as StatusDocument;
}

export async function status(opts: StatusOptions): Promise<void> {
  if (!opts.watch) {
    const d = await fetchStatus(opts.url);
    process.stdout.write(opts.json ? JSON.stringify(d, null, 2) + '\n' : formatStatus(d));
    return;
  }
  const interval = opts.intervalMs ?? 1000;
  const tty = process.stdout.isTTY === true;
  for (;;) {
    let text: string;
    try {
      const d = await fetchStatus(opts.url);
      text = opts.json ? JSON.stringify(d) + '\n' : formatStatus(d);
    } catch (e) {
      text = `${errorMessage(e)}\n`;
    }
    // On a terminal: redraw in place; piped: one snapshot after another.
    process.stdout.write(tty && !opts.json ? `\x1b[H\x1b[2J${new Date().toISOString()}  (Ctrl-C to quit)\n${text}` : text);
    await new Promise((r) => setTimeout(r, interval));
  }
}
