// `npm run bench:stages` (root): where an idle round trip's time goes, stage
// by stage, dp-tcp beside OpenVPN (TCP, no cipher, --tcp-nodelay) in one run.
// tcpdump on every interface of both namespaces stamps each ping on its way:
// into the client's TUN, out as a carrier segment, into the server, onto the
// server's TUN, the reply back out of it, and so on. Both namespaces share one
// clock, so each stage is a difference of two stamps of the same packet:
//
//   client in    echo request on the client TUN -> first carrier segment out
//   wire         carrier segment out (client) -> in (server)
//   server in    carrier segment in -> echo request on the server TUN
//   host         echo request -> echo reply on the server TUN (the kernel)
//   server out   echo reply on the server TUN -> first carrier segment out
//   wire back    carrier segment out (server) -> in (client)
//   client out   carrier segment in (client) -> echo reply on the client TUN
//   total        echo request -> echo reply on the client TUN (ping's RTT)
//
// With two links the first copy counts: what the second costs shows up in the
// stages it delays (a duplicate read before the reply, say). The tunnels run
// as a fresh tunnel runs them (100 pings to warm up, then PINGS at 10 ms), as
// `npm run bench` and the acceptance check measure idle RTT. PINGS in the
// environment sets the count (400); PIN=1 puts each tunnel's server on CPU 0
// and its client (and ping) on CPU 1, as the bench's pinned column does.
// Exits 1 when fewer than half the pings could be followed through every stage.
import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLIENT_YAML, SERVER_YAML, Testbed, e2eUnavailable, missingTools, pinProcess } from '../test/helpers/netns.js';
import { openVpnKey, startOpenVpn } from '../test/helpers/openvpn.js';

const execFileP = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const PINGS = Number(process.env['PINGS'] ?? 400);
const PIN = process.env['PIN'] === '1' && cpus().length >= 2;
/** A carrier segment belongs to a ping when it leaves within this long of it, µs. */
const MATCH_WINDOW_US = 5000;
/** The smallest carrier payload that can hold a ping (84-byte IP packet): keepalives are shorter. */
const MIN_CARRIER_PAYLOAD = 84;

const STAGES = ['client in', 'wire', 'server in', 'host', 'server out', 'wire back', 'client out', 'total'] as const;
type Stage = (typeof STAGES)[number];

interface Capture {
  /** Echo requests and replies on the tunnel device, by ICMP sequence number: time in µs. */
  request: Map<number, number>;
  reply: Map<number, number>;
  /** Carrier segments that can hold a ping, in time order. */
  carrierOut: number[];
  carrierIn: number[];
}

/** Reads a capture with tcpdump: `tunnelPrefix` is the tunnel's inner /24 ("10.0.0."). */
async function readCapture(file: string, tunnelPrefix: string): Promise<Capture> {
  const { stdout } = await execFileP('tcpdump', ['-r', file, '-nn', '-tt', '--time-stamp-precision=nano'], { maxBuffer: 256 << 20 });
  const c: Capture = { request: new Map(), reply: new Map(), carrierOut: [], carrierIn: [] };
  for (const line of stdout.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp < 0) continue;
    const [sec, frac = '0'] = line.slice(0, sp).split('.');
    const us = Number(sec) * 1e6 + Number(frac.padEnd(9, '0')) / 1e3;
    const out = / Out IP6? /.test(line);
    const icmp = /IP (\S+) > (\S+): ICMP echo (request|reply), id \d+, seq (\d+)/.exec(line);
    if (icmp) {
      if (!(icmp[1] as string).startsWith(tunnelPrefix)) continue;
      // The client's TUN sees the request go out and the reply come in; the server's the reverse.
      (icmp[3] === 'request' ? c.request : c.reply).set(Number(icmp[4]), us);
      continue;
    }
    const tcp = /IP \S+ > \S+: Flags .* length (\d+)$/.exec(line);
    if (tcp && Number(tcp[1]) >= MIN_CARRIER_PAYLOAD) (out ? c.carrierOut : c.carrierIn).push(us);
  }
  // With -i any the file is not strictly in time order (one ring per CPU); firstAfter needs it.
  c.carrierOut.sort((a, b) => a - b);
  c.carrierIn.sort((a, b) => a - b);
  return c;
}

/** The first stamp in `sorted` at or after `t` (within the match window), or undefined. */
function firstAfter(sorted: number[], t: number): number | undefined {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] as number) < t) lo = mid + 1;
    else hi = mid;
  }
  const v = sorted[lo];
  return v !== undefined && v - t <= MATCH_WINDOW_US ? v : undefined;
}

/** Per-ping stage durations (µs) for the pings every stamp was found for. */
function stages(client: Capture, server: Capture): Map<Stage, number[]> {
  const out = new Map<Stage, number[]>(STAGES.map((s) => [s, []]));
  for (const [seq, t0] of client.request) {
    const t3 = server.request.get(seq);
    const t4 = server.reply.get(seq);
    const t7 = client.reply.get(seq);
    if (t3 === undefined || t4 === undefined || t7 === undefined) continue;
    const t1 = firstAfter(client.carrierOut, t0);
    const t2 = t1 === undefined ? undefined : firstAfter(server.carrierIn, t1);
    const t5 = firstAfter(server.carrierOut, t4);
    const t6 = t5 === undefined ? undefined : firstAfter(client.carrierIn, t5);
    if (t1 === undefined || t2 === undefined || t5 === undefined || t6 === undefined) continue;
    if (!(t0 <= t1 && t1 <= t2 && t2 <= t3 && t3 <= t4 && t4 <= t5 && t5 <= t6 && t6 <= t7)) continue;
    const d: Record<Stage, number> = {
      'client in': t1 - t0,
      wire: t2 - t1,
      'server in': t3 - t2,
      host: t4 - t3,
      'server out': t5 - t4,
      'wire back': t6 - t5,
      'client out': t7 - t6,
      total: t7 - t0,
    };
    for (const s of STAGES) out.get(s)?.push(d[s]);
  }
  return out;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number);
}

