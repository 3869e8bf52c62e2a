// How `dp-tcp status` finds every running dp-tcp without being told where:
// each instance serves its /status and /metrics on a unix socket in the
// abstract namespace, named after its TUN device: `@dp-tcp/<tun>`.
//
// Why an abstract socket rather than a file under /run/dp-tcp/:
// - abstract unix sockets belong to the network namespace the socket was made
//   in, so `status` in a namespace finds exactly the instances of that
//   namespace (where /run is shared by all of them), and two namespaces may
//   each run a `dptcp-c` without their names colliding;
// - the kernel removes the name when the process exits, however it exits
//   (SIGKILL too): there is nothing stale to clean up or to mistake for a
//   live instance;
// - nothing needs to be writable: it works under systemd's
//   ProtectSystem=strict and after --user has dropped root;
// - TUN names are unique within a namespace, so the name is too.
// The names are listed from /proc/net/unix, which shows the sockets of the
// reader's namespace. No secret is involved: the socket serves the same
// document as the status_listen endpoint (counters, peers' names and key
// prefixes, addresses; never a key), to anyone who can reach it, as that one.
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { DpError, errorMessage } from '../errors.js';

const PREFIX = 'dp-tcp/';
/** __SO_ACCEPTCON in /proc/net/unix's Flags column: a listening socket. */
const SO_ACCEPTCON = 0x10000;

/** The abstract address (leading NUL) of the control socket of the instance that owns TUN `tun`. */
export function controlSocketPath(tun: string): string {
  return `\0${PREFIX}${tun}`;
}

/**
 * TUN names of the listening dp-tcp control sockets in /proc/net/unix text
 * (abstract names are shown with a leading '@'; Node pads them with NULs,
 * also shown as '@').
 */
export function parseControlSockets(procNetUnix: string): string[] {
  const names = new Set<string>();
  for (const line of procNetUnix.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path
    if (f.length < 8) continue;
    const path = f.slice(7).join(' ');
    if (!path.startsWith(`@${PREFIX}`) || (parseInt(f[3] ?? '0', 16) & SO_ACCEPTCON) === 0) continue;
    const tun = path.slice(1 + PREFIX.length).replace(/@+$/, '');
    if (tun !== '') names.add(tun);
  }
  return [...names].sort();
}

/** TUN names of the dp-tcp instances running in this network namespace. */
export function listInstances(procNetUnix = '/proc/net/unix'): string[] {
  let text: string;
  try {
    text = readFileSync(procNetUnix, 'utf8');
  } catch {
    return [];
  }
  return parseControlSockets(text);
}

/** GET `path` from the instance that owns TUN `tun`; its body as text. */
export function getFromInstance(tun: string, path: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: controlSocketPath(tun), path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode === 200) resolve(body);
        else reject(new DpError('ERR_LISTEN', `dp-tcp on ${tun} answered ${res.statusCode ?? '?'} for ${path}`));
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => reject(new DpError('ERR_LISTEN', `cannot reach dp-tcp on ${tun}: ${errorMessage(e)}`)));
    req.end();
  });
}
