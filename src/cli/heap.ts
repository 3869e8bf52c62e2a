// V8 heap sizing for the tunnel process.
//
// The tunnel keeps a small live heap (about 8 MB) while tens of MB/s of
// socket and frame buffers pass through it. V8 then sizes the old generation
// at live x ~1.3, a few MB above what is live; the young generation grows to
// its 16 MB maximum, and once the slack is not larger than the young
// generation V8 starts an incremental mark-compact after every few
// scavenges. Measured (iperf3 through the tunnel, two netns, 4 s): 14-48
// mark-compacts instead of 2-3, ~25 % of the process's CPU in marking and
// sweeping, and 1.3-2x less throughput for the same CPU. Which of two equal
// builds falls into that regime depends on small differences in allocation
// (it appeared with the secure-channel commit, in open mode too).
//
// A growing factor of 5 (live 8 MB -> limit ~44 MB) keeps the slack above the
// young generation: 2-5 mark-compacts in the same run, throughput back to the
// level before. The flag is read by V8 each time it recomputes the limit, so
// setting it at start-up takes effect; it only raises the limit, and the
// memory reducer still shrinks the heap when the tunnel goes idle.
import v8 from 'node:v8';

/** Old-generation limit as a percentage above what is live after a mark-compact. */
export const HEAP_GROWING_PERCENT = 400;

/** Called once, before the tunnel starts. An explicit --heap-growing-percent on the command line wins. */
export function tuneHeap(): void {
  if (process.execArgv.some((a) => a.startsWith('--heap-growing-percent'))) return;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