interface Result {
  name: string;
  matched: number;
  /** Stage -> [p50, p99] µs. */
  figures: Map<Stage, [number, number]>;
}

/** ping in the client namespace, on CPU 1 with PIN=1. */
async function ping(tb: Testbed, args: string[]): Promise<void> {
  await (PIN ? tb.run('client', 'taskset', ['-c', '1', 'ping', ...args], 60_000) : tb.run('client', 'ping', args, 60_000));
}

async function capture(tb: Testbed, name: string, dest: string, tunnelPrefix: string, sides: { server?: number; client?: number }): Promise<Result> {
  if (PIN) {
    if (sides.server !== undefined) pinProcess(sides.server, '0');
    if (sides.client !== undefined) pinProcess(sides.client, '1');
  }
  await ping(tb, ['-q', '-c', '100', '-i', '0.01', dest]);
  const files = { server: join(tb.dir, `${name}-s.pcap`), client: join(tb.dir, `${name}-c.pcap`) };
  const dumps = (['server', 'client'] as const).map((side) => {
    const p = tb.spawn(side, 'tcpdump', ['-i', 'any', '-nn', '-s', '160', '--time-stamp-precision=nano', '-w', files[side]]);
    return { p, gone: new Promise((r) => p.once('exit', r)) };
  });
  await sleep(1000);
  for (const d of dumps) {
    if (d.p.exitCode !== null || d.p.signalCode !== null) throw new Error(`tcpdump stopped before the pings (exit ${d.p.exitCode ?? d.p.signalCode})`);
  }
  await ping(tb, ['-q', '-c', String(PINGS), '-i', '0.01', '-W', '1', dest]);
  // libpcap hands packets over a block at a time, a block at least every second: what the last
  // second caught is lost if tcpdump stops before it has them.
  await sleep(1500);
  for (const d of dumps) d.p.kill('SIGINT');
  await Promise.all(dumps.map((d) => d.gone));
  const [server, client] = await Promise.all([readCapture(files.server, tunnelPrefix), readCapture(files.client, tunnelPrefix)]);
  const per = stages(client, server);
  const figures = new Map<Stage, [number, number]>();
  for (const [s, v] of per) {
    v.sort((a, b) => a - b);
    figures.set(s, [percentile(v, 0.5), percentile(v, 0.99)]);
  }
  const r = { name, matched: per.get('total')?.length ?? 0, figures };
  console.log(`${name}: ${r.matched} of ${PINGS} pings stamped at every stage`);
  return r;
}

function table(results: Result[]): string {
  const f = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(0));
  let md = `| stage, µs p50 / p99 | ${results.map((r) => r.name).join(' | ')} |\n|---|${results.map(() => '---|').join('')}\n`;
  for (const s of STAGES) {
    md += `| ${s} | ${results.map((r) => `${f(r.figures.get(s)?.[0])} / ${f(r.figures.get(s)?.[1])}`).join(' | ')} |\n`;
  }
  return md;
}

async function main(): Promise<void> {
  const why = e2eUnavailable();
  if (why) {
    console.error(`bench:stages: ${why}`);
    process.exit(1);
  }
  const missing = missingTools(['openvpn', 'tcpdump']);
  if (missing.length > 0) {
    console.error(`bench:stages: needs ${missing.join(', ')} (apt-get install -y openvpn tcpdump)`);
    process.exit(1);
  }
  const tb = await Testbed.create('stages');
  process.on('SIGINT', () => (tb.destroySync(), process.exit(130)));
  try {
    const results: Result[] = [];
    const procs = startOpenVpn(tb, { cipher: 'none', key: await openVpnKey(tb), nodelay: true });
    await tb.timeToTunnel(20_000, '10.8.0.1');
    results.push(await capture(tb, 'OpenVPN TCP nodelay', '10.8.0.1', '10.8.0.', { server: procs[0]?.pid, client: procs[1]?.pid }));
    for (const p of procs) p.kill('SIGTERM');
    await sleep(1000);
    for (const links of [2, 1] as const) {
      const client = links === 2 ? CLIENT_YAML : CLIENT_YAML.replace(/\n\s*- \{ name: wan2.*\n/, '\n');
      const server = tb.startDpTcp('server', SERVER_YAML);
      const clientProc = tb.startDpTcp('client', client);
      await tb.waitUp(links);
      results.push(await capture(tb, `dp-tcp, ${links} link${links === 1 ? '' : 's'}`, '10.0.0.1', '10.0.0.', { server: server.pid, client: clientProc.pid }));
      await tb.stopDpTcp('client');
      await tb.stopDpTcp('server');
    }
    console.log(`\nIdle round trip by stage (${PINGS} pings at 10 ms after 100 to warm up${PIN ? '; servers on CPU 0, clients and ping on CPU 1' : ''}; ${new Date().toISOString().slice(0, 10)}):\n`);
    console.log(table(results));
    const few = results.filter((r) => r.matched < PINGS / 2);
    if (few.length > 0) {
      console.error(`bench:stages: too few pings followed through every stage: ${few.map((r) => `${r.name} ${r.matched}`).join(', ')}`);
      process.exitCode = 1;
    }
  } finally {
    await tb.destroy();
  }
}

await main();
