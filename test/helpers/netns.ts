// A two-host testbed in network namespaces (scripts/namespace.sh topology)
// with the real dp-tcp binary on each side. Everything it creates is removed
// by destroy(), which also runs on process exit and on SIGINT/SIGTERM if a
// test dies first; what a run killed with SIGKILL left, the next run's first
// testbed sweeps (sweepStale: names carry the pid).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { prettyLine } from '../../src/log.js';

const execFileP = promisify(execFile);
export const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const NS_SCRIPT = join(ROOT, 'scripts', 'namespace.sh');

export type Side = 'server' | 'client';
/** A namespace of the testbed: the two sides, and the optional on-path relay and attacker hosts. */
export type Host = Side | 'relay' | 'attacker';

/** The namespace's count of UDP datagrams dropped for a full receive buffer (/proc/net/snmp, Udp RcvbufErrors). */
export function udpRcvbufErrors(ns: string): number {
  const lines = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith('Udp:'));
  const names = (lines[0] ?? '').split(/\s+/);
  const values = (lines[1] ?? '').split(/\s+/);
  const i = names.indexOf('RcvbufErrors');
  return i < 0 ? 0 : Number(values[i]);
}

/** Each interface's dropped counts (`ip -s link`: rx and tx), by name. */
export type InterfaceDrops = Map<string, { rx: number; tx: number }>;

/** The dropped counts of every interface in namespace `ns`. */
export function interfaceDrops(ns: string): InterfaceDrops {
  type Link = { ifname: string; stats64?: { rx: { dropped: number }; tx: { dropped: number } } };
  const links = JSON.parse(execFileSync('ip', ['-n', ns, '-j', '-s', 'link', 'show'], { encoding: 'utf8' })) as Link[];
  return new Map(links.map((l) => [l.ifname, { rx: l.stats64?.rx.dropped ?? 0, tx: l.stats64?.tx.dropped ?? 0 }]));
}

/** What `interfaceDrops` counted between `before` and `after`, as "name rx N tx N" for each interface that dropped. */
function dropsBetween(before: InterfaceDrops, after: InterfaceDrops): string[] {
  const out: string[] = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { rx: 0, tx: 0 };
    if (a.rx > b.rx || a.tx > b.tx) out.push(`${name} rx ${a.rx - b.rx} tx ${a.tx - b.tx}`);
  }
  return out;
}

/**
 * Counts the interface drops of each namespace in `spaces` ([label, namespace]) from now; the
 * function returned lists what they dropped since, "label name rx N tx N" per interface that did.
 */
export function interfaceDropsSince(spaces: ReadonlyArray<readonly [string, string]>): () => string[] {
  const before = spaces.map(([, ns]) => interfaceDrops(ns));
  return () => spaces.flatMap(([label, ns], k) => dropsBetween(before[k] as InterfaceDrops, interfaceDrops(ns)).map((d) => `${label} ${d}`));
}

/**
 * The drop counters in a stats snapshot, or any part of one, by path ("sessions.0.dropsNoLink",
 * "tun.written.refused.…"): every number whose path names a drop, a refusal, a discard or a stale copy.
 */
export function dropCounters(x: unknown, path = '', out = new Map<string, number>()): Map<string, number> {
  if (x !== null && typeof x === 'object') for (const [k, v] of Object.entries(x)) dropCounters(v, path ? `${path}.${k}` : k, out);
  else if (typeof x === 'number' && /drop|refused|discard|stale/i.test(path)) out.set(path, x);
  return out;
}

/**
 * scripts/udpstream.ts as a command. The instrument must not be what loses
 * datagrams: at nice 0 behind tunnels at -15 on two cores a starved sender
 * bursts what is due and a starved receiver's socket buffer overflows
 * (Fleet.udpStreams saw it), so it runs ahead of the tunnels (nice -20).
 */
export function udpstreamCommand(args: readonly string[]): [string, string[]] {
  return ['nice', ['-n', '-20', process.execPath, '--import', 'tsx', join(ROOT, 'scripts/udpstream.ts'), ...args]];
}

