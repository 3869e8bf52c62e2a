// Memory sizing for the tunnel process: V8's heap and glibc's allocator.
//
// The tunnel keeps a small live heap (about 8 MB) while Gbit/s of packets pass
// through it; since the per-packet path reads into native buffers, JavaScript
// allocates a few MB per second under load. With the defaults that costs
// memory, not time. Measured (iperf3 through the tunnel, two netns, 6 s each
// way and 5 s with 4 streams, peak RSS per side): 107-110 MB with the old
// settings, 78-84 MB with these, and no less throughput.
//
// - Old generation. Every scavenge promotes a little (1-2 MB), and the old
//   generation grows until it reaches live x (1 + growing percent). V8's
//   default once threw this process into continuous mark-compacts (14-48 in
//   4 s, 25 % of its CPU, when JavaScript still copied every packet); 400 %
//   cured that at the price of a 44 MB limit. At today's allocation rate 100 %
//   suffices: 6-13 mark-compacts in 17 s of load, 32 instead of 43 MB
//   committed.
// - Young generation. V8 grows each of its two semi-spaces to 16 MB under load
//   whatever the allocation rate. Kept small it costs scavenges of about 1 ms
//   (at 2 MB one every ~150 ms under load; 1 MB, the value here, twice as
//   often) and no throughput or loaded-ping latency in A/B runs. Its size is fixed
//   when V8 starts, so the tunnel process restarts itself with the flag
//   (execv: same pid, descriptors and environment) before anything else.
// - Memory reducer. When the process goes quiet after activity (and 8 s after
//   start), V8 shrinks the heap with 2-3 full mark-compacts, each a pause of
//   1-7 ms: an interactive packet that arrives then waits for it. The heap is
//   small and bounded by the growing percent anyway, so the tunnel keeps what
//   it has: --no-memory-reducer (a command-line flag: setting it at run time
//   does not stop the reducer). Measured (idle ping, 400 at 10 ms): p99
//   0.82-1.48 ms in 9 runs (median 0.95) against 0.90-1.94 in 5 (median 1.34), idle RSS +2-3 MB.
// - glibc malloc. Its mmap threshold adapts upwards after frees, after which
//   transient buffers of a few hundred KB (queued frames) come from the main
//   heap and stay there (4 to 20 MB of it in the same runs); a fixed threshold
//   of 128 KiB returns them to the kernel, and two arenas bound what V8's and
//   libuv's threads keep. Set through GLIBC_TUNABLES for the restarted
//   process, unless the environment already has GLIBC_TUNABLES.
import v8 from 'node:v8';
import { errorMessage } from '../errors.js';
import { optionalAddon } from '../tun/loader.js';

/** Old-generation limit as a percentage above what is live after a mark-compact. */
export const HEAP_GROWING_PERCENT = 100;
/** Size of each of the young generation's two semi-spaces, MB. */
export const SEMI_SPACE_MB = 1;
/** glibc malloc settings the restarted process gets (see above). */
export const MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2';

const SEMI_SPACE_FLAG = '--max-semi-space-size';
/** V8's memory reducer off (see above); --memory-reducer on the command line wins. */
export const NO_MEMORY_REDUCER = '--no-memory-reducer';

/**
 * Node's command line for this process with the semi-space flag added (and
 * the memory reducer off, unless the command line names it), or null when it
 * needs none: the semi-space flag is already given (on the command line or in
 * NODE_OPTIONS: the user's choice wins, and a restarted process has it).
 */
export function tunedCommandLine(execPath: string, execArgv: readonly string[], argv: readonly string[], nodeOptions = ''): string[] | null {
  // V8 takes its flags with - or _ alike.
  const given = (a: string): boolean => {
    const flag = a.replaceAll('_', '-');
    return flag === SEMI_SPACE_FLAG || flag.startsWith(`${SEMI_SPACE_FLAG}=`);
  };
  if (execArgv.some(given) || nodeOptions.split(/\s+/).some(given)) return null;
  const reducerNamed = execArgv.some((a) => /^--(no-)?memory[-_]reducer(=|$)/.test(a));
  return [execPath, ...execArgv, `${SEMI_SPACE_FLAG}=${SEMI_SPACE_MB}`, ...(reducerNamed ? [] : [NO_MEMORY_REDUCER]), ...argv.slice(1)];
}

/**
 * Called first thing by the tunnel: restarts Node with the semi-space flag
 * (and the malloc tunables) unless it has the flag. Returns only when it did
 * not restart: the flag is there, the addon is missing, or the restart failed
 * (the tunnel then runs with V8's default young generation, and says why).
 */
export function restartWithHeapFlags(): void {
  const line = tunedCommandLine(process.execPath, process.execArgv, process.argv, process.env.NODE_OPTIONS);
  if (line === null) return;
  // No addon: opening the TUN reports it, with its remedy; no execv: an addon built before it existed.
  const addon = optionalAddon();
  if (typeof addon?.execv !== 'function') return;
  const tunables = process.env.GLIBC_TUNABLES;
  if (tunables === undefined) process.env.GLIBC_TUNABLES = MALLOC_TUNABLES;
  try {
    addon.execv(process.execPath, line);
  } catch (e) {
    if (tunables === undefined) delete process.env.GLIBC_TUNABLES;
    process.stderr.write(`dp-tcp: warning: could not restart Node with ${SEMI_SPACE_FLAG}=${SEMI_SPACE_MB} (${errorMessage(e)}); running with V8's default young generation\n`);
  }
}

/** Called once, before the tunnel starts. An explicit --heap-growing-percent on the command line wins. */
export function tuneHeap(): void {
  if (process.execArgv.some((a) => a.startsWith('--heap-growing-percent'))) return;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
