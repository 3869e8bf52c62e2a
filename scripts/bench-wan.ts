// `npm run bench:wan` (root): the tunnels on emulated WAN links, side by side in
// one run (issue 14). Two netns hosts joined by two veth links; every link
// and direction goes through the WAN emulator (scripts/wanem, NFQUEUE, held on
// the receiving end). At the same time, in one paced stream (client → server,
// 200 datagrams/s, every datagram stamped just before its own send):
//   raw UDP on link 1, raw UDP on link 2, the floor (the first of the two raw
//   copies of each datagram: the per-packet minimum), OpenVPN over TCP on
//   link 1, and dp-tcp over both links;
// for scenarios
//   (a) link 1 25±5 ms, link 2 40±5 ms, 1 % random loss on each (both directions)
//   (b) the same with 5 % loss
//   (c) bursty loss on link 1 (Gilbert–Elliott per packet), link 2 as in (a)
//   (c2) link 1 bad (everything lost) for ~50 ms every ~2 s (Gilbert–Elliott in time), link 2 as in (a)
//   (d) ping RTT through each tunnel, idle and under a saturating iperf3 client → server and
//       server → client (with its throughput), on clean veth links and on WAN links
//       (the delays of (a), no loss, a rate limit).
// Writes bench/results/wan.{json,md,svg} and prints the Markdown.
//   --quick           10 s streams, 200 pings
//   --seconds N       stream length (default 30)
//   --only a,b,c,c2,d scenarios to run (d: d1 and d2, or one of them)
//   --wan-rate MBIT   the rate of each WAN link in (d) (default 50)
//   --pace MBIT       (d2) also dp-tcp with upload_mbit and download_mbit set to this on each
//                     link (default 90 % of the WAN rate; 0: not)
//   --hold MS         how long a jitter drawn holds on a link (default 2; 0: per packet)
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { CLIENT_YAML, ROOT, SERVER_YAML, Testbed, e2eUnavailable, missingTools, type StatsSnapshot } from '../test/helpers/netns.js';
import { OPENVPN_SERVER, openVpnKey, startOpenVpn } from '../test/helpers/openvpn.js';
import {
  describeShape,
  probe,
  streamStats,
  wanTools,
  wanUnavailable,
  WanLinks,
  type LinkShape,
  type WanCounters,
  type WanSpec,
} from '../test/helpers/wan.js';

const OUT = join(ROOT, 'bench', 'results');
const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = argv.includes('--quick');
const SECONDS = Number(flag('--seconds') ?? (QUICK ? 10 : 30));
const PPS = 200;
const PINGS = QUICK ? 200 : 400;
const WAN_RATE = Number(flag('--wan-rate') ?? 50);
const PACE = Number(flag('--pace') ?? WAN_RATE * 0.9);
const ONLY = new Set((flag('--only') ?? 'a,b,c,c2,d').split(','));
const GRACE_MS = 3000;
/** How long a jitter drawn on a link holds (--hold of wanem); --hold 0: each packet its own. */
const HOLD_MS = Number(flag('--hold') ?? 2);
/** dp-tcp's client.connections_per_link (TCP connections per link; 1 is the default). */
const CONNECTIONS = Number(flag('--connections') ?? 1);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const DP_TCP = '10.0.0.1';

const METHODS = [
  { key: 'raw1', label: 'raw UDP, link 1', streams: [0], color: '#1f77b4', dash: '6,3', width: 1.5 },
  { key: 'raw2', label: 'raw UDP, link 2', streams: [1], color: '#17becf', dash: '6,3', width: 1.5 },
  { key: 'floor', label: 'floor (first of the raw copies)', streams: [0, 1], color: '#000000', dash: '2,2', width: 1.5 },
  { key: 'openvpn', label: 'OpenVPN TCP, link 1', streams: [2], color: '#d62728', dash: '', width: 2 },
  { key: 'dptcp', label: 'dp-tcp, both links', streams: [3], color: '#2ca02c', dash: '', width: 2.5 },
] as const;
const DESTS = ['10.0.1.1', '10.0.2.1', OPENVPN_SERVER, DP_TCP];

