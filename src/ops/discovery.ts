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
//
// Any local user may bind a name in the abstract namespace, this one too,
// before dp-tcp does (dp-tcp then warns and runs without it). So `status`
// asks the kernel who listens (SO_PEERCRED) and believes root (dp-tcp
// listens before --user drops root), the user who asks, or a process that
// holds the TUN device the name is for (a service run as its own user with
// CAP_NET_ADMIN): a user without that capability cannot make one.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { request } from 'node:http';
import type { Socket } from 'node:net';
import { socketFd } from '../core/socket-options.js';
import { DpError, errorMessage } from '../errors.js';
import { loadAddon } from '../tun/loader.js';
import type { PeerCredentials } from '../tun/native.js';

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

/**
 * TUN names of the dp-tcp instances in this namespace whose TUN device exists
 * (its sysfs entry has `tun_flags`): a control socket name alone, which any
 * local user may bind (see above), does not count, and making a TUN device
 * takes CAP_NET_ADMIN. For decisions that act on the system (leaving
 * forwarding on for another instance), where `listInstances` would let a
 * squatter decide. (Matching the socket's holder to the TUN's through
 * /proc/PID/fd would be stricter, but a service with CAP_NET_ADMIN alone may
 * not read another root process's descriptors.)
 */
export function instancesWithTun(procNetUnix = '/proc/net/unix', sysClassNet = '/sys/class/net'): string[] {
  return listInstances(procNetUnix).filter((tun) => existsSync(`${sysClassNet}/${tun}/tun_flags`));
}

/**
 * Owners (uids) of the TCP sockets listening on `port` that a connection to
 * 127.0.0.1 may reach (bound there, to a wildcard, or IPv4-mapped), from
 * /proc/net/tcp and tcp6 text. The fallback of `dp-tcp status` to the default
 * status ports asks this before it believes an answer: those ports are not
 * privileged, and any local user may hold one.
 */
export function loopbackListenerUids(port: number, procNetTcp: readonly string[]): number[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  // 127.0.0.1 and 0.0.0.0; in tcp6, ::, ::ffff:0.0.0.0 and ::ffff:127.0.0.1 (each 32-bit word little-endian).
  // Not ::1: a connection to 127.0.0.1 never reaches it.
  const reachable = new Set(['0100007F', '00000000', '00000000000000000000000000000000', '0000000000000000FFFF000000000000', '0000000000000000FFFF00000100007F']);
  const uids: number[] = [];
  for (const text of procNetTcp) {
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 8 || f[3] !== '0A') continue; // LISTEN
      const [addr, p] = (f[1] ?? '').split(':');
      if (p !== hexPort || !reachable.has(addr ?? '')) continue;
      uids.push(Number(f[7]));
    }
  }
  return uids;
}

/** Why an answer on the default status port `port` is not to be believed, or undefined when it is. */
export function untrustedStatusPort(port: number, myUid = process.getuid?.() ?? -1, proc = '/proc'): string | undefined {
  const texts: string[] = [];
  for (const f of ['net/tcp', 'net/tcp6']) {
    try {
      texts.push(readFileSync(`${proc}/${f}`, 'utf8'));
    } catch {
      // no IPv6, say
    }
  }
  const foreign = loopbackListenerUids(port, texts).filter((uid) => uid !== 0 && uid !== myUid);
  if (foreign.length === 0) return undefined;
  return `port ${port} is held by uid ${foreign.join(', ')}, neither root nor you: another local user may have taken it, so its answer is not shown`;
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

/**
 * Why the process that listens on a control socket, as SO_PEERCRED gives it,
 * is not to be believed, or undefined when it is: it runs as root or as
 * `myUid`, or holds the TUN device the socket is named after (`holdsTun`,
 * asked only when the rest is not so).
 */
export function untrustedListener(cred: PeerCredentials, myUid: number, holdsTun: () => boolean = () => false): string | undefined {
  if (cred.uid === 0 || cred.uid === myUid || holdsTun()) return undefined;
  return `it is held by pid ${cred.pid} of uid ${cred.uid}, neither root nor you nor the holder of that TUN device: another local user may have taken the name, so its answer is not shown`;
}

/** The TUN device an open /dev/net/tun descriptor is attached to, from its /proc fdinfo text (`iff:` line). */
export function tunOfFdinfo(text: string): string | undefined {
  return /^iff:\s*(\S+)\s*$/m.exec(text)?.[1];
}

/** Whether process `pid` holds the TUN device `tun` (false where its /proc entries cannot be read). */
export function holdsTun(pid: number, tun: string, proc = '/proc'): boolean {
  try {
    for (const fd of readdirSync(`${proc}/${pid}/fd`)) {
      try {
        if (readlinkSync(`${proc}/${pid}/fd/${fd}`) === '/dev/net/tun' && tunOfFdinfo(readFileSync(`${proc}/${pid}/fdinfo/${fd}`, 'utf8')) === tun) return true;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // not ours to read, or gone
  }
  return false;
}

function checkListener(socket: Socket, tun: string): string | undefined {
  const fd = socketFd(socket);
  let cred: PeerCredentials;
  try {
    const read = loadAddon().peerCredentials;
    if (fd === undefined || read === undefined) return 'cannot ask the kernel who holds it (no socket descriptor, or an addon built before peerCredentials)';
    cred = read(fd);
  } catch (e) {
    return `cannot ask the kernel who holds it: ${errorMessage(e)}`;
  }
  return untrustedListener(cred, process.getuid?.() ?? -1, () => holdsTun(cred.pid, tun));
}

/**
 * GET `path` from the instance that owns TUN `tun`; its body as text. Its
 * answer is read only once the listener is known to run as root or as this
 * user (see the top of this file).
 */
export function getFromInstance(tun: string, path: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    let refused = false;
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
    req.on('socket', (socket) => {
      const verify = (): void => {
        const why = checkListener(socket, tun);
        if (why === undefined) return;
        refused = true;
        reject(new DpError('ERR_LISTEN', `not trusting the control socket @${controlSocketPath(tun).slice(1)}: ${why} (dp-tcp status --url reads its status_listen endpoint)`));
        req.destroy();
      };
      // A socket the agent kept from an earlier request is connected already: checked at once.
      if (socket.connecting) socket.once('connect', verify);
      else verify();
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => {
      if (!refused) reject(new DpError('ERR_LISTEN', `cannot reach dp-tcp on ${tun}: ${errorMessage(e)}`));
    });
    req.end();
  });
}
