// Many clients on one server, each client in a network namespace of its own
// with its own key, and `links` links through bridges to the server:
//
//   client i ns: wan1 10.0.1.(10+i)/24 ─ veth ─ p<i>x1 ┐
//                                                     ├─ br1 10.0.1.1/24 ┐
//   client j ns: wan1 10.0.1.(10+j)/24 ─ veth ─ p<j>x1 ┘                  │ server ns
//   (and the same for wan2 .. wanL through br2 .. brL, 10.0.b.0/24)        ┘
//
// Tunnel addresses: server 10.0.0.1/24, client i 10.0.0.(10+i)/24 (its peer's
// allowed_ips: 10.0.0.(10+i)/32). The real dp-tcp binary on every side.
// Namespace names carry the test process's pid and a tag, so runs side by side
// never collide. destroy() removes everything; it also runs on process exit
// and on SIGINT/SIGTERM, and the next create() sweeps what a killed run left.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { prettyLine } from '../../src/log.js';
import { encodeKey } from '../../src/secure/keys.js';
import { generatePrivateKey, publicKeyOf } from '../../src/secure/primitives.js';
import { destroyOnExit, forget, interfaceDropsSince, keepDirs, removeNamespace, ROOT, sweepStale, udpRcvbufErrors, udpstreamCommand, waitFor, type StatsSnapshot, type StreamSummary } from './netns.js';

const execFileP = promisify(execFile);
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const NS_PREFIX = 'dpf-';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface KeyFiles {
  /** The private key file (mode 600), as `dp-tcp genkey` writes it. */
  readonly file: string;
  /** The public key text, as `dp-tcp pubkey` prints it. */
  readonly pub: string;
}

export interface FleetOptions {
  /** A few of [a-z0-9]: part of every namespace name. */
  readonly tag: string;
  /** Client namespaces, numbered 1..clients. */
  readonly clients: number;
  /** Links per client (one bridge each), 1..8. */
  readonly links?: number;
}

/** The server's status document as the stats file has it (peer keys: the configured peers too). */
export interface ServerStats extends StatsSnapshot {
  time: string;
  peers?: Array<{ name: string; key: string; allowedIps: string[]; session: string | null }>;
  sessions: Array<StatsSnapshot['sessions'][number] & { peer: { name: string; key: string; allowedIps: string[] } | null }>;
}

