import type { Socket } from 'node:net';
import type { TimingConfig } from '../config/types.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { loadAddon } from '../tun/loader.js';
import type { Link } from './link.js';

/** The socket's descriptor; undefined once it has none (destroyed). */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Per-link socket settings. TCP_NODELAY: a frame leaves when written, not when
 * Nagle decides. TCP_NOTSENT_LOWAT: the socket reports writable only while its
 * unsent data is small, so backlog stays in our queue, where it is bounded in
 * age and can be dropped, rather than in the kernel, where it cannot.
 */
export function tuneLinkSocket(socket: Socket, timing: TimingConfig, log: Logger): void {
  socket.setNoDelay(true);
  const fd = socketFd(socket);
  if (fd === undefined) return;
  try {
    const addon = loadAddon();
    const c = addon.constants;
    addon.setsockoptInt(fd, c.IPPROTO_TCP, c.TCP_NOTSENT_LOWAT, timing.socketNotsentLowatBytes);
  } catch (e) {
    log.debug('cannot set TCP_NOTSENT_LOWAT', { error: errorMessage(e) });
  }
}

/** How long a paced link socket's unsent data may take to leave at its rate. */
export const PACED_UNSENT_MS = 3;
/** The smallest unsent bound of a paced socket (about three segments). */
export const MIN_PACED_UNSENT_BYTES = 4096;

/**
 * The unsent bound of a socket paced at `kbit`: PACED_UNSENT_MS at that rate,
 * never above the configured bound nor below MIN_PACED_UNSENT_BYTES.
 */
export function pacedNotsentLowat(kbit: number, configured: number): number {
  const bytes = Math.round((kbit * 125 * PACED_UNSENT_MS) / 1000);
  return Math.max(MIN_PACED_UNSENT_BYTES, Math.min(configured, bytes));
}

/**
 * Sends on the link at most at `kbit` kbit/s (the link's upload_mbit or
 * download_mbit share). The kernel paces the socket (SO_MAX_PACING_RATE), so
 * the buffer of the path's slowest hop stays empty; what the link cannot carry
 * waits in our queue instead, where packets of sparse flows pass it and age
 * drops it. The unsent bound shrinks to match (pacedNotsentLowat): at the
 * default 128 KiB a ping written behind it would wait 23 ms at 45 Mbit/s.
 * Sets link.paceKbit; leaves it unset, after a warning, when the kernel refused.
 */
export function paceLink(link: Link, kbit: number | undefined, timing: TimingConfig, log: Logger): void {
  const fd = socketFd(link.socket);
  if (kbit === undefined || fd === undefined) return;
  try {
    const addon = loadAddon();
    const c = addon.constants;
    addon.setsockoptInt(fd, c.SOL_SOCKET, c.SO_MAX_PACING_RATE, kbit * 125);
    const bound = pacedNotsentLowat(kbit, timing.socketNotsentLowatBytes);
    addon.setsockoptInt(fd, c.IPPROTO_TCP, c.TCP_NOTSENT_LOWAT, bound);
    link.paceKbit = kbit;
    // The lowat alone lets a write fill the kernel's last segment buffer (up to 64 KiB): the link holds
    // to it. DPTCP_PACED_UNSENT_CAP=0 leaves it to the lowat alone (bench:pacing compares both).
    link.unsentCap = process.env['DPTCP_PACED_UNSENT_CAP'] === '0' ? undefined : bound;
  } catch (e) {
    log.warn('cannot pace the link socket: it sends at whatever rate TCP finds', { kbit, error: errorMessage(e) });
  }
}
