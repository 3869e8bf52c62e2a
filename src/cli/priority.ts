// The tunnel's CPU priority. It forwards packets for every application on the
// host: when it shares the CPUs with a bulk transfer it carries, a ping it is
// about to forward should not wait for the transfer's time slice (measured:
// config/types.ts, DEFAULT_NICE). Like OpenVPN's `--nice`, but absolute (the
// value to run at, not a step from the one started with). Nice ranks threads
// within one scheduling group: against an application in another cgroup
// (systemd's slices with the cpu controller) or another autogroup it changes
// less, and CPUWeight= is the lever there.
import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { errorMessage } from '../errors.js';

export interface PriorityResult {
  /** Threads whose nice value was set. */
  readonly threads: number;
  /** Why it could not be set (no CAP_SYS_NICE, say); undefined: it was. */
  readonly error: string | undefined;
}

/**
 * Sets the nice value of every thread of this process (on Linux a nice value
 * belongs to a thread, and V8's and libuv's threads started before this
 * call keep their own); threads started later inherit it. `tasks` lists the
 * thread ids (tests pass their own), `set` sets one.
 */
export function setProcessNice(
  nice: number,
  tasks: () => number[] = () => readdirSync('/proc/self/task').map(Number),
  set: (tid: number, nice: number) => void = setPriority,
): PriorityResult {
  let threads = 0;
  let error: string | undefined;
  let ids: number[];
  try {
    ids = tasks();
  } catch {
    ids = [0]; // no /proc: this thread at least
  }
  for (const tid of ids) {
    try {
      set(tid, nice);
      threads++;
    } catch (e) {
      // A thread that ended since the listing is no error; a refusal is.
      const code = (e as { code?: string; info?: { code?: string } }).info?.code ?? (e as { code?: string }).code;
      if (code === 'ESRCH') continue;
      error ??= errorMessage(e);
    }
  }
  return { threads, error };
}

/** The nice value of the calling thread (the event loop's, which forwards the packets). */
export function currentNice(): number | undefined {
  try {
    return getPriority();
  } catch {
    return undefined;
  }
}
