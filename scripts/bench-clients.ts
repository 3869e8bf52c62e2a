// `npm run bench:clients` (root): many clients on one server.
//
// The server is the real `dp-tcp server` (dist/cli) with its kernel TUN in a
// network namespace of its own, in the peer-key form with one peer per
// client. The clients live in --procs load-generator processes
// (scripts/bench-clients-worker.ts), each in a namespace of its own joined to
// the server by one veth per link through one bridge per link; each client is
// the project's own client core (ClientRole + Tunnel) with its own key,
// session, tunnel address and a source address of its own per link, on an
// in-memory TUN. All clients start at once. Printed, measured only:
//   - time until every client has every link up, and handshakes per second;
//   - server RSS (VmRSS) idle, with every client up, after traffic; per client;
//   - aggregate throughput with every client sending UDP at once (counted by
//     the server's TUN device: what the server delivered), per-client spread;
//   - server CPU seconds (utime + stime) per phase.
//
// The generators share the machine with the server; they run niced (--nice,
// default 10) so that the server gets the CPU it needs and the figures are
// the server's, not the scheduler's (with --nice 0 on two cores the server
// falls behind, its kernel receive queues grow to tens of MB and keepalives
// wait behind them).
//
//   npm run bench:clients -- [--clients 100] [--links 2] [--procs 2] [--seconds 10] [--size 1200] [--nice 10]
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { encodeKey } from '../src/secure/keys.js';
import { generatePrivateKey, publicKeyOf } from '../src/secure/primitives.js';
import { sweepStale } from '../test/helpers/netns.js';
import type { WorkerClient, WorkerJob } from './bench-clients-worker.js';

const execFileP = promisify(execFile);
const ROOT = new URL('../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const WORKER = join(ROOT, 'scripts', 'bench-clients-worker.ts');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function option(name: string, dflt: number, min: number, max: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < min || v > max) {
    process.stderr.write(`bench-clients: --${name} must be an integer from ${min} to ${max}\n`);
    process.exit(2);
  }
  return v;
}

const N = option('clients', 100, 1, 1000);
const LINKS = option('links', 2, 1, 8);
const PROCS = Math.min(N, option('procs', 2, 1, 16));
const SECONDS = option('seconds', 10, 1, 300);
const SIZE = option('size', 1200, 64, 1400);
const BATCH = 16;
const NICE = option('nice', 10, 0, 19);

if (process.getuid?.() !== 0) {
  process.stderr.write('bench-clients: needs root (network namespaces, a TUN device): run it as root or with sudo\n');
  process.exit(1);
}
if (!existsSync(CLI)) {
  process.stderr.write(`bench-clients: ${CLI} is missing: run 'npm run build:ts'\n`);
  process.exit(1);
}

const ID = `dpb-${process.pid.toString(36)}`;
const SERVER_NS = `${ID}-s`;
const genNs = (k: number): string => `${ID}-g${k}`;
const DIR = mkdtempSync(join(tmpdir(), `dptcp-bench-clients-${process.pid.toString(36)}-`));
const namespaces: string[] = [];
const children: ChildProcess[] = [];

/** Client c's tunnel address (10.100.0.0/16; the server is 10.100.0.1). */
const tunAddr = (c: number): string => `10.100.${(c + 1) >> 8}.${(c + 1) & 255}`;
/** Client c's source address on link b: a /24 of its own (4 clients share one beyond 250). */
const linkAddr = (c: number, b: number): string => `10.${10 + b}.${((c - 1) % 250) + 1}.${Math.floor((c - 1) / 250) + 2}`;
const serverLinkAddr = (b: number): string => `10.${10 + b}.0.1`;
const port = (b: number): number => 31400 + b;

function cleanup(): void {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const ns of namespaces) {
    try {
      execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    } catch {
      // gone already
    }
  }
  if (process.env['DPTCP_KEEP_BENCH_DIR'] !== '1') rmSync(DIR, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(sig === 'SIGINT' ? 130 : 143));

