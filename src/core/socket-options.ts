import type { Socket } from 'node:net';
import type { TimingConfig } from '../config/types.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { loadAddon } from '../tun/loader.js';

/**
 * Per-link socket settings. TCP_NODELAY: a frame leaves when written, not when
 * Nagle decides. TCP_NOTSENT_LOWAT: the socket reports writable only while its
 * unsent data is small, so backlog stays in our queue, where it is bounded in
 * age and can be dropped, rather than in the kernel, where it cannot.
 */
export function tuneLinkSocket(socket: Socket, timing: TimingConfig, log: Logger): void {
  socket.setNoDelay(true);
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return;
  try {
    const addon = loadAddon();
    const c = addon.constants;
    addon.setsockoptInt(fd, c.IPPROTO_TCP, c.TCP_NOTSENT_LOWAT, timing.socketNotsentLowatBytes);
  } catch (e) {
    log.debug('cannot set TCP_NOTSENT_LOWAT', { error: errorMessage(e) });
  }
}