/** Every thread of process `pid` on `cpus` (taskset's list form, "0" or "0-1"). */
export function pinProcess(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** The commands of `tools` this machine does not have. */
export function missingTools(tools: readonly string[]): string[] {
  return tools.filter((tool) => {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
}

/** Why the end-to-end tier cannot run here, or undefined if it can. */
export function e2eUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, TUN devices)';
  const missing = missingTools(['ip', 'iptables', 'ncat', 'ping', 'iperf3']);
  if (missing.length > 0) return `'${missing[0]}' is not installed`;
  if (!existsSync(CLI)) return `${CLI} is missing: run 'npm run build:ts'`;
  return undefined;
}

/** CI is set (true, 1, yes: anything but empty, false or 0), as CI runners set it. */
export function inCI(): boolean {
  const v = (process.env['CI'] ?? '').toLowerCase();
  return v !== '' && v !== 'false' && v !== '0';
}

/** A test that needs root: skipped without it, except in CI, where that is a failure. */
export function rootSkip(why: string): string | false {
  if (process.getuid?.() === 0) return false;
  if (inCI()) throw new Error(`a test that ${why} cannot run in CI: not root`);
  return `needs root (${why})`;
}

/** In CI the end-to-end tier must run: a missing prerequisite is a failure, not a skip. */
export function skipReason(): string | false {
  const why = e2eUnavailable();
  if (why && inCI()) throw new Error(`end-to-end tests cannot run in CI: ${why}`);
  return why ?? false;
}

/** Testbeds and fleets still up: destroyed on exit and on SIGINT/SIGTERM, so a run stopped by hand leaves nothing. */
const live = new Set<{ destroySync(): void }>();
let hooked = false;

/** Tears `bed` down when the process exits or is stopped by SIGINT/SIGTERM (until its own destroySync says `forget`). */
export function destroyOnExit(bed: { destroySync(): void }): void {
  live.add(bed);
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const b of live) b.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const b of live) b.destroySync();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

/** `bed` is down: nothing left to do for it on exit. */
export function forget(bed: { destroySync(): void }): void {
  live.delete(bed);
}

/** Whether the process whose pid is `pid36` (base 36, as helpers put it in names) is gone. */
function ownerGone(pid36: string): boolean {
  const pid = parseInt(pid36, 36);
  return pid !== process.pid && !existsSync(`/proc/${pid}`);
}

/**
 * What earlier runs left when they were killed outright (SIGKILL: no exit hook runs): every
 * namespace named `<nsPrefix><pid in base 36>-...` and every directory of the temporary
 * directory named `<dirPrefix><pid in base 36>-...` whose process is gone. A namespace's
 * processes (dp-tcp, iperf3, OpenVPN) are killed before it is deleted: they would run on.
 * `dirPrefix` null: directories stay (a run asked to keep them). Best effort: a run that
 * cannot sweep still runs.
 */
export function sweepStale(nsPrefix: string, dirPrefix: string | null): void {
  const owner = (name: string, prefix: string): string | undefined =>
    name.startsWith(prefix) ? /^([0-9a-z]+)-/.exec(name.slice(prefix.length))?.[1] : undefined;
  if (dirPrefix !== null) {
    try {
      for (const d of readdirSync(tmpdir())) {
        const pid36 = owner(d, dirPrefix);
        if (pid36 !== undefined && ownerGone(pid36)) rmSync(join(tmpdir(), d), { recursive: true, force: true });
      }
    } catch {
      // best effort
    }
  }
  let names: string[];
  try {
    names = readdirSync('/var/run/netns');
  } catch {
    return;
  }
  for (const ns of names) {
    const pid36 = owner(ns, nsPrefix);
    if (pid36 !== undefined && ownerGone(pid36)) removeNamespace(ns);
  }
}

/** Kills whatever runs in `ns` (a child of a killed helper too), then deletes it. Best effort. */
export function removeNamespace(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter((p) => p !== '');
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  } catch {
    // no such namespace
  }
  try {
    execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
  } catch {
    // nothing else can be done
  }
}

