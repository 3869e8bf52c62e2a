// WAN links for the testbed: delay, jitter, random and bursty loss and a rate on
// any veth, per direction, by scripts/wanem/wanem (an NFQUEUE program: this
// kernel has no sch_netem). Packets are held on the RECEIVING end of a link
// (mangle PREROUTING -i <veth>): held on the sender, they would stay charged
// to the sending socket and TCP small queues would throttle it.
//
// Also the UDP probe (scripts/wanem/wanprobe): a paced, numbered stream with
// send timestamps to several destinations at once, and what arrived.
//
// Every emulator started here is stopped and its iptables rule deleted by
// stop(), and on process exit if a test dies first.
//
// Two things to know when measuring through it:
// - IPv4 only (the rule is iptables, not ip6tables): IPv6 on the link passes untouched.
// - Kernel receive timestamps (SO_TIMESTAMP: ping without -U, tcpdump) are taken before
//   PREROUTING, so they do not see the hold on the receiving side: a ping over a raw link
//   with 25 ms each way shows 25 ms, `ping -U` (user-to-user) 50. Take times in user space.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { inCI, missingTools, skipReason } from './netns.js';

const execFileP = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;
const SRC = join(ROOT, 'scripts', 'wanem');
const BUILD_SCRIPT = join(SRC, 'build.sh');
const CACHE = join(ROOT, '.cache');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One direction of one link. Everything left out is off. */
export interface LinkShape {
  /** Constant one-way delay. */
  delayMs?: number;
  /** uniform: delay ± jitter; normal: standard deviation. */
  jitterMs?: number;
  dist?: 'uniform' | 'normal';
  /**
   * A jitter drawn holds this long after the packet that drew it (default 0:
   * each packet draws its own): packets sent together, of any flow, see the
   * same delay, as a real queue gives them.
   */
  holdMs?: number;
  /** Independent delays, packets may overtake each other (default: FIFO order kept, as real links do). */
  reorder?: boolean;
  /** Independent random loss probability. */
  loss?: number;
  /** Gilbert–Elliott bursty loss, one step per packet: good→bad p, bad→good r, loss in bad (default 1) and good (default 0). */
  ge?: { p: number; r: number; lossBad?: number; lossGood?: number };
  /** The same two states in time: each lasts an exponential time of that mean (ms). Not with `ge`. */
  geMs?: { goodMs: number; badMs: number; lossBad?: number; lossGood?: number };
  /** Bottleneck rate (IP bytes), FIFO; a packet that would wait more than limitMs (default 50) is dropped. */
  rateMbit?: number;
  limitMs?: number;
  seed?: number;
}

/** The emulator's counters (its final JSON line, or one on SIGUSR1). */
export interface WanCounters {
  queue: number;
  packets: number;
  bytes: number;
  accepted: number;
  lost_random: number;
  lost_burst: number;
  dropped_rate: number;
  kernel_queue_dropped: number;
  kernel_user_dropped: number;
  held: number;
  held_max: number;
  bad_state_packets: number;
  drain_accepted: number;
  late_us_mean: number;
  late_us_max: number;
  late_over_1ms: number;
}

/** Why the emulator cannot run here, or undefined if it can. */
export function wanUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (NFQUEUE, network namespaces)';
  if (!existsSync('/usr/include/libnetfilter_queue/libnetfilter_queue.h')) return 'libnetfilter-queue-dev is not installed';
  const missing = missingTools(['cc', 'iptables', 'ip']);
  if (missing.length > 0) return `'${missing[0]}' is not installed`;
  return undefined;
}

/** Why a test that needs the emulator cannot run here (false: it can); in CI that is a failure, not a skip. */
export function wanSkip(what: string): string | false {
  const why = skipReason() || wanUnavailable();
  if (why && inCI()) throw new Error(`${what} cannot run in CI: ${why}`);
  return why || false;
}