interface MethodResult {
  key: string;
  label: string;
  sent: number;
  delivered: number;
  duplicates: number | null;
  reordered: number | null;
  p50: number | null;
  p99: number | null;
  p999: number | null;
  max: number | null;
  /** [latency ms, fraction of the datagrams sent that arrived later or never] */
  ccdf: Array<[number, number]>;
}

interface StreamScenario {
  id: string;
  title: string;
  links: Record<string, string>;
  seconds: number;
  pps: number;
  methods: MethodResult[];
  emulators: Record<string, WanCounters>;
  /** Reconnections and drops over the stream; first copies: which link delivered each packet first at the server (c→s). */
  dptcp: { reconnections: number; drops: Record<string, number>; firstCopies: Record<string, number> };
  sendErrors: number[];
}

interface PingStats {
  sent: number;
  answered: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

interface PingRow {
  tunnel: string;
  idle: PingStats;
  c2s?: LoadedPing;
  s2c?: LoadedPing;
}

interface LoadedPing {
  ping: PingStats;
  mbps: number | null;
  /** dp-tcp: its drops by side and reason during the run (nothing: none). */
  drops?: Record<string, number>;
}

interface PingScenario {
  id: string;
  title: string;
  links: Record<string, string>;
  rows: PingRow[];
  emulators: Record<string, WanCounters>;
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** The tail: at fractions 1, 10^-0.05, … down to 1/sent, the latency beyond which that fraction of the stream lies. */
function ccdf(sorted: number[], sent: number): Array<[number, number]> {
  const pts: Array<[number, number]> = [];
  const lowest = Math.log10(1 / sent);
  for (let e = 0; e >= lowest - 1e-9; e -= 0.05) {
    const frac = 10 ** e;
    const i = Math.ceil(sent * (1 - frac)); // the i-th datagram (0-based) is the first of the last `frac`
    if (i >= sorted.length) break; // beyond: lost, never arrived
    pts.push([Math.round(sorted[i]! * 1000) / 1000, frac]);
  }
  if (sorted.length) pts.push([sorted[sorted.length - 1]!, (sent - sorted.length + 1) / sent]);
  return pts;
}

/** Drops by side and reason that grew from `before` to `after` (dpTcpCounters), with how many. */
function dropsSince(before: { drops: Record<string, number> }, after: { drops: Record<string, number> }): Record<string, number> {
  const drops: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.drops)) if (v - (before.drops[k] ?? 0) > 0) drops[k] = v - (before.drops[k] ?? 0);
  return drops;
}

function dpTcpCounters(tb: Testbed): { connects: number; drops: Record<string, number>; firstCopies: Record<string, number> } {
  let connects = 0;
  const drops: Record<string, number> = {};
  const firstCopies: Record<string, number> = {};
  for (const side of ['client', 'server'] as const) {
    let s: StatsSnapshot;
    try {
      s = tb.stats(side);
    } catch {
      continue;
    }
    for (const sess of s.sessions) {
      for (const l of sess.links) {
        connects += l.connects;
        if (side === 'server') firstCopies[l.name] = (firstCopies[l.name] ?? 0) + l.firstCopies;
        for (const [k, v] of Object.entries(l.drops)) drops[`${side} ${k}`] = (drops[`${side} ${k}`] ?? 0) + v;
      }
    }
  }
  return { connects, drops, firstCopies };
}

async function waitPing(tb: Testbed, dest: string, limitMs = 20_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    const ok = await tb.run('client', 'ping', ['-c', '1', '-W', '1', dest], 5000).then(
      () => true,
      () => false,
    );
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`no ping to ${dest} in ${limitMs} ms`);
}