/** Namespace and directory prefixes of Testbed: `dpt-<pid36>-<tag>-s`, `dptcp-e2e-<pid36>-<tag>-XXXXXX`. */
export const TESTBED_NS = 'dpt-';
export const TESTBED_DIR = 'dptcp-e2e-';
/** DPTCP_KEEP_E2E_DIR=1: testbeds and fleets keep their directories, and sweeps leave earlier ones. */
export const keepDirs = (): boolean => process.env['DPTCP_KEEP_E2E_DIR'] === '1';
let swept = false;

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class Testbed {
  readonly serverNs: string;
  readonly clientNs: string;
  readonly dir: string;
  private procs = new Map<Side, ChildProcess>();
  private extraNs: string[] = [];
  private all: ChildProcess[] = [];
  private destroyed = false;

  private constructor(tag: string) {
    const id = `${process.pid.toString(36)}-${tag}`;
    this.serverNs = `${TESTBED_NS}${id}-s`;
    this.clientNs = `${TESTBED_NS}${id}-c`;
    this.dir = mkdtempSync(join(tmpdir(), `${TESTBED_DIR}${id}-`));
  }

  /** A new testbed; the first one of a process first sweeps what killed runs left (sweepStale). */
  static async create(tag: string): Promise<Testbed> {
    if (!swept) {
      swept = true;
      sweepStale(TESTBED_NS, keepDirs() ? null : TESTBED_DIR);
    }
    const t = new Testbed(tag);
    destroyOnExit(t);
    await execFileP('bash', [NS_SCRIPT, 'up'], { env: t.nsEnv() });
    return t;
  }

  private nsEnv(): NodeJS.ProcessEnv {
    return { ...process.env, DPTCP_SERVER_NS: this.serverNs, DPTCP_CLIENT_NS: this.clientNs };
  }

  ns(host: Host): string {
    if (host === 'server') return this.serverNs;
    if (host === 'client') return this.clientNs;
    const ns = `${this.serverNs.slice(0, -2)}-${host === 'relay' ? 'r' : 'a'}`;
    if (!this.extraNs.includes(ns)) throw new Error(`no ${host} host in this testbed: add it first`);
    return ns;
  }

  async run(side: Host, cmd: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
    const r = await execFileP('ip', ['netns', 'exec', this.ns(side), cmd, ...args], {
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { stdout: r.stdout, stderr: r.stderr };
  }

  /**
   * Starts a long-running command in a namespace; it is killed by destroy().
   * `interactive`: its stdin and stdout stay pipes for the caller to drive.
   */
  spawn(side: Host, cmd: string, args: string[], opts: { stdin?: string; stdout?: string; interactive?: boolean } = {}): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', this.ns(side), cmd, ...args], {
      cwd: ROOT,
      stdio: [opts.stdin || opts.interactive ? 'pipe' : 'ignore', opts.stdout || opts.interactive ? 'pipe' : 'ignore', 'pipe'],
    });
    if (opts.stdout) p.stdout?.pipe(createWriteStream(opts.stdout));
    if (opts.stdin) createReadStream(opts.stdin).pipe(p.stdin!);
    p.stderr?.resume();
    this.all.push(p);
    return p;
  }

  statsFile(side: Side): string {
    return join(this.dir, `${side}.stats.json`);
  }

  logFile(side: Side): string {
    return join(this.dir, `${side}.log`);
  }

  /** Starts dp-tcp on one side with the given YAML config text. */
  startDpTcp(side: Side, yaml: string, extra: string[] = [], cli = CLI): ChildProcess {
    const cfg = join(this.dir, `${side}.yaml`);
    writeFileSync(cfg, yaml);
    // A killed predecessor's snapshot must not pass for this process's.
    rmSync(this.statsFile(side), { force: true });
    const log = createWriteStream(this.logFile(side), { flags: 'a' });
    const p = spawn(
      'ip',
      ['netns', 'exec', this.ns(side), process.execPath, cli, side, '-c', cfg, '--stats-file', this.statsFile(side), ...extra],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    p.stdout?.pipe(log);
    p.stderr?.pipe(log);
    this.procs.set(side, p);
    this.all.push(p);
    return p;
  }

  async stopDpTcp(side: Side, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const p = this.procs.get(side);
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const done = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    p.kill(signal);
    return await done;
  }

  /** The process startDpTcp spawned on this side (`ip netns exec` becomes dp-tcp: same pid). */
  process(side: Side): ChildProcess {
    const p = this.procs.get(side);
    if (!p) throw new Error(`dp-tcp was not started on the ${side} side`);
    return p;
  }

  /** dp-tcp on this side was started and has not exited. */
  alive(side: Side): boolean {
    const p = this.procs.get(side);
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  stats(side: Side): StatsSnapshot {
    return JSON.parse(readFileSync(this.statsFile(side), 'utf8')) as StatsSnapshot;
  }

  /** dp-tcp's own drop counters on this side (dropCounters of its stats file); empty without one. */
  tunnelDrops(side: Side): Map<string, number> {
    try {
      return dropCounters(this.stats(side));
    } catch {
      return new Map();
    }
  }

  /**
   * A stats snapshot of `side` written after this call (the file is rewritten every second), read
   * as the caller's shape of it, that `accept` takes.
   */
  async freshStats<T extends { time: string }>(side: Side, accept: (s: T) => boolean = () => true, timeoutMs = 5000): Promise<T> {
    const t0 = Date.now();
    let s: T | undefined;
    await waitFor(
      () => {
        try {
          s = JSON.parse(readFileSync(this.statsFile(side), 'utf8')) as T;
        } catch {
          return false;
        }
        return Date.parse(s.time) > t0 && accept(s);
      },
      `a new ${side} stats snapshot`,
      timeoutMs,
    );
    return s as T;
  }

  /** The side's log (JSON lines on disk) as readable lines: `time LEVEL [scope] msg k=v`. */
  log(side: Side): string {
    return this.rawLog(side)
      .split('\n')
      .filter((l) => l !== '')
      .map(prettyLine)
      .join('');
  }

  rawLog(side: Side): string {
    return existsSync(this.logFile(side)) ? readFileSync(this.logFile(side), 'utf8') : '';
  }

  /**
   * Pings from the client until one is answered; how long that took. `dest`:
   * the server's tunnel address by default, or another tunnel's (a benchmark's OpenVPN).
   */
  async timeToTunnel(limitMs: number, dest = '10.0.0.1'): Promise<number> {
    const t0 = Date.now();
    for (;;) {
      const t1 = Date.now();
      try {
        await this.run('client', 'ping', ['-c', '1', '-W', '0.3', dest], 5000);
        return Date.now() - t0;
      } catch {
        if (Date.now() - t0 > limitMs) throw new Error(`no ping to ${dest} through the tunnel after ${limitMs} ms\n${this.log('client').slice(-3000)}`);
        // Failed at once (no route yet: the TUN is not up): a pause, not a busy loop of processes beside a starting tunnel.
        if (Date.now() - t1 < 250) await sleep(50);
      }
    }
  }

  /** Waits until both sides report `links` links up in one session. */
  async waitUp(links = 2, timeoutMs = 10_000): Promise<void> {
    await waitFor(
      () => {
        for (const side of ['server', 'client'] as const) {
          if (!existsSync(this.statsFile(side))) return false;
          const s = this.stats(side);
          if (s.sessions.length !== 1 || s.sessions[0]!.links.filter((l) => l.state === 'up').length !== links) return false;
        }
        return true;
      },
      `${links} links up on both sides`,
      timeoutMs,
      () => `--- server log\n${this.log('server')}\n--- client log\n${this.log('client')}`,
    );
  }

  /**
   * A third host behind the server ("the internet"): ext0 203.0.113.1/24 in
   * the server namespace, eth0 203.0.113.2/24 in a namespace of its own.
   */
  async addInternetHost(): Promise<string> {
    const ns = `${this.serverNs.slice(0, -2)}-i`;
    this.extraNs.push(ns);
    const ip = (args: string[]): Promise<unknown> => execFileP('ip', args);
    await ip(['netns', 'add', ns]);
    await ip(['link', 'add', 'ext0', 'netns', this.serverNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await ip(['-n', this.serverNs, 'addr', 'add', '203.0.113.1/24', 'dev', 'ext0']);
    await ip(['-n', ns, 'addr', 'add', '203.0.113.2/24', 'dev', 'eth0']);
    await ip(['-n', this.serverNs, 'link', 'set', 'ext0', 'up']);
    await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * An on-path host between client and server, for a man in the middle:
   *   client mitmN-c 10.0.1N.2/24 <-> cN 10.0.1N.1/24  relay  sN 10.0.2N.2/24 <-> mitmN-s 10.0.2N.1/24 server
   * for N = 1, 2. The relay host forwards nothing by itself (no ip_forward):
   * a client dialling 10.0.1N.1 reaches only what listens there.
   */
  async addRelayHost(): Promise<RelayTopology> {
    const ns = `${this.serverNs.slice(0, -2)}-r`;
    this.extraNs.push(ns);
    const ip = (args: string[]): Promise<unknown> => execFileP('ip', args);
    await ip(['netns', 'add', ns]);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    for (const n of [1, 2]) {
      await ip(['link', 'add', `mitm${n}-c`, 'netns', this.clientNs, 'type', 'veth', 'peer', 'name', `c${n}`, 'netns', ns]);
      await ip(['link', 'add', `mitm${n}-s`, 'netns', this.serverNs, 'type', 'veth', 'peer', 'name', `s${n}`, 'netns', ns]);
      await ip(['-n', this.clientNs, 'addr', 'add', `10.0.1${n}.2/24`, 'dev', `mitm${n}-c`]);
      await ip(['-n', ns, 'addr', 'add', `10.0.1${n}.1/24`, 'dev', `c${n}`]);
      await ip(['-n', ns, 'addr', 'add', `10.0.2${n}.2/24`, 'dev', `s${n}`]);
      await ip(['-n', this.serverNs, 'addr', 'add', `10.0.2${n}.1/24`, 'dev', `mitm${n}-s`]);
      for (const [where, dev] of [[this.clientNs, `mitm${n}-c`], [ns, `c${n}`], [ns, `s${n}`], [this.serverNs, `mitm${n}-s`]] as const) {
        await ip(['-n', where, 'link', 'set', dev, 'up']);
      }
    }
    return {
      ns,
      clientSide: [1, 2].map((n) => ({ relay: `10.0.1${n}.1`, client: `10.0.1${n}.2` })),
      serverSide: [1, 2].map((n) => ({ relay: `10.0.2${n}.2`, server: `10.0.2${n}.1` })),
    };
  }

  /**
   * A host on the server's side of the world with `count` addresses spread
   * over /24 prefixes of 10.250.0.0/16 (`perPrefix` in each), all routed to
   * the server namespace: many strangers. atk-s 10.250.255.254/16 in the
   * server namespace, eth0 in the attacker's.
   */
  async addAttackerHost(count: number, perPrefix = 64): Promise<string[]> {
    const ns = `${this.serverNs.slice(0, -2)}-a`;
    this.extraNs.push(ns);
    const ip = (args: string[]): Promise<unknown> => execFileP('ip', args);
    await ip(['netns', 'add', ns]);
    await ip(['link', 'add', 'atk-s', 'netns', this.serverNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await ip(['-n', this.serverNs, 'addr', 'add', '10.250.255.254/16', 'dev', 'atk-s']);
    await ip(['-n', this.serverNs, 'link', 'set', 'atk-s', 'up']);
    const addresses = Array.from({ length: count }, (_, i) => `10.250.${Math.floor(i / perPrefix)}.${(i % perPrefix) + 1}`);
    const batch = join(this.dir, 'attacker-addresses.batch');
    writeFileSync(batch, addresses.map((a) => `address add ${a}/16 dev eth0\n`).join(''));
    await ip(['-n', ns, '-batch', batch]);
    await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    await ip(['-n', ns, 'route', 'add', 'default', 'via', '10.250.255.254', 'dev', 'eth0']);
    return addresses;
  }

  /** Drops everything arriving on link n at both ends: a blackhole in the middle. */
  async blackhole(n: 1 | 2, on: boolean): Promise<void> {
    const op = on ? '-I' : '-D';
    await this.run('client', 'iptables', [op, 'INPUT', '-i', `link${n}-c`, '-j', 'DROP']);
    await this.run('server', 'iptables', [op, 'INPUT', '-i', `link${n}-s`, '-j', 'DROP']);
  }

  /** Rate-limits both directions of every link (tbf), so transfers take seconds. */
  async limitRate(rate: string): Promise<void> {
    for (const n of [1, 2]) {
      for (const side of ['server', 'client'] as const) {
        const dev = `link${n}-${side === 'server' ? 's' : 'c'}`;
        await this.run(side, 'tc', ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', '64kb', 'latency', '50ms']);
      }
    }
  }

  /** Waits until a socket in the side's namespace listens on `port` (what is sent before would be lost or refused). */
  async listening(side: Side, proto: 'tcp' | 'udp', port: number, timeoutMs = 10_000): Promise<void> {
    const t0 = Date.now();
    for (;;) {
      const { stdout } = await this.run(side, 'ss', [proto === 'tcp' ? '-Hltn' : '-Huln', `sport = :${port}`]);
      if (stdout.trim() !== '') return;
      if (Date.now() - t0 > timeoutMs) throw new Error(`nothing listening on ${proto} port ${port} in ${side} after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /**
   * Sends a numbered UDP stream client -> server (or from `from` to the other
   * side) through the tunnel while `during` runs, and returns what the
   * receiver saw.
   */
  async udpStream(
    pps: number,
    seconds: number,
    during?: () => Promise<void>,
    dest = '10.0.0.1',
    size = 200,
    from: Side = 'client',
  ): Promise<StreamSummary> {
    const to: Side = from === 'client' ? 'server' : 'client';
    const out = join(this.dir, `stream-${Date.now()}.json`);
    const port = 7000 + Math.floor(Math.random() * 1000);
    // The receiving namespace's UDP receive-buffer drops are reported: the instrument's, not the tunnel's.
    const rcvbuf0 = udpRcvbufErrors(this.ns(to));
    // Interfaces that drop say where a missing datagram went: the sender's TUN (tx: its ring was full,
    // the tunnel did not read), the receiver's TUN (rx), a link's veth.
    const interfaceDropped = interfaceDropsSince([
      [from, this.ns(from)],
      [to, this.ns(to)],
    ]);
    const tunnel0 = { from: this.tunnelDrops(from), to: this.tunnelDrops(to) };
    const receiver = this.spawn(to, ...udpstreamCommand(['recv', dest, String(port), '--out', out]));
    const exited = new Promise<void>((r) => receiver.once('exit', () => r()));
    // tsx start-up: the stream starts once the receiver's port is bound (a datagram before that would be lost).
    await this.listening(to, 'udp', port);
    const sender = this.run(
      from,
      ...udpstreamCommand(['send', dest, String(port), '--pps', String(pps), '--seconds', String(seconds), '--size', String(size)]),
      (seconds + 30) * 1000,
    );
    if (during) await during();
    await sender;
    await new Promise((r) => setTimeout(r, 1000)); // stragglers
    receiver.kill('SIGTERM');
    await exited;
    const rcvbuf = udpRcvbufErrors(this.ns(to)) - rcvbuf0;
    if (rcvbuf > 0) console.log(`# UDP receive-buffer drops in the ${to}'s namespace during the stream: ${rcvbuf}`);
    const summary = JSON.parse(readFileSync(out, 'utf8')) as StreamSummary;
    summary.sent = Math.round(pps * seconds);
    if (summary.received < summary.sent) {
      const dropped = interfaceDropped();
      const counted = (side: Side, before: Map<string, number>): string[] =>
        [...this.tunnelDrops(side)].filter(([k, v]) => v > (before.get(k) ?? 0)).map(([k, v]) => `${side} ${k} ${v - (before.get(k) ?? 0)}`);
      const tunnel = [...counted(from, tunnel0.from), ...counted(to, tunnel0.to)];
      console.log(
        `# ${summary.sent - summary.received} not delivered; interfaces that dropped meanwhile: ${dropped.join(', ') || 'none'}; ` +
          `dp-tcp's drop counters (stats file, up to 1 s late): ${tunnel.join(', ') || 'none'}`,
      );
    }
    return summary;
  }

  /**
   * Sends `file` from the client to the server over TCP through the tunnel
   * (ncat) while `during` runs. Returns where the copy landed, how long it
   * took and how the receiver exited.
   */
  /** Sends `file` through the tunnel with ncat while `during` runs; `seconds`: from the start until the receiver had it all. */
  async tcpTransfer(file: string, port: number, during?: () => Promise<void>): Promise<{ out: string; seconds: number; exitCode: number | null }> {
    const out = join(this.dir, `recv-${port}.bin`);
    const receiver = this.spawn('server', 'sh', ['-c', `exec ncat -l 10.0.0.1 ${port} --recv-only > ${out}`]);
    let receivedAt = NaN;
    const received = new Promise<number | null>((r) =>
      receiver.once('exit', (c) => {
        receivedAt = Date.now();
        r(c);
      }),
    );
    await this.listening('server', 'tcp', port);
    const t0 = Date.now();
    const sending = this.run('client', 'sh', ['-c', `ncat --send-only 10.0.0.1 ${port} < ${file}`], 240_000);
    if (during) await during();
    await sending;
    const exitCode = await received;
    // Until the receiver had it all, however long `during` took.
    return { out, seconds: (receivedAt - t0) / 1000, exitCode };
  }

  /** Kills link n's TCP connection from the client side (ss -K): the kernel resets it. */
  async killLinkConnection(n: 1 | 2): Promise<void> {
    await this.run('client', 'ss', ['-K', 'dst', `10.0.${n}.1`]);
  }

  /** Drops a random fraction of what arrives on link n at both ends. */
  async randomLoss(n: 1 | 2, probability: number, on: boolean): Promise<void> {
    const op = on ? '-I' : '-D';
    const rule = ['-m', 'statistic', '--mode', 'random', '--probability', String(probability), '-j', 'DROP'];
    await this.run('client', 'iptables', [op, 'INPUT', '-i', `link${n}-c`, ...rule]);
    await this.run('server', 'iptables', [op, 'INPUT', '-i', `link${n}-s`, ...rule]);
  }

  /** How many times the client logged the link up so far. */
  linkUps(name: string): number {
    return this.log('client').split('\n').filter((l) => l.includes(`[client/${name}] link up`)).length;
  }

  /**
   * Waits for the client to log link `name` up again (more than `upsBefore`
   * times) and returns how long after `sinceMs` (epoch ms) the log says it was.
   */
  async waitLinkBack(name: string, upsBefore: number, timeoutMs: number, sinceMs = Date.now()): Promise<number> {
    await waitFor(() => this.linkUps(name) > upsBefore, `link ${name} back up`, timeoutMs, () => this.log('client'));
    const lines = this.log('client').split('\n').filter((l) => l.includes(`[client/${name}] link up`));
    const at = Date.parse(lines[lines.length - 1]!.split(' ')[0]!);
    return at - sinceMs;
  }

  /**
   * Waits until link `name` has been up for `ms` (from the client's log): a link
   * that stays up that long has its redial backoff start over when it next drops.
   */
  async waitLinkStable(name: string, ms: number, timeoutMs = ms + 10_000): Promise<void> {
    await waitFor(
      () => {
        const lines = this.log('client').split('\n');
        let up = -1;
        let down = -1;
        lines.forEach((l, i) => {
          if (l.includes(`[client/${name}] link up`)) up = i;
          if (l.includes(`[client/${name}] link down`)) down = i;
        });
        if (up < 0 || down > up) return false;
        return Date.now() - Date.parse(lines[up]!.split(' ')[0]!) >= ms;
      },
      `link ${name} up for ${ms} ms`,
      timeoutMs,
      () => this.log('client'),
    );
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    for (const side of ['client', 'server'] as const) await this.stopDpTcp(side).catch(() => null);
    this.destroySync();
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    forget(this);
    for (const p of this.all) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    // What else runs there (a run() cut short by a signal) is killed with them.
    for (const ns of [...this.extraNs, this.serverNs, this.clientNs]) removeNamespace(ns);
    if (!keepDirs()) rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface RelayTopology {
  readonly ns: string;
  /** Per link (index 0 = link 1): where the relay listens for the client, and the client's address there. */
  readonly clientSide: ReadonlyArray<{ relay: string; client: string }>;
  /** Per link: the server's listen address, and the relay's address towards it. */
  readonly serverSide: ReadonlyArray<{ relay: string; server: string }>;
}

export interface StreamSummary {
  sent: number;
  received: number;
  maxSeq: number;
  missing: number;
  duplicates: number;
  reordered: number;
  latencyMs: { p50: number | null; p99: number | null; max: number | null; cdf: Array<number | null> };
}

export interface LinkSnapshot {
  id: number;
  name: string;
  state: string;
  txPackets: number;
  firstCopies: number;
  duplicates: number;
  stale: number;
  drops: Record<string, number>;
  rttMs: number | null;
  /** Sends paced at this rate (upload_mbit / download_mbit); null: not paced. */
  paceMbit: number | null;
  connects: number;
  /** Keyed: sealed records dropped on this link because their copy on another link came first (before decryption). */
  duplicateRecords?: number;
  lastDownReason?: string;
}

export interface StatsSnapshot {
  role: Side;
  /** The nice value its event loop runs at. */
  nice?: number;
  sessions: Array<{
    id: string;
    peerAddresses: string[];
    txPackets: number;
    rxPackets: number;
    dropsNoLink: number;
    dropsSpoofed: number;
    /** IPv6 link-local packets from the client's kernel: dropped, apart from spoofing. */
    dropsLinkLocal: number;
    tampered: number;
    encrypted?: boolean;
    /** CLOSE frames that named another link than the one that carried them (ignored). */
    misdirected?: number;
    /** Keyed mode: sealed records dropped without closing their link, by reason. */
    records?: { unknown_key: number; duplicate: number; too_old: number; expired: number };
    handshakes?: number;
    /** TCP offload packets cut for a slowly paced link. */
    splitPackets?: number;
    epoch?: string;
    elimination: { accepted: number; duplicates: number; stale: number };
    links: LinkSnapshot[];
  }>;
  tun?: { written: { packets: number; refused: Record<string, number> } };
  /** Server only: handshake refusals and admission (keyed mode). */
  server?: {
    handshakesRefused: number;
    handshakesCompleted: number;
    refused: Record<string, number>;
    admission: { rateLimited: number; evicted: Record<string, number>; cookiesSent: number };
  };
}

export async function waitFor(cond: () => boolean, what: string, timeoutMs: number, detail?: () => string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const SERVER_YAML = `
server:
  tunnel_device: { name: dptcp-s, ip: 10.0.0.1/24, ipv6: "fd00:dd::1/64", mtu: 1400 }
  links:
    - { name: wan1, listen: "10.0.1.1:31411" }
    - { name: wan2, listen: "10.0.2.1:31413" }
logger: { level: info }
`;

export const CLIENT_YAML = `
client:
  tunnel_device: { name: dptcp-c, ip: 10.0.0.2/24, ipv6: "fd00:dd::2/64", mtu: 1400 }
  links:
    - { name: wan1, remote: "10.0.1.1:31411", local: 10.0.1.2 }
    - { name: wan2, remote: "10.0.2.1:31413", local: 10.0.2.2 }
logger: { level: info }
`;