async function ipBatch(name: string, lines: string[], ns?: string): Promise<void> {
  const file = join(DIR, `${name}.batch`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  await execFileP('ip', [...(ns ? ['-n', ns] : []), '-batch', file], { maxBuffer: 16 * 1024 * 1024 });
}

/** Which clients generator k hosts (1-based client numbers, dealt round robin). */
function clientsOf(k: number): number[] {
  const out: number[] = [];
  for (let c = k; c <= N; c += PROCS) out.push(c);
  return out;
}

async function buildTopology(): Promise<void> {
  for (const ns of [SERVER_NS, ...Array.from({ length: PROCS }, (_, k) => genNs(k + 1))]) {
    namespaces.push(ns);
    await execFileP('ip', ['netns', 'add', ns]);
  }
  const server = ['link set lo up'];
  for (let b = 1; b <= LINKS; b++) server.push(`link add br${b} type bridge`, `addr add ${serverLinkAddr(b)}/16 dev br${b}`, `link set br${b} up`);
  await ipBatch('server', server, SERVER_NS);
  const veths: string[] = [];
  const ports: string[] = [];
  for (let k = 1; k <= PROCS; k++) {
    for (let b = 1; b <= LINKS; b++) {
      veths.push(`link add wan${b} netns ${genNs(k)} type veth peer name g${k}x${b} netns ${SERVER_NS}`);
      ports.push(`link set g${k}x${b} master br${b}`, `link set g${k}x${b} up`);
    }
  }
  await ipBatch('veths', veths);
  await ipBatch('ports', ports, SERVER_NS);
  for (let k = 1; k <= PROCS; k++) {
    const lines = ['link set lo up'];
    for (let b = 1; b <= LINKS; b++) {
      lines.push(`link set wan${b} up`);
      for (const c of clientsOf(k)) lines.push(`addr add ${linkAddr(c, b)}/16 dev wan${b}`);
    }
    await ipBatch(`gen${k}`, lines, genNs(k));
  }
}

interface Proc {
  user: number;
  system: number;
}

/** CPU seconds of a process (utime, stime; USER_HZ = 100). */
function cpu(pid: number): Proc {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { user: Number(f[11]) / 100, system: Number(f[12]) / 100 };
}
const cpuTotal = (pid: number): number => {
  const c = cpu(pid);
  return c.user + c.system;
};

function status(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

/** Packets and bytes the server's TUN device received from dp-tcp (what the server delivered). */
async function tunCounters(): Promise<{ packets: number; bytes: number }> {
  const { stdout } = await execFileP('ip', ['-n', SERVER_NS, '-j', '-s', 'link', 'show', 'dev', 'dpb-s']);
  const j = JSON.parse(stdout) as Array<{ stats64: { rx: { packets: number; bytes: number } } }>;
  return { packets: j[0]!.stats64.rx.packets, bytes: j[0]!.stats64.rx.bytes };
}

interface ServerSnapshot {
  time: string;
  sessions: Array<{ peer: { name: string } | null; rxPackets: number; links: Array<{ state: string }> }>;
  server?: { handshakesCompleted: number; handshakesRefused: number; refused: Record<string, number>; admission: { cookiesSent: number; evicted: Record<string, number> } };
}

function snapshot(): ServerSnapshot | undefined {
  try {
    return JSON.parse(readFileSync(join(DIR, 'server.stats.json'), 'utf8')) as ServerSnapshot;
  } catch {
    return undefined;
  }
}

async function freshSnapshot(): Promise<ServerSnapshot> {
  const t0 = Date.now();
  for (;;) {
    const s = snapshot();
    if (s && Date.parse(s.time) > t0) return s;
    if (Date.now() - t0 > 10_000) throw new Error('the server wrote no stats snapshot for 10 s');
    await sleep(50);
  }
}

async function until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
}

class Worker {
  readonly proc: ChildProcess;
  readonly events: Array<Record<string, unknown>> = [];
  private waiters: Array<() => void> = [];

  constructor(readonly k: number) {
    // Niced: on a machine shared with the server, the generators take what the server leaves.
    this.proc = spawn('ip', ['netns', 'exec', genNs(k), 'nice', '-n', String(NICE), process.execPath, '--import', 'tsx', WORKER], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(this.proc);
    this.proc.stderr?.pipe(createWriteStream(join(DIR, `gen${k}.log`)));
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      // Stamped on arrival: the time an event happened, within a pipe's delay.
      this.events.push({ ...(JSON.parse(line) as Record<string, unknown>), at: performance.now() });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  send(m: object): void {
    this.proc.stdin!.write(`${JSON.stringify(m)}\n`);
  }

  async next(ev: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const t0 = Date.now();
    for (;;) {
      const e = this.events.find((x) => x['ev'] === ev);
      if (e) {
        this.events.splice(this.events.indexOf(e), 1);
        return e;
      }
      if (this.proc.exitCode !== null) throw new Error(`generator ${this.k} exited (${this.proc.exitCode}); see ${DIR}/gen${this.k}.log`);
      if (Date.now() - t0 > timeoutMs) throw new Error(`generator ${this.k}: no '${ev}' after ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
}

const mib = (kib: number): string => (kib / 1024).toFixed(1);
const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;

async function main(): Promise<void> {
  sweepStale('dpb-', process.env['DPTCP_KEEP_BENCH_DIR'] === '1' ? null : 'dptcp-bench-clients-');
  // Other work on the machine skews every figure below: say how busy it was.
  const loadBefore = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const tBuild = Date.now();
  await buildTopology();
  const buildMs = Date.now() - tBuild;

  // Keys as `dp-tcp genkey` makes them; the server lists every client as a peer with its /32.
  const serverPriv = generatePrivateKey();
  const keyFile = join(DIR, 'server.key');
  writeFileSync(keyFile, `${encodeKey(serverPriv)}\n`, { mode: 0o600 });
  const clients = new Map<number, WorkerClient>();
  const peers: string[] = [];
  for (let c = 1; c <= N; c++) {
    const priv = generatePrivateKey();
    clients.set(c, { c, key: priv.toString('base64'), tun: tunAddr(c), prefix: 16, locals: Array.from({ length: LINKS }, (_, b) => linkAddr(c, b + 1)) });
    peers.push(`    - { name: c${c}, public_key: "${encodeKey(publicKeyOf(priv))}", allowed_ips: [${tunAddr(c)}/32] }`);
  }
  const cfg = join(DIR, 'server.yaml');
  writeFileSync(
    cfg,
    [
      'server:',
      '  tunnel_device: { name: dpb-s, ip: 10.100.0.1/16, mtu: 1400 }',
      '  links:',
      ...Array.from({ length: LINKS }, (_, b) => `    - { name: wan${b + 1}, listen: "${serverLinkAddr(b + 1)}:${port(b + 1)}" }`),
      `  private_key_file: ${keyFile}`,
      '  peers:',
      ...peers,
      'logger: { level: info }',
      '',
    ].join('\n'),
  );
  const serverLog = createWriteStream(join(DIR, 'server.log'));
  const server = spawn('ip', ['netns', 'exec', SERVER_NS, process.execPath, CLI, 'server', '-c', cfg, '--stats-file', join(DIR, 'server.stats.json')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(server);
  server.stdout?.pipe(serverLog, { end: false });
  server.stderr?.pipe(serverLog, { end: false });
  const pid = server.pid as number;
  const serverLogText = (): string => (existsSync(join(DIR, 'server.log')) ? readFileSync(join(DIR, 'server.log'), 'utf8') : '');
  await until(() => (serverLogText().match(/"msg":"listening"/g) ?? []).length >= LINKS || server.exitCode !== null, 'the server listening', 30_000);
  if (server.exitCode !== null) throw new Error(`the server exited (${server.exitCode}):\n${serverLogText()}`);
  // The generated datagrams go to the discard port: dropped after the TUN counted them, no ICMP back.
  await execFileP('ip', ['netns', 'exec', SERVER_NS, 'iptables', '-I', 'INPUT', '-i', 'dpb-s', '-p', 'udp', '--dport', '9', '-j', 'DROP']);

  const workers = Array.from({ length: PROCS }, (_, k) => new Worker(k + 1));
  const job = (k: number): WorkerJob => ({
    serverPublicKey: publicKeyOf(serverPriv).toString('base64'),
    remotes: Array.from({ length: LINKS }, (_, b) => ({ address: serverLinkAddr(b + 1), port: port(b + 1) })),
    serverTun: '10.100.0.1',
    clients: clientsOf(k).map((c) => clients.get(c) as WorkerClient),
    packetBytes: SIZE,
    batchPackets: BATCH,
  });
  workers.forEach((w) => w.send({ job: job(w.k) }));
  await Promise.all(workers.map((w) => w.next('ready', 60_000)));
  await sleep(2000); // the server idle, the generators loaded
  const rssIdle = status(pid, 'VmRSS');
  const cpuIdle0 = cpuTotal(pid);
  const workerCpu0 = workers.map((w) => cpuTotal(w.proc.pid as number));

  // All clients at once.
  const upAt: number[] = [];
  const t0 = performance.now();
  for (const w of workers) w.send({ go: true });
  const collect = (): void => {
    for (const w of workers) {
      for (let e = w.events.findIndex((x) => x['ev'] === 'up'); e >= 0; e = w.events.findIndex((x) => x['ev'] === 'up')) {
        const [ev] = w.events.splice(e, 1);
        upAt.push((ev!['at'] as number) - t0);
      }
    }
  };
  await until(
    () => {
      collect();
      return upAt.length === N;
    },
    `all ${N} clients up (${upAt.length} so far)`,
    300_000,
  );
  const allUpMs = performance.now() - t0;
  const cpuHandshakes = cpuTotal(pid) - cpuIdle0;
  const upSnap = await freshSnapshot();
  await sleep(2000);
  const rssUp = status(pid, 'VmRSS');

  // Idle with every client up: keepalives only.
  const idleSeconds = 5;
  const cpuKeep0 = cpuTotal(pid);
  await sleep(idleSeconds * 1000);
  const cpuKeepalive = cpuTotal(pid) - cpuKeep0;

  // Every client sends at once. The rate is taken over the steady part (from 1 s in to the end of
  // sending); afterwards, once the server's TUN counter stops moving, delivered is compared with generated.
  const before = await freshSnapshot();
  const cpuT0 = cpuTotal(pid);
  const tt0 = performance.now();
  const start = await tunCounters();
  for (const w of workers) w.send({ traffic: SECONDS });
  await sleep(1000);
  const c0 = await tunCounters();
  const w0 = performance.now();
  const sending = Promise.all(workers.map((w) => w.next('sent', (SECONDS + 60) * 1000)));
  const sent = await sending;
  const c1 = await tunCounters();
  const windowS = (performance.now() - w0) / 1000;
  const trafficS = (performance.now() - tt0) / 1000;
  const cpuTraffic = cpuTotal(pid) - cpuT0;
  let settled = c1;
  for (let same = 0; same < 3; ) {
    await sleep(250);
    const c = await tunCounters();
    same = c.packets === settled.packets ? same + 1 : 0;
    settled = c;
  }
  const after = await freshSnapshot();
  const rssAfter = status(pid, 'VmRSS');
  const hwm = status(pid, 'VmHWM');
  const workerCpu = workers.map((w, i) => cpuTotal(w.proc.pid as number) - (workerCpu0[i] as number));

  const injected = sent.flatMap((e) => e['injected'] as number[]);
  const drops: Record<string, number> = {};
  for (const e of sent) {
    const d = e['drops'] as Record<string, number>;
    for (const k of Object.keys(d)) drops[k] = (drops[k] ?? 0) + (d[k] as number);
  }
  const perClient = after.sessions
    .filter((s) => s.peer)
    .map((s) => {
      const b = before.sessions.find((x) => x.peer?.name === s.peer?.name);
      return s.rxPackets - (b?.rxPackets ?? 0);
    })
    .sort((a, b) => a - b);
  const packets = c1.packets - c0.packets;
  const bytes = c1.bytes - c0.bytes;
  const generated = injected.reduce((a, b) => a + b, 0);
  const delivered = settled.packets - start.packets;
  const sorted = [...upAt].sort((a, b) => a - b);
  const sv = upSnap.server;
  const linksUp = upSnap.sessions.reduce((n, s) => n + s.links.filter((l) => l.state === 'up').length, 0);
  const cpuInfo = cpus();

  const lines = [
    `dp-tcp many-clients benchmark, ${new Date().toISOString()}, Node ${process.version}, ${cpuInfo.length} × ${cpuInfo[0]?.model.trim() ?? '?'}, ` +
      `load average ${loadBefore} before the run`,
    `setup: server = dp-tcp binary (peer keys, ChaCha20-Poly1305, TUN with offloads) in its own namespace; ${N} clients, each the project's client core ` +
      `(ClientRole + Tunnel, own key, session, tunnel address and source address per link, in-memory TUN), hosted by ${PROCS} generator process${PROCS === 1 ? '' : 'es'} ` +
      `(nice ${NICE}) in ${PROCS} namespace${PROCS === 1 ? '' : 's'}; ${LINKS} links per client, each through its own bridge; topology built in ${(buildMs / 1000).toFixed(1)} s`,
    `up: all ${N} clients with all ${LINKS} links up ${(allUpMs / 1000).toFixed(2)} s after they started at once ` +
      `(first ${(sorted[0]! / 1000).toFixed(2)} s, median ${(pct(sorted, 50) / 1000).toFixed(2)} s, p90 ${(pct(sorted, 90) / 1000).toFixed(2)} s); ` +
      `server: ${upSnap.sessions.length} sessions, ${linksUp} links up`,
    `handshakes: ${sv?.handshakesCompleted ?? '?'} completed by the server in ${(allUpMs / 1000).toFixed(2)} s = ` +
      `${sv ? ((sv.handshakesCompleted / allUpMs) * 1000).toFixed(0) : '?'}/s (${N * LINKS} links; refused ${sv?.handshakesRefused ?? '?'}` +
      `${sv && sv.handshakesRefused > 0 ? ` ${JSON.stringify(Object.fromEntries(Object.entries(sv.refused).filter(([, v]) => v > 0)))}` : ''}, ` +
      `cookies sent ${sv?.admission.cookiesSent ?? '?'}); server CPU ${cpuHandshakes.toFixed(2)} s for them`,
    `server RSS: ${mib(rssIdle)} MiB idle, ${mib(rssUp)} MiB with ${N} clients up (+${mib(rssUp - rssIdle)} MiB = ${((rssUp - rssIdle) / N).toFixed(0)} KiB per client), ` +
      `${mib(rssAfter)} MiB after the traffic; peak ${mib(hwm)} MiB`,
    `keepalive: server CPU ${cpuKeepalive.toFixed(2)} s over ${idleSeconds} s idle with ${N} clients (${N * LINKS} links) up = ${((cpuKeepalive / idleSeconds) * 100).toFixed(1)} % of a core`,
    `throughput: all ${N} clients sending ${SIZE}-byte UDP datagrams at once for ${SECONDS} s, as fast as their links take them: ` +
      `the server delivered ${((bytes * 8) / windowS / 1e6).toFixed(0)} Mbit/s, ${(packets / windowS / 1000).toFixed(1)} kpps ` +
      `(its TUN counters over the last ${windowS.toFixed(1)} s); per client ${(pct(perClient, 0) / trafficS).toFixed(0)} / ` +
      `${(pct(perClient, 50) / trafficS).toFixed(0)} / ${(perClient[perClient.length - 1]! / trafficS).toFixed(0)} packets/s (min / median / max over the run)`,
    `  generated ${generated} packets, delivered ${delivered} (${((delivered / generated) * 100).toFixed(2)} %); per-link drops at the clients: ` +
      `queue full ${drops['queueFull'] ?? 0}, queue age ${drops['queueAge'] ?? 0}; no link ${drops['noLink'] ?? 0}, no key ${drops['noKey'] ?? 0}; ` +
      `longest event-loop stall in the generators ${sent.map((e) => e['lagMaxMs']).join(' / ')} ms`,
    `server CPU: ${cpuTraffic.toFixed(2)} s during the ${trafficS.toFixed(1)} s of sending (${((cpuTraffic / trafficS) * 100).toFixed(0)} % of a core); ` +
      `${cpuTotal(pid).toFixed(2)} s in all since it started; generators ${workerCpu.map((x) => x.toFixed(1)).join(' + ')} s`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);

  for (const w of workers) w.send({ stop: true });
  server.kill('SIGTERM');
  await Promise.race([new Promise((r) => server.once('exit', r)), sleep(5000)]);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench-clients: ${e instanceof Error ? e.message : String(e)}\n(files in ${DIR}; DPTCP_KEEP_BENCH_DIR=1 keeps them)\n`);
    process.exitCode = 1;
    process.exit(1);
  },
);