async function streamScenario(tb: Testbed, id: string, title: string, spec: WanSpec): Promise<StreamScenario> {
  console.log(`== (${id}) ${title}`);
  const links = await WanLinks.apply(tb, spec);
  let result: StreamScenario;
  try {
    await sleep(2000); // the tunnels' TCP connections feel the new links
    await waitPing(tb, OPENVPN_SERVER);
    await waitPing(tb, DP_TCP);
    const before = dpTcpCounters(tb);
    const r = await probe({ sendNs: tb.ns('client'), recvNs: tb.ns('server'), dests: DESTS, pps: PPS, seconds: SECONDS, graceMs: GRACE_MS });
    await sleep(1200); // a fresh stats snapshot
    const after = dpTcpCounters(tb);
    const drops = dropsSince(before, after);
    const methods: MethodResult[] = METHODS.map((m) => {
      const s = streamStats(r, ...m.streams);
      const single = m.streams.length === 1;
      return {
        key: m.key,
        label: m.label,
        sent: s.sent,
        delivered: s.delivered,
        duplicates: single ? s.duplicates : null,
        reordered: single ? s.reordered : null,
        p50: s.p50,
        p99: s.p99,
        p999: percentile(s.sorted, 99.9),
        max: s.max,
        ccdf: ccdf(s.sorted, s.sent),
      };
    });
    const emulators = await links.stop();
    result = {
      id,
      title,
      links: Object.fromEntries(([1, 2] as const).map((n) => [`link ${n}`, describeLinkSpec(spec[n])])),
      seconds: SECONDS,
      pps: PPS,
      methods,
      emulators,
      dptcp: {
        reconnections: after.connects - before.connects,
        drops,
        firstCopies: Object.fromEntries(Object.entries(after.firstCopies).map(([k, v]) => [k, v - (before.firstCopies[k] ?? 0)])),
      },
      sendErrors: r.sendErrors,
    };
  } catch (e) {
    await links.stop().catch(() => undefined);
    throw e;
  }
  for (const m of result.methods) {
    console.log(
      `   ${m.label.padEnd(32)} delivered ${m.delivered}/${m.sent}, dup ${m.duplicates ?? '–'}, ` +
        `p50 ${m.p50?.toFixed(2)} p99 ${m.p99?.toFixed(2)} max ${m.max?.toFixed(1)} ms`,
    );
  }
  console.log(
    `   dp-tcp: ${result.dptcp.reconnections} reconnections, drops ${JSON.stringify(result.dptcp.drops)}, first copies by link ${JSON.stringify(result.dptcp.firstCopies)}`,
  );
  return result;
}

function describeLinkSpec(s: WanSpec[1]): string {
  if (!s) return 'clean';
  if ('c2s' in s || 's2c' in s) {
    const d = s as { c2s?: LinkShape; s2c?: LinkShape };
    return `c→s ${describeShape(d.c2s)}; s→c ${describeShape(d.s2c)}`;
  }
  return `${describeShape(s as LinkShape)}, each direction`;
}

async function ping(tb: Testbed, dest: string, count: number): Promise<PingStats> {
  const { stdout } = await tb
    // -U: user-to-user time. Without it ping takes the reply's kernel receive timestamp, which is
    // set before PREROUTING: the emulator's hold on the client side would not be counted.
    .run('client', 'ping', ['-U', '-c', String(count), '-i', '0.01', '-W', '1', dest], 120_000)
    .catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
  const t = [...stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  return { sent: count, answered: t.length, p50: percentile(t, 50), p99: percentile(t, 99), max: t.length ? t[t.length - 1]! : null };
}

async function restartClient(tb: Testbed, yaml: string): Promise<void> {
  await tb.stopDpTcp('client');
  tb.startDpTcp('client', yaml);
  await tb.waitUp(2 * CONNECTIONS, 30_000);
  await waitPing(tb, DP_TCP);
}

/** Pings through `dest` while iperf3 saturates the tunnel one way; the pings and iperf3's throughput. */
async function loadedPing(tb: Testbed, dest: string, reverse: boolean): Promise<LoadedPing> {
  const before = dest === DP_TCP ? dpTcpCounters(tb) : undefined;
  const seconds = Math.ceil(PINGS * 0.01 + 4);
  const iperf = tb
    .run('client', 'iperf3', ['-c', dest, '-t', String(seconds), '-J', ...(reverse ? ['-R'] : [])], (seconds + 30) * 1000)
    .then(
      ({ stdout }) => stdout,
      (e: { stdout?: string }) => e.stdout ?? '',
    );
  await sleep(1500);
  const p = await ping(tb, dest, PINGS);
  const out = await iperf;
  let mbps: number | null = null;
  try {
    const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second: number } } };
    mbps = j.end?.sum_received ? Math.round(j.end.sum_received.bits_per_second / 1e6) : null;
  } catch {
    mbps = null;
  }
  if (before === undefined) return { ping: p, mbps };
  await sleep(1200); // a fresh stats snapshot
  const after = dpTcpCounters(tb);
  const drops = dropsSince(before, after);
  return { ping: p, mbps, drops };
}

