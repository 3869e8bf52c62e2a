// The addon's data loop (native/watch.h). While it is on, a wake-up for a
// packet on the TUN or on a natively read link is handled where libuv would
// have waited, by the same callback, without the rest of a turn of Node's event
// loop between two packets (its check phase alone opens a callback scope every
// turn: 25-28 µs of an idle round trip's path on this kind of machine, traced).
// Anything else that is ready or due (a timer, a socket of Node's, an
// immediate, a signal) ends the wait and gets Node's turn as before.
//
// Each tunnel holds it on while it runs; DPTCP_DATA_LOOP=0 leaves it off (to
// measure the difference), as does an addon built before it.
import { optionalAddon } from '../tun/loader.js';
import type { DataLoopInfo, NativeAddon } from '../tun/native.js';

let holders = 0;

function addon(): NativeAddon | null {
  if (process.env['DPTCP_DATA_LOOP'] === '0') return null;
  const a = optionalAddon();
  return typeof a?.setDataLoop === 'function' ? a : null;
}

/** Turns the data loop on until the returned function is called (once; it is on while anyone holds it). */
export function holdDataLoop(): () => void {
  const a = addon();
  if (a === null) return () => {};
  if (holders === 0) {
    try {
      a.setDataLoop?.(true);
    } catch {
      // Its epoll set could not be made (out of descriptors): packets take Node's loop turns, as without it.
      return () => {};
    }
  }
  holders++;
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--holders === 0) a.setDataLoop?.(false);
  };
}

/** The data loop's state, or null where the addon has none (or it is turned off by DPTCP_DATA_LOOP=0). */
export function dataLoopInfo(): DataLoopInfo | null {
  return addon()?.dataLoopInfo?.() ?? null;
}