/** Runs `fn` over `items`, at most `n` at a time. */
export async function inParallel<T, R>(items: readonly T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** A new key pair written as an operator would (`umask 077; dp-tcp genkey > file`), with the project's own key code. */
export function writeKey(file: string): KeyFiles {
  const priv = generatePrivateKey();
  writeFileSync(file, `${encodeKey(priv)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { file, pub: encodeKey(publicKeyOf(priv)) };
}

export class Fleet {
  readonly id: string;
  readonly dir: string;
  readonly count: number;
  readonly links: number;
  readonly serverKey: KeyFiles;
  private readonly keys = new Map<number, KeyFiles>();
  private readonly procs = new Map<string, ChildProcess>();
  private readonly all: ChildProcess[] = [];
  private readonly namespaces: string[] = [];
  private destroyed = false;

  private constructor(opts: FleetOptions) {
    if (!/^[a-z0-9]{1,8}$/.test(opts.tag)) throw new Error(`fleet tag '${opts.tag}': 1-8 of [a-z0-9]`);
    this.id = `${NS_PREFIX}${process.pid.toString(36)}-${opts.tag}`;
    this.count = opts.clients;
    this.links = opts.links ?? 2;
    if (this.count < 1 || this.count > 200) throw new Error('a fleet has 1..200 clients');
    if (this.links < 1 || this.links > 8) throw new Error('a fleet client has 1..8 links');
    this.dir = mkdtempSync(join(tmpdir(), `dptcp-fleet-${process.pid.toString(36)}-${opts.tag}-`));
    this.serverKey = writeKey(join(this.dir, 'server.key'));
    for (let i = 1; i <= this.count; i++) this.keys.set(i, writeKey(join(this.dir, `c${i}.key`)));
  }

  /** Builds the namespaces, bridges and links (nothing runs yet). */
  static async create(opts: FleetOptions): Promise<Fleet> {
    sweepStale(NS_PREFIX, keepDirs() ? null : 'dptcp-fleet-');
    const f = new Fleet(opts);
    destroyOnExit(f);
    try {
      await f.build();
    } catch (e) {
      f.destroySync();
      throw e;
    }
    return f;
  }

  get serverNs(): string {
    return `${this.id}-s`;
  }

  clientNs(i: number): string {
    return `${this.id}-c${i}`;
  }

  ns(who: 'server' | number): string {
    return who === 'server' ? this.serverNs : this.clientNs(who);
  }

  /** Client i's tunnel address. */
  tunAddr(i: number): string {
    return `10.0.0.${10 + i}`;
  }

  /** Client i's source address on link b (1-based). */
  linkAddr(i: number, b: number): string {
    return `10.0.${b}.${10 + i}`;
  }

  /** The server's listen port on link b. */
  port(b: number): number {
    return 31410 + b;
  }

  clientKey(i: number): KeyFiles {
    return this.keys.get(i) as KeyFiles;
  }

  private async ip(args: string[]): Promise<void> {
    await execFileP('ip', args, { maxBuffer: 16 * 1024 * 1024 });
  }

  private async batch(name: string, lines: string[], ns?: string): Promise<void> {
    const file = join(this.dir, `${name}.batch`);
    writeFileSync(file, lines.join('\n') + '\n');
    await this.ip([...(ns ? ['-n', ns] : []), '-batch', file]);
  }

  private async build(): Promise<void> {
    const all = [this.serverNs, ...Array.from({ length: this.count }, (_, k) => this.clientNs(k + 1))];
    for (const ns of all) {
      this.namespaces.push(ns);
      await this.ip(['netns', 'add', ns]);
    }
    const bridges = ['link set lo up'];
    for (let b = 1; b <= this.links; b++) {
      bridges.push(`link add br${b} type bridge`, `addr add 10.0.${b}.1/24 dev br${b}`, `link set br${b} up`);
    }
    await this.batch('server-bridges', bridges, this.serverNs);
    // veth pairs, created straight inside their namespaces: wan<b> at the client, p<i>x<b> at the server.
    const veths: string[] = [];
    const ports: string[] = [];
    for (let i = 1; i <= this.count; i++) {
      for (let b = 1; b <= this.links; b++) {
        veths.push(`link add wan${b} netns ${this.clientNs(i)} type veth peer name p${i}x${b} netns ${this.serverNs}`);
        ports.push(`link set p${i}x${b} master br${b}`, `link set p${i}x${b} up`);
      }
    }
    await this.batch('veths', veths);
    await this.batch('server-ports', ports, this.serverNs);
    await inParallel(Array.from({ length: this.count }, (_, k) => k + 1), 8, async (i) => {
      const lines = ['link set lo up'];
      for (let b = 1; b <= this.links; b++) lines.push(`addr add ${this.linkAddr(i, b)}/24 dev wan${b}`, `link set wan${b} up`);
      await this.batch(`c${i}`, lines, this.clientNs(i));
    });
  }

  /** The server's config in the peer-key form, listing the clients `peers` (default: all). */
  serverYaml(peers: readonly number[] = this.allClients()): string {
    const links = Array.from({ length: this.links }, (_, k) => `    - { name: wan${k + 1}, listen: "10.0.${k + 1}.1:${this.port(k + 1)}" }`);
    const list = peers.map((i) => `    - { name: c${i}, public_key: "${this.clientKey(i).pub}", allowed_ips: [${this.tunAddr(i)}/32] }`);
    return [
      'server:',
      '  tunnel_device: { name: dpf-s, ip: 10.0.0.1/24, mtu: 1400 }',
      '  links:',
      ...links,
      `  private_key_file: ${this.serverKey.file}`,
      peers.length > 0 ? '  peers:' : '  peers: []',
      ...list,
      'logger: { level: info }',
      '',
    ].join('\n');
  }

  /** Client i's config in the peer-key form: its key, its tunnel address, one link per bridge. */
  clientYaml(i: number, opts: { tunAddr?: string; statusListen?: string } = {}): string {
    const links = Array.from(
      { length: this.links },
      (_, k) => `    - { name: wan${k + 1}, remote: "10.0.${k + 1}.1:${this.port(k + 1)}", local: ${this.linkAddr(i, k + 1)} }`,
    );
    return [
      'client:',
      `  tunnel_device: { name: dpf-c, ip: ${opts.tunAddr ?? this.tunAddr(i)}/24, mtu: 1400 }`,
      '  links:',
      ...links,
      `  private_key_file: ${this.clientKey(i).file}`,
      `  server_public_key: "${this.serverKey.pub}"`,
      `  status_listen: ${opts.statusListen ?? 'off'}`,
      'logger: { level: info }',
      '',
    ].join('\n');
  }

  allClients(): number[] {
    return Array.from({ length: this.count }, (_, k) => k + 1);
  }

  private name(who: 'server' | number): string {
    return who === 'server' ? 'server' : `c${who}`;
  }

  configFile(who: 'server' | number): string {
    return join(this.dir, `${this.name(who)}.yaml`);
  }

  statsFile(who: 'server' | number): string {
    return join(this.dir, `${this.name(who)}.stats.json`);
  }

  logFile(who: 'server' | number): string {
    return join(this.dir, `${this.name(who)}.log`);
  }

  private startDpTcp(who: 'server' | number, yaml: string): ChildProcess {
    const cfg = this.configFile(who);
    writeFileSync(cfg, yaml);
    rmSync(this.statsFile(who), { force: true });
    const log = createWriteStream(this.logFile(who), { flags: 'a' });
    const role = who === 'server' ? 'server' : 'client';
    // `ip netns exec` execs node in place: the child's pid is dp-tcp's (for /proc/<pid>/status).
    const p = spawn('ip', ['netns', 'exec', this.ns(who), process.execPath, CLI, role, '-c', cfg, '--stats-file', this.statsFile(who)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stdout?.pipe(log, { end: false });
    p.stderr?.pipe(log, { end: false });
    this.procs.set(this.name(who), p);
    this.all.push(p);
    return p;
  }

  startServer(peers?: readonly number[]): ChildProcess {
    return this.startDpTcp('server', this.serverYaml(peers));
  }

  startClient(i: number, yaml = this.clientYaml(i)): ChildProcess {
    return this.startDpTcp(i, yaml);
  }

  proc(who: 'server' | number): ChildProcess | undefined {
    return this.procs.get(this.name(who));
  }

  alive(who: 'server' | number): boolean {
    const p = this.proc(who);
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  pid(who: 'server' | number): number {
    const p = this.proc(who);
    if (!p?.pid) throw new Error(`${this.name(who)} is not running`);
    return p.pid;
  }

  /** Stops dp-tcp there (SIGTERM: a clean exit; SIGKILL: a crash); resolves with the exit code. */
  async stop(who: 'server' | number, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const p = this.proc(who);
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const done = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    p.kill(signal);
    return await done;
  }

  /** Rewrites the server's config to list `peers` and sends SIGHUP; resolves once the server logged the reload. */
  async reloadServer(peers: readonly number[]): Promise<string> {
    const before = this.reloads();
    writeFileSync(this.configFile('server'), this.serverYaml(peers));
    this.pid('server');
    this.proc('server')?.kill('SIGHUP');
    await waitFor(() => this.reloads() > before, 'the server to log its reload', 10_000, () => this.log('server').slice(-3000));
    const lines = this.log('server').split('\n').filter((l) => l.includes('config reloaded'));
    return lines[lines.length - 1] ?? '';
  }

  private reloads(): number {
    return this.log('server').split('\n').filter((l) => l.includes('config reloaded')).length;
  }

  /** The log as readable lines. */
  log(who: 'server' | number): string {
    const f = this.logFile(who);
    if (!existsSync(f)) return '';
    return readFileSync(f, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (l.startsWith('{') ? prettyLine(l) : `${l}\n`))
      .join('');
  }

  /** dp-tcp there has logged a link up (its log is JSON lines when not on a terminal). */
  loggedLinkUp(who: 'server' | number): boolean {
    try {
      return readFileSync(this.logFile(who), 'utf8').includes('"msg":"link up');
    } catch {
      return false;
    }
  }

  /** The last status snapshot written (undefined: none yet, or being renamed). */
  stats(who: 'server' | number): ServerStats | undefined {
    try {
      return JSON.parse(readFileSync(this.statsFile(who), 'utf8')) as ServerStats;
    } catch {
      return undefined;
    }
  }

  /** A status snapshot written after this call (the file is rewritten every second). */
  async fresh(who: 'server' | number, timeoutMs = 5000): Promise<ServerStats> {
    const t0 = Date.now();
    let s: ServerStats | undefined;
    await waitFor(
      () => {
        s = this.stats(who);
        return s !== undefined && Date.parse(s.time) > t0;
      },
      `a new ${this.name(who)} stats snapshot`,
      timeoutMs,
    );
    return s as ServerStats;
  }

  /** The server's session of client i (by its peer name), from a snapshot. */
  static sessionOf(s: ServerStats, i: number): ServerStats['sessions'][number] | undefined {
    return s.sessions.find((x) => x.peer?.name === `c${i}`);
  }

  /** Client i has all its links up on the server (and on the client, if it writes stats). */
  upOnServer(s: ServerStats | undefined, i: number): boolean {
    const session = s ? Fleet.sessionOf(s, i) : undefined;
    return session !== undefined && session.links.filter((l) => l.state === 'up').length === this.links;
  }

  /** Waits until every client in `clients` has all its links up, as the server sees it. */
  async waitUp(clients: readonly number[], timeoutMs = 20_000): Promise<void> {
    await waitFor(
      () => {
        const s = this.stats('server');
        return clients.every((i) => this.upOnServer(s, i));
      },
      `clients ${clients.join(',')} up with ${this.links} links`,
      timeoutMs,
      () => {
        const s = this.stats('server');
        const missing = clients.filter((i) => !this.upOnServer(s, i));
        return `not up: ${missing.join(',')}\n--- server log\n${this.log('server').slice(-4000)}\n--- c${missing[0]} log\n${missing[0] ? this.log(missing[0]).slice(-2000) : ''}`;
      },
    );
  }

  async run(who: 'server' | number, cmd: string, args: string[], timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
    return await execFileP('ip', ['netns', 'exec', this.ns(who), cmd, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  }

  /** A long-running command in a namespace, killed by destroy(). */
  spawn(who: 'server' | number, cmd: string, args: string[]): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', this.ns(who), cmd, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout?.resume();
    p.stderr?.resume();
    this.all.push(p);
    return p;
  }

  /** Pings from `who` (client i or the server) and returns how many were answered. */
  async ping(who: 'server' | number, dest: string, count: number, opts: { interval?: number; source?: string; waitS?: number } = {}): Promise<number> {
    const args = ['-c', String(count), '-i', String(opts.interval ?? 0.2), '-W', String(opts.waitS ?? 1), ...(opts.source ? ['-I', opts.source] : []), dest];
    const timeout = (count * (opts.interval ?? 0.2) + (opts.waitS ?? 1) + 10) * 1000;
    try {
      const { stdout } = await this.run(who, 'ping', args, timeout);
      if (/DUP!/.test(stdout)) throw new Error(`duplicate ping replies:\n${stdout}`);
      return Number(/(\d+) received/.exec(stdout)?.[1] ?? 0);
    } catch (e) {
      const out = (e as { stdout?: string }).stdout ?? '';
      if (/DUP!/.test(out)) throw new Error(`duplicate ping replies:\n${out}`, { cause: e });
      // ping exits 1 when replies are missing (2 when it cannot send at all): its output says how many came.
      return Number(/(\d+) received/.exec(out)?.[1] ?? 0);
    }
  }

  /** Pings the server's tunnel address from client i until one is answered; ms from `t0` (epoch ms) to that answer. */
  async firstPing(i: number, t0: number, limitMs: number): Promise<number> {
    for (;;) {
      if ((await this.ping(i, '10.0.0.1', 1, { waitS: 1 })) === 1) return Date.now() - t0;
      if (Date.now() - t0 > limitMs) throw new Error(`c${i}: no ping through the tunnel after ${limitMs} ms\n${this.log(i).slice(-2000)}`);
      await sleep(250);
    }
  }

  /** Drops everything arriving on client i's link b, at the client and at the server: a blackhole in the middle. */
  async blackhole(i: number, b: number, on: boolean): Promise<void> {
    const op = on ? '-I' : '-D';
    await this.run(i, 'iptables', [op, 'INPUT', '-i', `wan${b}`, '-j', 'DROP']);
    await this.run('server', 'iptables', [op, 'INPUT', '-s', this.linkAddr(i, b), '-j', 'DROP']);
  }

  /** Resident set of a process, KiB (VmRSS). */
  static rssKiB(pid: number): number {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  }

  /**
   * Numbered UDP streams (scripts/udpstream.ts) through the tunnel, one per
   * sender (client i -> the server's tunnel address, each to its own port),
   * all at once, while `during` runs. Returns each receiver's summary.
   */
  async udpStreams(senders: readonly number[], pps: number, seconds: number, during?: () => Promise<void>, size = 200): Promise<Map<number, StreamSummary>> {
    const streams = senders.map((i, k) => ({ i, port: 7100 + k, out: join(this.dir, `stream-c${i}-${Date.now()}.json`) }));
    // At nice 0, behind nine tunnels at -15 on two cores, bystanders' streams once missed 92 and 99
    // datagrams with none of the rest later than 36 ms: most likely a starved sender sent what was
    // due in one burst and the receiver's socket buffer (208 KiB: 166 such datagrams on loopback)
    // overflowed (hence udpstreamCommand's nice -20). The namespace's UDP receive-buffer drops are reported.
    const rcvbuf0 = udpRcvbufErrors(this.serverNs);
    // Where a missing datagram went (Testbed.udpStream): the interfaces of the server's and the senders' namespaces.
    const interfaceDropped = interfaceDropsSince([this.serverNs, ...senders.map((i) => this.clientNs(i))].map((ns) => [ns, ns] as const));
    const receivers = streams.map((s) => {
      const p = this.spawn('server', ...udpstreamCommand(['recv', '10.0.0.1', String(s.port), '--out', s.out]));
      return { p, exited: new Promise<void>((r) => p.once('exit', () => r())) };
    });
    // Every receiver bound before the first datagram (tsx takes a while to start).
    await waitFor(
      () => {
        const out = execFileSync('ip', ['netns', 'exec', this.serverNs, 'ss', '-uln'], { encoding: 'utf8' });
        return streams.every((s) => out.includes(`10.0.0.1:${s.port}`));
      },
      'the UDP receivers listening',
      30_000,
    );
    const sending = streams.map((s) =>
      this.run(s.i, ...udpstreamCommand(['send', '10.0.0.1', String(s.port), '--pps', String(pps), '--seconds', String(seconds), '--size', String(size)]), (seconds + 60) * 1000),
    );
    try {
      if (during) await during();
    } finally {
      await Promise.allSettled(sending);
    }
    await Promise.all(sending);
    await sleep(1000); // stragglers
    for (const r of receivers) r.p.kill('SIGTERM');
    await Promise.all(receivers.map((r) => r.exited));
    console.log(`# UDP receive-buffer drops in the server's namespace during the streams: ${udpRcvbufErrors(this.serverNs) - rcvbuf0}`);
    const result = new Map<number, StreamSummary>();
    for (const s of streams) {
      const summary = JSON.parse(readFileSync(s.out, 'utf8')) as StreamSummary;
      summary.sent = Math.round(pps * seconds);
      result.set(s.i, summary);
    }
    if ([...result.values()].some((r) => r.received < r.sent)) {
      console.log(`# not every stream arrived whole; interfaces that dropped meanwhile: ${interfaceDropped().join(', ') || 'none'}`);
    }
    return result;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    // A clean exit first (each removes its TUN and rules), then whatever is left goes with its namespace.
    await Promise.all([...this.procs.keys()].map((k) => this.stop(k === 'server' ? 'server' : Number(k.slice(1))).catch(() => null)));
    this.destroySync();
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    forget(this);
    for (const p of this.all) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    for (const ns of this.namespaces) removeNamespace(ns);
    if (!keepDirs()) rmSync(this.dir, { recursive: true, force: true });
  }
}