/** dp-tcp's client config: CONNECTIONS per link, and each link paced at `paceMbit` both ways if given. */
function clientYaml(paceMbit?: number): string {
  let y = CLIENT_YAML.replace('client:\n', `client:\n  connections_per_link: ${CONNECTIONS}\n`);
  if (paceMbit !== undefined) y = y.replace(/local: (10\.0\.[12]\.2) \}/g, `local: $1, upload_mbit: ${paceMbit}, download_mbit: ${paceMbit} }`);
  return y;
}

/**
 * Idle and loaded pings through each path. `paceMbit`: then dp-tcp again, its
 * client restarted with both links paced at that rate, and restarted as it was after.
 */
async function pingScenario(tb: Testbed, id: string, title: string, spec: WanSpec | null, paceMbit?: number): Promise<PingScenario> {
  console.log(`== (${id}) ${title}`);
  const links = spec ? await WanLinks.apply(tb, spec) : null;
  const rows: PingRow[] = [];
  let emulators: Record<string, WanCounters> = {};
  const iperfServer = tb.spawn('server', 'iperf3', ['-s']);
  try {
    await sleep(1000);
    for (const [tunnel, dest] of [
      ['raw link 1', '10.0.1.1'],
      ['raw link 2', '10.0.2.1'],
    ] as const) {
      rows.push({ tunnel, idle: await ping(tb, dest, PINGS) });
    }
    for (const [tunnel, dest] of [
      ['OpenVPN TCP, link 1', OPENVPN_SERVER],
      ['dp-tcp, both links', DP_TCP],
    ] as const) {
      await waitPing(tb, dest);
      const idle = await ping(tb, dest, PINGS);
      const c2s = await loadedPing(tb, dest, false);
      await sleep(1000);
      const s2c = await loadedPing(tb, dest, true);
      await sleep(1000);
      rows.push({ tunnel, idle, c2s, s2c });
    }
    if (paceMbit !== undefined) {
      await restartClient(tb, clientYaml(paceMbit));
      try {
        const idle = await ping(tb, DP_TCP, PINGS);
        const c2s = await loadedPing(tb, DP_TCP, false);
        await sleep(1000);
        const s2c = await loadedPing(tb, DP_TCP, true);
        rows.push({ tunnel: `dp-tcp, paced at ${paceMbit} Mbit/s`, idle, c2s, s2c });
      } finally {
        await restartClient(tb, clientYaml());
      }
    }
  } finally {
    iperfServer.kill();
    if (links) {
      emulators = await links.stop();
      console.log(`   emulators: ${JSON.stringify(emulators)}`);
    }
  }
  const f = (p: PingStats): string => `${p.p50?.toFixed(2)} / ${p.p99?.toFixed(2)} ms, ${p.sent - p.answered} lost`;
  for (const r of rows) {
    let l = `   ${r.tunnel.padEnd(22)} idle ${f(r.idle)}`;
    const d = (x: LoadedPing): string => (x.drops ? `, drops ${JSON.stringify(x.drops)}` : '');
    if (r.c2s) l += `; iperf3 c→s ${r.c2s.mbps} Mbit/s: ${f(r.c2s.ping)}${d(r.c2s)}`;
    if (r.s2c) l += `; iperf3 s→c ${r.s2c.mbps} Mbit/s: ${f(r.s2c.ping)}${d(r.s2c)}`;
    console.log(l);
  }
  return { id, title, emulators, links: spec ? Object.fromEntries(([1, 2] as const).map((n) => [`link ${n}`, describeLinkSpec(spec[n])])) : { 'link 1': 'clean veth', 'link 2': 'clean veth' }, rows };
}

// ------------------------------------------------------------------ output

const fmt = (v: number | null | undefined, d = 1): string => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));