/**
 * Builds wanem and wanprobe (once per version of their sources) and returns their paths.
 * They live in the checkout's .cache/ (ignored by git), in a directory named by the
 * sources' hash; older builds there are removed. Not build/: `node-gyp rebuild` empties
 * it, also under a running benchmark. Not the temp dir: the suite leaves nothing there.
 */
export function wanTools(): { wanem: string; wanprobe: string } {
  const h = createHash('sha256');
  for (const f of ['wanem.c', 'wanprobe.c', 'build.sh']) h.update(readFileSync(join(SRC, f)));
  const name = `wanem-${h.digest('hex').slice(0, 12)}`;
  const out = join(CACHE, name);
  const tools = { wanem: join(out, 'wanem'), wanprobe: join(out, 'wanprobe') };
  if (!existsSync(tools.wanem) || !existsSync(tools.wanprobe)) {
    if (existsSync(CACHE)) {
      for (const old of readdirSync(CACHE)) if (old.startsWith('wanem-') && old !== name) rmSync(join(CACHE, old), { recursive: true, force: true });
    }
    execFileSync('bash', [BUILD_SCRIPT, out], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return tools;
}

export function shapeArgs(s: LinkShape): string[] {
  const a: string[] = [];
  if (s.delayMs) a.push('--delay', String(s.delayMs));
  if (s.jitterMs) a.push('--jitter', String(s.jitterMs), '--dist', s.dist ?? 'uniform');
  if (s.jitterMs && s.holdMs) a.push('--hold', String(s.holdMs));
  if (s.reorder) a.push('--reorder');
  if (s.loss) a.push('--loss', String(s.loss));
  if (s.ge) a.push('--ge', [s.ge.p, s.ge.r, s.ge.lossBad ?? 1, s.ge.lossGood ?? 0].join(','));
  if (s.geMs) a.push('--ge-ms', [s.geMs.goodMs, s.geMs.badMs, s.geMs.lossBad ?? 1, s.geMs.lossGood ?? 0].join(','));
  if (s.rateMbit) a.push('--rate', String(s.rateMbit), '--limit', String(s.limitMs ?? 50));
  if (s.seed !== undefined) a.push('--seed', String(s.seed));
  return a;
}

/** A readable description: "25±5 ms, 1 % loss". */
export function describeShape(s: LinkShape | undefined): string {
  if (!s) return 'clean';
  const parts: string[] = [];
  if (s.delayMs || s.jitterMs) parts.push(`${s.delayMs ?? 0}${s.jitterMs ? `±${s.jitterMs}${s.dist === 'normal' ? 'σ' : ''}` : ''} ms`);
  if (s.jitterMs && s.holdMs) parts.push(`jitter held ${s.holdMs} ms`);
  if (s.loss) parts.push(`${+(s.loss * 100).toFixed(3)} % loss`);
  if (s.ge) {
    const mean = (s.ge.p / (s.ge.p + s.ge.r)) * (s.ge.lossBad ?? 1) + (s.ge.r / (s.ge.p + s.ge.r)) * (s.ge.lossGood ?? 0);
    parts.push(`GE p=${s.ge.p} r=${s.ge.r} (${(mean * 100).toFixed(1)} % loss, bursts of ${(1 / s.ge.r).toFixed(1)} packets)`);
  }
  if (s.geMs) {
    const { goodMs, badMs } = s.geMs;
    const mean = (badMs / (goodMs + badMs)) * (s.geMs.lossBad ?? 1) + (goodMs / (goodMs + badMs)) * (s.geMs.lossGood ?? 0);
    parts.push(`GE in time: bad ~${badMs} ms every ~${goodMs} ms (${(mean * 100).toFixed(1)} % loss)`);
  }
  if (s.rateMbit) parts.push(`${s.rateMbit} Mbit/s`);
  return parts.length ? parts.join(', ') : 'clean';
}

const live = new Set<WanEmulator>();
process.on('exit', () => {
  for (const e of live) e.stopSync();
});

const nextQueue = new Map<string, number>();

function ruleSpec(dev: string, queue: number): string[] {
  return ['-t', 'mangle', 'PREROUTING', '-i', dev, '-m', 'comment', '--comment', 'wanem', '-j', 'NFQUEUE', '--queue-num', String(queue)];
}
function ruleArgs(op: '-A' | '-D', dev: string, queue: number): string[] {
  const spec = ruleSpec(dev, queue);
  return [...spec.slice(0, 2), op, ...spec.slice(2)];
}

/** One emulator: one direction of one link, held where it arrives (namespace `ns`, device `dev`). */
export class WanEmulator {
  private lines: string[] = [];
  private waiters: Array<() => void> = [];
  private ruleAdded = false;
  private stopped = false;
  private exited: Promise<void>;
  /** stdout closed: every line the process printed is in `lines`. */
  private ended = false;
  private stderr = '';

  private constructor(
    readonly ns: string,
    readonly dev: string,
    readonly queue: number,
    readonly shape: LinkShape,
    private proc: ChildProcess,
  ) {
    createInterface({ input: proc.stdout! })
      .on('line', (l) => {
        this.lines.push(l);
        for (const w of this.waiters.splice(0)) w();
      })
      .on('close', () => {
        this.ended = true;
        for (const w of this.waiters.splice(0)) w();
      });
    proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((r) => proc.once('exit', () => r()));
  }

  static async start(ns: string, dev: string, shape: LinkShape): Promise<WanEmulator> {
    const { wanem } = wanTools();
    const queue = nextQueue.get(ns) ?? 1;
    nextQueue.set(ns, queue + 1);
    const proc = spawn('ip', ['netns', 'exec', ns, wanem, '--queue', String(queue), ...shapeArgs(shape)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const e = new WanEmulator(ns, dev, queue, shape, proc);
    live.add(e);
    try {
      await e.nextLine((l) => l === 'ready', 5000);
      await execFileP('ip', ['netns', 'exec', ns, 'iptables', ...ruleArgs('-A', dev, queue)]);
      e.ruleAdded = true;
    } catch (err) {
      e.stopSync();
      throw new Error(`wanem on ${ns}/${dev} did not start: ${(err as Error).message}\n${e.stderr}`);
    }
    return e;
  }

  private async nextLine(match: (l: string) => boolean, timeoutMs: number, from = 0): Promise<string> {
    const t0 = Date.now();
    for (;;) {
      const found = this.lines.slice(from).find(match);
      if (found !== undefined) return found;
      if (this.ended) throw new Error(`wanem exited (${this.proc.exitCode ?? this.proc.signalCode ?? 'its output closed'})`);
      const left = timeoutMs - (Date.now() - t0);
      if (left <= 0) throw new Error(`no answer from wanem in ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
  }

  /** The counters so far (SIGUSR1). */
  async counters(): Promise<WanCounters> {
    const from = this.lines.length;
    this.proc.kill('SIGUSR1');
    return JSON.parse(await this.nextLine((l) => l.includes('"counters"'), 3000, from)) as WanCounters;
  }

  /** Deletes the rule, lets the held packets go at their time, and returns the final counters. */
  async stop(): Promise<WanCounters> {
    if (this.stopped) throw new Error('wanem already stopped');
    this.stopped = true;
    if (this.ruleAdded) {
      await execFileP('ip', ['netns', 'exec', this.ns, 'iptables', ...ruleArgs('-D', this.dev, this.queue)]).catch(() => undefined);
      this.ruleAdded = false;
    }
    this.proc.kill('SIGTERM');
    try {
      const last = await this.nextLine((l) => l.includes('"exit"'), 6000);
      await this.exited;
      return JSON.parse(last) as WanCounters;
    } finally {
      this.stopSync();
    }
  }

  /** Best effort, synchronous: for exit hooks and failures. */
  stopSync(): void {
    live.delete(this);
    this.stopped = true;
    if (this.ruleAdded) {
      try {
        execFileSync('ip', ['netns', 'exec', this.ns, 'iptables', ...ruleArgs('-D', this.dev, this.queue)], { stdio: 'ignore' });
      } catch {
        // the namespace may be gone already, and the rule with it
      }
      this.ruleAdded = false;
    }
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** Anything with the testbed's two namespaces (test/helpers/netns.ts Testbed). */
export interface TwoHosts {
  ns(host: 'server' | 'client'): string;
}

/** Per link: one shape for both directions, or one per direction (c2s: client → server). */
export type LinkSpec = LinkShape | { c2s?: LinkShape; s2c?: LinkShape };
export type WanSpec = Partial<Record<1 | 2, LinkSpec>>;

function perDirection(spec: LinkSpec): { c2s?: LinkShape; s2c?: LinkShape } {
  return 'c2s' in spec || 's2c' in spec ? (spec as { c2s?: LinkShape; s2c?: LinkShape }) : { c2s: spec as LinkShape, s2c: spec as LinkShape };
}

/**
 * Shapes the testbed's veth links link1/link2 (scripts/namespace.sh names):
 * client → server is held on linkN-s in the server namespace, server →
 * client on linkN-c in the client namespace.
 */
export class WanLinks {
  private constructor(readonly emulators: Map<string, WanEmulator>) {}

  static async apply(tb: TwoHosts, spec: WanSpec): Promise<WanLinks> {
    const emulators = new Map<string, WanEmulator>();
    try {
      for (const n of [1, 2] as const) {
        const s = spec[n];
        if (!s) continue;
        const d = perDirection(s);
        if (d.c2s) emulators.set(`link${n} c2s`, await WanEmulator.start(tb.ns('server'), `link${n}-s`, d.c2s));
        if (d.s2c) emulators.set(`link${n} s2c`, await WanEmulator.start(tb.ns('client'), `link${n}-c`, d.s2c));
      }
    } catch (e) {
      for (const em of emulators.values()) em.stopSync();
      throw e;
    }
    return new WanLinks(emulators);
  }

  /** Stops every emulator; their final counters by "linkN c2s|s2c". */
  async stop(): Promise<Record<string, WanCounters>> {
    const out: Record<string, WanCounters> = {};
    const results = await Promise.allSettled([...this.emulators].map(async ([k, e]) => [k, await e.stop()] as const));
    for (const r of results) if (r.status === 'fulfilled') out[r.value[0]] = r.value[1];
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return out;
  }
}

// ---------------------------------------------------------------- the probe

/** What one probe run saw: for each destination (stream), the latencies of every copy of each sequence number. */
export interface ProbeResult {
  sent: number;
  pps: number;
  dests: string[];
  /** streams[i].get(seq) = latencies (ms) of the copies of seq that arrived, in arrival order. */
  streams: Array<Map<number, number[]>>;
  /** Arrival order of first copies per stream (sequence numbers). */
  order: number[][];
  sendErrors: number[];
}

export interface ProbeOptions {
  sendNs: string;
  recvNs: string;
  /** IPv4 addresses in recvNs; datagram n goes to each in turn. */
  dests: string[];
  pps: number;
  seconds: number;
  size?: number;
  port?: number;
  /** How long to wait for stragglers after the last datagram was sent. */
  graceMs?: number;
  /** Runs while the stream is sent. */
  during?: () => Promise<void>;
}

let nextPort = 0;

/** Sends a wanprobe stream from sendNs to every destination and returns what arrived. */
export async function probe(o: ProbeOptions): Promise<ProbeResult> {
  const { wanprobe } = wanTools();
  const port = o.port ?? 9000 + (nextPort++ % 1000);
  const out = join(tmpdir(), `wanprobe-${process.pid}-${port}-${Date.now()}.txt`);
  const recv = spawn('ip', ['netns', 'exec', o.recvNs, wanprobe, 'recv', '--port', String(port), '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let recvErr = '';
  recv.stderr.on('data', (d: Buffer) => (recvErr += d.toString()));
  const recvExit = new Promise<number | null>((r) => recv.once('exit', (c) => r(c)));
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`wanprobe recv did not start: ${recvErr}`)), 5000);
      recv.stdout.once('data', () => (clearTimeout(t), resolve()));
      recv.once('exit', () => (clearTimeout(t), reject(new Error(`wanprobe recv exited: ${recvErr}`))));
    });
    const sending = execFileP(
      'ip',
      ['netns', 'exec', o.sendNs, wanprobe, 'send', '--pps', String(o.pps), '--seconds', String(o.seconds), '--size', String(o.size ?? 200), ...o.dests.map((d) => `${d}:${port}`)],
      { timeout: (o.seconds + 30) * 1000 },
    );
    if (o.during) await o.during();
    const { stdout } = await sending;
    const summary = JSON.parse(stdout) as { sent: number; errors: number[] };
    await sleep(o.graceMs ?? 3000);
    recv.kill('SIGTERM');
    const code = await recvExit;
    if (code !== 0) throw new Error(`wanprobe recv exited with ${code}: ${recvErr}`);
    const streams = o.dests.map(() => new Map<number, number[]>());
    const order: number[][] = o.dests.map(() => []);
    for (const line of readFileSync(out, 'utf8').split('\n')) {
      if (!line) continue;
      const [s, q, us] = line.split(' ').map(Number) as [number, number, number];
      const m = streams[s];
      if (!m) continue;
      const copies = m.get(q);
      if (copies) copies.push(us / 1000);
      else {
        m.set(q, [us / 1000]);
        order[s]!.push(q);
      }
    }
    return { sent: summary.sent, pps: o.pps, dests: o.dests, streams, order, sendErrors: summary.errors };
  } finally {
    if (recv.exitCode === null && recv.signalCode === null) recv.kill('SIGKILL');
    rmSync(out, { force: true });
  }
}

export interface StreamStats {
  sent: number;
  /** Sequence numbers that arrived at least once. */
  delivered: number;
  /** Copies beyond the first. */
  duplicates: number;
  /** First copies that arrived after a higher sequence number. */
  reordered: number;
  /** Lost sequence numbers in runs: how many runs, the longest. */
  lossRuns: number;
  longestLossRun: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
  /** Latency of first copies, sorted (ms). */
  sorted: number[];
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function lossRuns(sent: number, has: (seq: number) => boolean): { runs: number; longest: number } {
  let runs = 0, longest = 0, cur = 0;
  for (let s = 1; s <= sent; s++) {
    if (has(s)) cur = 0;
    else {
      if (cur === 0) runs++;
      cur++;
      longest = Math.max(longest, cur);
    }
  }
  return { runs, longest };
}

/** Statistics of one stream, or (several indices) of the per-packet minimum over those streams: the floor. */
export function streamStats(r: ProbeResult, ...idx: number[]): StreamStats {
  const first = new Map<number, number>();
  let duplicates = 0;
  for (const i of idx) {
    for (const [seq, copies] of r.streams[i]!) {
      if (idx.length === 1) duplicates += copies.length - 1;
      const best = Math.min(...copies);
      const had = first.get(seq);
      first.set(seq, had === undefined ? best : Math.min(had, best));
    }
  }
  let reordered = 0;
  if (idx.length === 1) {
    let max = 0;
    for (const q of r.order[idx[0]!]!) {
      if (q < max) reordered++;
      else max = q;
    }
  }
  const sorted = [...first.values()].sort((a, b) => a - b);
  const runs = lossRuns(r.sent, (s) => first.has(s));
  return {
    sent: r.sent,
    delivered: first.size,
    duplicates,
    reordered,
    lossRuns: runs.runs,
    longestLossRun: runs.longest,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1]! : null,
    sorted,
  };
}