/** What the emulators did to all packets on each link (the tunnels' too), and how late they released any. */
function emulatorLine(em: Record<string, WanCounters>): string {
  const e = Object.entries(em);
  const lost = e.map(([k, c]) => `${k} ${(((c.lost_random + c.lost_burst + c.dropped_rate) / Math.max(1, c.packets)) * 100).toFixed(2)} %`).join(', ');
  const late = e.reduce((n, [, c]) => n + c.late_over_1ms, 0);
  const all = e.reduce((n, [, c]) => n + c.accepted, 0);
  const worst = Math.max(0, ...e.map(([, c]) => c.late_us_max)) / 1000;
  return (
    `Emulators: dropped (all packets on the link) ${lost}; released more than 1 ms after their time ` +
    `${late} of ${all} packets (${((late / Math.max(1, all)) * 100).toFixed(2)} %), the latest by ${worst.toFixed(1)} ms (machine load).`
  );
}

function markdown(streams: StreamScenario[], pings: PingScenario[], meta: Record<string, string>): string {
  let md =
    `Measured ${meta['date']} on ${meta['cpus']}, Node ${meta['node']}, load average ${meta['load']} at the start; ` +
    `one machine, two network namespaces joined by two veth links, every link and direction through the NFQUEUE WAN emulator ` +
    `(\`npm run bench:wan${QUICK || CONNECTIONS > 1 ? ` --${QUICK ? ' --quick' : ''}${CONNECTIONS > 1 ? ` --connections ${CONNECTIONS}` : ''}` : ''}\`; dp-tcp with ${CONNECTIONS} TCP connection${CONNECTIONS > 1 ? 's' : ''} per link). One-way latency of a UDP stream client → server, ${PPS} datagrams/s for ${SECONDS} s, ` +
    `every method at the same time; a datagram later than ${GRACE_MS / 1000} s after the end of the stream counts as lost.\n`;
  for (const s of streams) {
    md += `\n**(${s.id}) ${s.title}** — ${Object.entries(s.links).map(([k, v]) => `${k}: ${v}`).join('; ')}\n\n`;
    md += '| method | delivered | duplicates | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|---|\n';
    for (const m of s.methods) {
      md += `| ${m.label} | ${m.delivered}/${m.sent} | ${m.duplicates ?? '–'} | ${fmt(m.p50)} | ${fmt(m.p99)} | ${fmt(m.p999)} | ${fmt(m.max)} |\n`;
    }
    md += `\n${emulatorLine(s.emulators)} dp-tcp: ${s.dptcp.reconnections} link reconnections, drops ${JSON.stringify(s.dptcp.drops)}, first copies at the server by link ${JSON.stringify(s.dptcp.firstCopies)}.\n`;
  }
  for (const p of pings) {
    md += `\n**(${p.id}) ${p.title}** — ${Object.entries(p.links).map(([k, v]) => `${k}: ${v}`).join('; ')}; ${PINGS} pings at 10 ms intervals from the client (\`ping -U\`: user-to-user time), an iperf3 of ${Math.ceil(PINGS * 0.01 + 4)} s\n\n`;
    md += '| path | idle RTT p50 / p99 ms | under iperf3 c→s: RTT p50 / p99 ms, lost | iperf3 c→s Mbit/s | under iperf3 s→c: RTT p50 / p99 ms, lost | iperf3 s→c Mbit/s |\n|---|---|---|---|---|---|\n';
    const pr = (x: PingStats): string => `${fmt(x.p50, 2)} / ${fmt(x.p99, 2)}`;
    for (const r of p.rows) {
      md += `| ${r.tunnel} | ${pr(r.idle)}${r.idle.answered < r.idle.sent ? ` (${r.idle.sent - r.idle.answered} lost)` : ''} | `;
      md += r.c2s ? `${pr(r.c2s.ping)}, ${r.c2s.ping.sent - r.c2s.ping.answered} | ${r.c2s.mbps ?? '–'} | ` : '– | – | ';
      md += r.s2c ? `${pr(r.s2c.ping)}, ${r.s2c.ping.sent - r.s2c.ping.answered} | ${r.s2c.mbps ?? '–'} |\n` : '– | – |\n';
    }
    for (const dp of p.rows.filter((r) => r.c2s?.drops !== undefined)) {
      md += `\n${dp.tunnel}: drops during the loaded pings c→s ${JSON.stringify(dp.c2s?.drops ?? {})}, s→c ${JSON.stringify(dp.s2c?.drops ?? {})}.\n`;
    }
    if (Object.keys(p.emulators).length) md += `\n${emulatorLine(p.emulators)}\n`;
  }
  return md;
}

const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function svg(streams: StreamScenario[], pings: PingScenario[], meta: Record<string, string>): string {
  const PW = 500, PH = 330, cols = 2;
  const panels = streams.length + (pings.length ? 1 : 0);
  const rowsN = Math.ceil(panels / cols);
  const W = PW * cols + 20, H = 60 + rowsN * PH + 20;
  let s = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">\n`;
  s += `<rect width="100%" height="100%" fill="white"/>\n`;
  s += `<text x="12" y="20" font-size="14" font-weight="bold">dp-tcp on emulated WAN links: one-way latency tail of a ${PPS}/s UDP stream (client → server, ${SECONDS} s)</text>\n`;
  s += `<text x="12" y="38" fill="#555">${esc(`Fraction of datagrams later than x (lost ones never arrive: each curve ends at its loss). Log–log. ${meta['date']}, ${meta['cpus']}, one run, all methods at once.`)}</text>\n`;
  streams.forEach((sc, k) => {
    const ox = 10 + (k % cols) * PW + 55, oy = 60 + Math.floor(k / cols) * PH + 30, w = PW - 85, h = PH - 130;
    const maxMs = Math.max(100, ...sc.methods.map((m) => m.max ?? 0));
    const decade = 10 ** Math.floor(Math.log10(maxMs));
    const xMax = [1, 2, 5, 10].map((m) => m * decade).find((v) => v >= maxMs)!;
    const xMin = 10;
    const yMin = 10 ** Math.floor(Math.log10(1 / Math.max(...sc.methods.map((m) => m.sent))));
    const lx = (ms: number): number => ox + ((Math.log10(Math.max(ms, xMin)) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * w;
    const ly = (f: number): number => oy + (-Math.log10(Math.max(f, yMin)) / -Math.log10(yMin)) * h;
    s += `<text x="${ox - 45}" y="${oy - 12}" font-weight="bold">${esc(`(${sc.id}) ${sc.title}`)}</text>\n`;
    s += `<rect x="${ox}" y="${oy}" width="${w}" height="${h}" fill="none" stroke="#999"/>\n`;
    for (let d = xMin; d <= xMax; d *= 10) {
      for (const m of [1, 2, 5]) {
        const v = d * m;
        if (v > xMax) break;
        s += `<line x1="${lx(v).toFixed(1)}" y1="${oy}" x2="${lx(v).toFixed(1)}" y2="${oy + h}" stroke="${m === 1 ? '#ddd' : '#f0f0f0'}"/>`;
        s += `<text x="${(lx(v) - 8).toFixed(1)}" y="${oy + h + 13}" fill="#555">${v}</text>\n`;
      }
    }
    s += `<text x="${ox + w / 2 - 40}" y="${oy + h + 27}" fill="#555">one-way latency, ms</text>\n`;
    for (let e = 0; 10 ** -e >= yMin; e++) {
      s += `<line x1="${ox}" y1="${ly(10 ** -e).toFixed(1)}" x2="${ox + w}" y2="${ly(10 ** -e).toFixed(1)}" stroke="#eee"/>`;
      s += `<text x="${ox - 40}" y="${(ly(10 ** -e) + 4).toFixed(1)}" fill="#555">${e === 0 ? '1' : `1e-${e}`}</text>\n`;
    }
    sc.methods.forEach((m, i) => {
      const style = METHODS.find((x) => x.key === m.key)!;
      const pts = m.ccdf.map(([x, y]) => `${lx(x).toFixed(1)},${ly(y).toFixed(1)}`);
      s += `<polyline fill="none" stroke="${style.color}" stroke-width="${style.width}"${style.dash ? ` stroke-dasharray="${style.dash}"` : ''} points="${pts.join(' ')}"/>\n`;
      const lossPct = ((m.sent - m.delivered) / m.sent) * 100;
      const label = `${m.label}: p50 ${fmt(m.p50)}, p99 ${fmt(m.p99)}, max ${fmt(m.max, 0)} ms, ${lossPct === 0 ? 'none lost' : `${lossPct.toFixed(2)} % lost`}`;
      const ly0 = oy + h + 42 + i * 12;
      s += `<line x1="${ox - 45}" y1="${ly0 - 4}" x2="${ox - 25}" y2="${ly0 - 4}" stroke="${style.color}" stroke-width="${style.width}"${style.dash ? ` stroke-dasharray="${style.dash}"` : ''}/>`;
      s += `<text x="${ox - 20}" y="${ly0}" fill="${style.color === '#000000' ? '#333' : style.color}">${esc(label)}</text>\n`;
    });
  });
  if (pings.length) {
    const k = streams.length;
    const ox = 10 + (k % cols) * PW + 175, oy = 60 + Math.floor(k / cols) * PH + 30, w = PW - 200;
    const rows: Array<{ label: string; p: PingStats; color: string }> = [];
    for (const p of pings) {
      for (const r of p.rows) {
        if (!r.c2s) continue;
        const color = r.tunnel.startsWith('dp-tcp') ? '#2ca02c' : '#d62728';
        const short = r.tunnel.startsWith('dp-tcp') ? (r.tunnel.includes('paced') ? 'dp-tcp paced' : 'dp-tcp') : 'OpenVPN';
        rows.push({ label: `${p.id} ${short} idle`, p: r.idle, color });
        rows.push({ label: `${p.id} ${short} load c→s ${r.c2s.mbps ?? '–'} Mb/s`, p: r.c2s.ping, color });
        if (r.s2c) rows.push({ label: `${p.id} ${short} load s→c ${r.s2c.mbps ?? '–'} Mb/s`, p: r.s2c.ping, color });
      }
    }
    const rowH = Math.min(20, (PH - 80) / Math.max(1, rows.length));
    const h = rows.length * rowH;
    const xMin = 0.1, xMax = 10 ** Math.ceil(Math.log10(Math.max(10, ...rows.map((r) => r.p.max ?? 0))));
    const lx = (ms: number): number => ox + ((Math.log10(Math.max(ms, xMin)) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * w;
    s += `<text x="${ox - 165}" y="${oy - 12}" font-weight="bold">${esc(`(d) ping RTT through the tunnel: p50 (dot) to p99 (bar end), max (tick)`)}</text>\n`;
    s += `<rect x="${ox}" y="${oy}" width="${w}" height="${h}" fill="none" stroke="#999"/>\n`;
    for (let d = xMin; d <= xMax + 1e-9; d *= 10) {
      s += `<line x1="${lx(d).toFixed(1)}" y1="${oy}" x2="${lx(d).toFixed(1)}" y2="${oy + h}" stroke="#ddd"/><text x="${(lx(d) - 8).toFixed(1)}" y="${oy + h + 13}" fill="#555">${+d.toPrecision(1)}</text>\n`;
    }
    s += `<text x="${ox + w / 2 - 30}" y="${oy + h + 27}" fill="#555">RTT, ms</text>\n`;
    rows.forEach((r, i) => {
      const y = oy + i * rowH + rowH / 2;
      const lost = r.p.sent - r.p.answered;
      s += `<text x="${ox - 165}" y="${y + 4}" fill="${r.color}">${esc(r.label)}</text>`;
      if (r.p.p50 !== null && r.p.p99 !== null) {
        s += `<line x1="${lx(r.p.p50).toFixed(1)}" y1="${y}" x2="${lx(r.p.p99).toFixed(1)}" y2="${y}" stroke="${r.color}" stroke-width="3"/>`;
        s += `<circle cx="${lx(r.p.p50).toFixed(1)}" cy="${y}" r="3.5" fill="${r.color}"/>`;
        if (r.p.max !== null) s += `<line x1="${lx(r.p.max).toFixed(1)}" y1="${y - 4}" x2="${lx(r.p.max).toFixed(1)}" y2="${y + 4}" stroke="${r.color}"/>`;
      }
      if (lost > 0) s += `<text x="${ox + w + 4}" y="${y + 4}" fill="${r.color}">${lost} lost</text>`;
      s += '\n';
    });
    s += `<text x="${ox - 165}" y="${oy + h + 42}" fill="#555">${esc(pings.map((p) => `${p.id}: ${p.title}`).join('; '))}</text>\n`;
  }
  return s + '</svg>\n';
}

// -------------------------------------------------------------------- main

async function main(): Promise<void> {
  const why = e2eUnavailable() ?? wanUnavailable();
  if (why) {
    console.error(`bench:wan: ${why}`);
    process.exit(1);
  }
  if (missingTools(['openvpn']).length > 0) {
    console.error('bench:wan: openvpn is not installed (apt-get install -y openvpn)');
    process.exit(1);
  }
  wanTools();
  mkdirSync(OUT, { recursive: true });
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    cpus: `${cpus().length} × ${cpus()[0]?.model.trim()}`,
    node: process.version,
    connectionsPerLink: String(CONNECTIONS),
    load: loadavg()
      .map((l) => l.toFixed(2))
      .join(' '),
  };
  const t0 = Date.now();
  const tb = await Testbed.create('wan');
  process.on('SIGINT', () => (tb.destroySync(), process.exit(130)));
  const streams: StreamScenario[] = [];
  const pings: PingScenario[] = [];
  try {
    startOpenVpn(tb, { cipher: 'none', key: await openVpnKey(tb), nodelay: true });
    tb.startDpTcp('server', SERVER_YAML);
    tb.startDpTcp('client', clientYaml());
    await tb.waitUp(2 * CONNECTIONS);
    await waitPing(tb, OPENVPN_SERVER);
    await waitPing(tb, DP_TCP);

    // Jitter held 2 ms: the copies of one datagram (raw, OpenVPN, dp-tcp, sent within a
    // millisecond) see the same link state; drawn per packet, a later copy would get the
    // larger of two or three draws under FIFO (scripts/wanem/wanem.c, --hold).
    const delays = (l1: LinkShape, l2: LinkShape): WanSpec => ({
      1: { delayMs: 25, jitterMs: 5, holdMs: HOLD_MS, ...l1 },
      2: { delayMs: 40, jitterMs: 5, holdMs: HOLD_MS, ...l2 },
    });
    if (ONLY.has('a')) streams.push(await streamScenario(tb, 'a', '25±5 / 40±5 ms, 1 % random loss on each link', delays({ loss: 0.01 }, { loss: 0.01 })));
    if (ONLY.has('b')) streams.push(await streamScenario(tb, 'b', '25±5 / 40±5 ms, 5 % random loss on each link', delays({ loss: 0.05 }, { loss: 0.05 })));
    if (ONLY.has('c'))
      streams.push(
        await streamScenario(tb, 'c', 'bursty loss on link 1 (Gilbert–Elliott per packet), 1 % on link 2', delays({ ge: { p: 0.01, r: 0.25 } }, { loss: 0.01 })),
      );
    if (ONLY.has('c2'))
      streams.push(
        await streamScenario(tb, 'c2', 'link 1 dark for ~50 ms every ~2 s (Gilbert–Elliott in time), 1 % on link 2', delays({ geMs: { goodMs: 2000, badMs: 50 } }, { loss: 0.01 })),
      );
    if (ONLY.has('d') || ONLY.has('d1')) pings.push(await pingScenario(tb, 'd1', 'clean veth links', null));
    if (ONLY.has('d') || ONLY.has('d2')) {
      pings.push(
        await pingScenario(
          tb,
          'd2',
          `WAN links: 25±5 / 40±5 ms, no loss, ${WAN_RATE} Mbit/s each with a 50 ms buffer`,
          delays({ rateMbit: WAN_RATE, limitMs: 50 }, { rateMbit: WAN_RATE, limitMs: 50 }),
          PACE > 0 ? PACE : undefined,
        ),
      );
    }
  } finally {
    await tb.destroy();
  }
  const md = markdown(streams, pings, meta);
  writeFileSync(join(OUT, 'wan.json'), JSON.stringify({ meta, quick: QUICK, seconds: SECONDS, pps: PPS, pings: PINGS, streams, pingScenarios: pings }, null, 1));
  writeFileSync(join(OUT, 'wan.md'), md);
  writeFileSync(join(OUT, 'wan.svg'), svg(streams, pings, meta));
  console.log('\n' + md);
  console.log(`written: ${join(OUT, 'wan.json')}, wan.md, wan.svg (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}

await main();
