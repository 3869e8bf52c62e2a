// The scheduling modes side by side (`npm run bench:modes`), one run, two
// network namespaces joined by two veth links:
//  1. links shaped with tbf (both directions) to 40+40 and 40+20 Mbit/s: one
//     iperf3 TCP stream each way in duplicate, aggregate and adaptive mode —
//     throughput, its share of the sum of the link rates, bytes on the wire per
//     byte delivered, each link's share, the receiver's reorder buffer;
//  2. the WAN scenario of bench:wan (a) — 25±5 / 40±5 ms, 1 % loss on each
//     link, NFQUEUE emulator — with a stream of small datagrams, in duplicate
//     and in adaptive mode, raw links beside each.
// Writes bench/results/modes.json and modes.md. Flags: --seconds N (iperf3, 8),
// --wan-seconds N (30, as bench:wan), --quick (4 and 10), --connections 1,4 (the
// client's connections_per_link in the datagram part: 1, the default, and 4, as
// in the README's bench:wan figures; each count is a pair of streams).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { CLIENT_YAML, ROOT, SERVER_YAML, Testbed, e2eUnavailable, waitFor } from '../test/helpers/netns.js';
import { probe, streamStats, wanUnavailable, WanLinks, type WanCounters } from '../test/helpers/wan.js';

const OUT = join(ROOT, 'bench', 'results');
const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = argv.includes('--quick');
const SECONDS = Number(flag('--seconds') ?? (QUICK ? 4 : 8));
const WAN_SECONDS = Number(flag('--wan-seconds') ?? (QUICK ? 10 : 30));
const CONNECTIONS = (flag('--connections') ?? '1,4').split(',').map(Number);
const ALL_MODES = ['duplicate', 'aggregate', 'adaptive'] as const;
type Mode = (typeof ALL_MODES)[number];
/** --modes a,b and --shapes 40+40,40+20 choose a part; --no-wan skips the datagram part. */
const MODES = (flag('--modes')?.split(',') ?? ALL_MODES) as readonly Mode[];
const SHAPES = (flag('--shapes') ?? '40+40,40+20').split(',').map((s) => s.split('+').map(Number) as [number, number]);
const NO_WAN = argv.includes('--no-wan');
/** --no-streams: the datagram part alone. */
const NO_STREAMS = argv.includes('--no-streams');
/** A part only: printed, not written over the full results. */
const PARTIAL = flag('--modes') !== undefined || flag('--shapes') !== undefined || NO_WAN || NO_STREAMS;
const PORT = 5241;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface LinkView {
  id: number;
  name: string;
  state: string;
  txBytes: number;
  stalls: number;
  reclaimed: number;
}
interface SessionView {
  id: string;
  mode: string;
  reorder: { waited: number; releasedPast: number; late: number; boundMs: number } | null;
  resentPackets: number;
  duplicatedPackets: number;
  stripedPackets: number;
  duplicatedBytes: number;
  degradedEntered: number;
  degradedReason: string;
  links: LinkView[];
}
interface Snapshot {
  time: string;
  sessions: SessionView[];
}

interface StreamRow {
  mode: Mode;
  shape: string;
  direction: 'c→s' | 's→c';
  mbps: number;
  ofSum: number;
  wirePerByte: number;
  shares: number[];
  reorder: { waited: number; releasedPast: number; late: number; boundMs: number } | null;
  resent: number;
  /** The inner TCP's retransmissions (iperf3's sender): reordering past the reorder buffer shows here. */
  tcpRetransmits: number | null;
  /** Packets sent on one link (striped) and on every link (adaptive: small packets, sparse flows, degraded spells). */
  striped: number;
  onEveryLink: number;
  /** Stalls and reclaimed packets over the sender's links. */
  stalls: number;
  reclaimed: number;
  /** Adaptive: times the sender went degraded (duplicating everything) during the stream, and the last reason. */
  degraded: string;
}

/** The sending side's session counters over one datagram stream (client, c→s). */
interface WanSender {
  mode: Mode;
  connections: number;
  striped: number;
  onEveryLink: number;
  resent: number;
  stalls: number;
  degraded: string;
  /** The emulators over the stream: what they dropped, and how many packets they released more than 1 ms late (machine load). */
  emulators: string;
}

interface WanRow {
  mode: Mode;
  connections: number;
  method: string;
  delivered: number;
  sent: number;
  duplicates: number | null;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

let tb: Testbed;

async function snapshot(side: 'client' | 'server'): Promise<SessionView> {
  const s = await tb.freshStats<Snapshot>(side, (snap) => snap.sessions.length === 1);
  return s.sessions[0] as SessionView;
}

async function shape(r1: number, r2: number): Promise<void> {
  for (const [n, rate] of [[1, r1], [2, r2]] as const) {
    for (const side of ['server', 'client'] as const) {
      await tb.run(side, 'tc', ['qdisc', 'replace', 'dev', `link${n}-${side === 'server' ? 's' : 'c'}`, 'root', 'tbf', 'rate', `${rate}mbit`, 'burst', '64kb', 'latency', '40ms']);
    }
  }
}

async function unshape(): Promise<void> {
  for (const n of [1, 2]) {
    for (const side of ['server', 'client'] as const) await tb.run(side, 'tc', ['qdisc', 'del', 'dev', `link${n}-${side === 'server' ? 's' : 'c'}`, 'root']).catch(() => undefined);
  }
}

/** A fresh client session in `mode`, both links up on both sides. */
async function useMode(mode: Mode, connections = 1): Promise<void> {
  await tb.stopDpTcp('client');
  tb.startDpTcp('client', CLIENT_YAML.replace(/^client:\n/m, `client:\n  mode: ${mode}\n${connections > 1 ? `  connections_per_link: ${connections}\n` : ''}`));
  await waitFor(
    () => {
      try {
        const c = (JSON.parse(readFileSync(tb.statsFile('client'), 'utf8')) as Snapshot).sessions;
        const s = (JSON.parse(readFileSync(tb.statsFile('server'), 'utf8')) as Snapshot).sessions;
        const up = (x: SessionView): boolean => x.links.filter((l) => l.state === 'up').length === 2 * connections;
        return c.length === 1 && s.length === 1 && c[0]!.id === s[0]!.id && s[0]!.mode === mode && up(c[0]!) && up(s[0]!);
      } catch {
        return false;
      }
    },
    `the client in ${mode} mode with both links up`,
    20_000,
  );
  await sleep(500);
}

/** iperf3's throughput, the bytes it delivered, and the sender's TCP retransmissions (inside the tunnel; null if not reported). */
async function iperf(reverse: boolean): Promise<{ mbps: number; bytes: number; retransmits: number | null }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await tb.run('client', 'iperf3', ['-c', '10.0.0.1', '-p', String(PORT), '-t', String(SECONDS), '-J', ...(reverse ? ['-R'] : [])], (SECONDS + 30) * 1000);
      const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number; bytes: number }; sum_sent?: { retransmits?: number } } };
      return { mbps: j.end.sum_received.bits_per_second / 1e6, bytes: j.end.sum_received.bytes, retransmits: j.end.sum_sent?.retransmits ?? null };
    } catch (e) {
      if (attempt >= 3) throw e;
      await sleep(1000);
    }
  }
}

const sumLinks = (s: SessionView, k: 'stalls' | 'reclaimed'): number => s.links.reduce((n, l) => n + (l[k] ?? 0), 0);

async function stream(mode: Mode, r1: number, r2: number, reverse: boolean): Promise<StreamRow> {
  const sender = reverse ? 'server' : 'client';
  const receiver = reverse ? 'client' : 'server';
  const before = await snapshot(sender);
  const beforeRx = await snapshot(receiver);
  const { mbps, bytes, retransmits } = await iperf(reverse);
  const after = await snapshot(sender);
  const rx = await snapshot(receiver);
  const delta = after.links
    .slice()
    .sort((a, b) => a.id - b.id)
    .map((l) => l.txBytes - (before.links.find((x) => x.id === l.id)?.txBytes ?? 0));
  const wire = delta.reduce((a, b) => a + b, 0);
  const r = rx.reorder;
  const r0 = beforeRx.reorder;
  const row: StreamRow = {
    mode,
    shape: `${r1}+${r2}`,
    direction: reverse ? 's→c' : 'c→s',
    mbps: Math.round(mbps * 10) / 10,
    ofSum: Math.round((100 * mbps) / (r1 + r2)),
    wirePerByte: Math.round((wire / Math.max(1, bytes)) * 100) / 100,
    shares: delta.map((d) => Math.round((100 * d) / Math.max(1, wire))),
    reorder:
      r === null || r0 === null
        ? null
        : { waited: r.waited - r0.waited, releasedPast: r.releasedPast - r0.releasedPast, late: r.late - r0.late, boundMs: r.boundMs },
    resent: after.resentPackets - before.resentPackets,
    tcpRetransmits: retransmits,
    striped: after.stripedPackets - before.stripedPackets,
    onEveryLink: after.duplicatedPackets - before.duplicatedPackets,
    stalls: sumLinks(after, 'stalls') - sumLinks(before, 'stalls'),
    reclaimed: sumLinks(after, 'reclaimed') - sumLinks(before, 'reclaimed'),
    degraded: mode === 'adaptive' ? `${after.degradedEntered - before.degradedEntered}${after.degradedEntered > before.degradedEntered ? ` (${after.degradedReason})` : ''}` : '–',
  };
  console.log(
    `   ${mode.padEnd(9)} ${row.shape} ${row.direction}: ${row.mbps} Mbit/s (${row.ofSum} % of ${r1 + r2}), wire/delivered ${row.wirePerByte}, ` +
      `link shares ${row.shares.join('/')} %, striped ${row.striped}, on every link ${row.onEveryLink}, resent ${row.resent}, stalls ${row.stalls}, inner TCP retransmits ${row.tcpRetransmits ?? '–'}, reclaimed ${row.reclaimed}, degraded ${row.degraded}, reorder ${row.reorder ? `waited ${row.reorder.waited}, released past ${row.reorder.releasedPast}, late ${row.reorder.late}, bound ${row.reorder.boundMs} ms` : '–'}`,
  );
  return row;
}

async function wan(mode: Mode, connections: number): Promise<{ rows: WanRow[]; sender: WanSender }> {
  console.log(` - ${mode}, ${connections} connection${connections > 1 ? 's' : ''} per link`);
  await useMode(mode, connections);
  // Jitter held 2 ms, as in bench:wan: the raw and tunnel copies of a datagram see the same link state.
  const links = await WanLinks.apply(tb, {
    1: { delayMs: 25, jitterMs: 5, holdMs: 2, loss: 0.01 },
    2: { delayMs: 40, jitterMs: 5, holdMs: 2, loss: 0.01 },
  });
  let rows: WanRow[];
  let sender: WanSender;
  try {
    await sleep(2000);
    const before = await snapshot('client');
    const r = await probe({ sendNs: tb.ns('client'), recvNs: tb.ns('server'), dests: ['10.0.1.1', '10.0.2.1', '10.0.0.1'], pps: 200, seconds: WAN_SECONDS, graceMs: 3000 });
    const methods: Array<[string, number[]]> = [
      ['raw UDP, link 1', [0]],
      ['raw UDP, link 2', [1]],
      ['floor', [0, 1]],
      [`dp-tcp, ${mode}`, [2]],
    ];
    rows = methods.map(([method, idx]) => {
      const s = streamStats(r, ...idx);
      return { mode, connections, method, delivered: s.delivered, sent: s.sent, duplicates: idx.length === 1 ? s.duplicates : null, p50: s.p50, p99: s.p99, max: s.max };
    });
    const after = await snapshot('client');
    sender = {
      mode,
      connections,
      striped: after.stripedPackets - before.stripedPackets,
      onEveryLink: after.duplicatedPackets - before.duplicatedPackets,
      resent: after.resentPackets - before.resentPackets,
      stalls: sumLinks(after, 'stalls') - sumLinks(before, 'stalls'),
      degraded: `${after.degradedEntered - before.degradedEntered}${after.degradedEntered > before.degradedEntered ? ` (${after.degradedReason})` : ''}`,
      emulators: '',
    };
  } catch (e) {
    await links.stop().catch(() => undefined);
    throw e;
  }
  sender.emulators = emulatorSummary(await links.stop());
  for (const w of rows) {
    console.log(`   ${w.method.padEnd(20)} delivered ${w.delivered}/${w.sent}, dup ${w.duplicates ?? '–'}, p50 ${w.p50?.toFixed(2)} p99 ${w.p99?.toFixed(2)} max ${w.max?.toFixed(1)} ms`);
  }
  console.log(`   client (sender): striped ${sender.striped}, on every link ${sender.onEveryLink}, resent ${sender.resent}, stalls ${sender.stalls}, degraded ${sender.degraded}`);
  console.log(`   emulators: ${sender.emulators}`);
  return { rows, sender };
}

function emulatorSummary(em: Record<string, WanCounters>): string {
  const e = Object.values(em);
  const sum = (k: keyof WanCounters): number => e.reduce((n, c) => n + c[k], 0);
  const dropped = sum('lost_random') + sum('lost_burst') + sum('dropped_rate');
  const late = sum('late_over_1ms');
  return (
    `dropped ${((100 * dropped) / Math.max(1, sum('packets'))).toFixed(2)} % of all packets, ` +
    `${late} of ${sum('accepted')} released more than 1 ms late (the latest by ${(Math.max(0, ...e.map((c) => c.late_us_max)) / 1000).toFixed(1)} ms)`
  );
}

const f1 = (v: number | null): string => (v === null ? '–' : v.toFixed(1));

function markdown(streams: StreamRow[], wanRows: WanRow[], senders: WanSender[], meta: Record<string, string>): string {
  let md =
    `Measured ${meta['date']} on ${meta['cpus']}, Node ${meta['node']}, load average ${meta['load']} at the start (\`npm run bench:modes${argv.length ? ` -- ${argv.join(' ')}` : ''}\`). ` +
    (streams.length
      ? `Links shaped with tbf (rate, burst 64 kB, latency 40 ms) on both ends of both veths; one iperf3 TCP stream for ${SECONDS} s. ` +
        `"wire/delivered": bytes the sender's links sent (framing and copies included) per byte iperf3 delivered; ` +
        `packets are the TUN's (with offloads, TCP segments of up to 64 KiB); reorder counters are the receiver's.\n\n`
      : '\n');
  if (streams.length) md += '| links Mbit/s | direction | mode | Mbit/s | % of the sum | wire/delivered | link shares % | packets striped / on every link | reorder: waited / released past / late | stalls | resent | inner TCP retransmits | degraded |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n';
  for (const r of streams) {
    const ro = r.reorder ? `${r.reorder.waited} / ${r.reorder.releasedPast} / ${r.reorder.late}` : '–';
    const how = r.mode === 'duplicate' ? '–' : `${r.striped} / ${r.onEveryLink}`;
    md += `| ${r.shape} | ${r.direction} | ${r.mode} | ${r.mbps} | ${r.ofSum} | ${r.wirePerByte} | ${r.shares.join(' / ')} | ${how} | ${ro} | ${r.mode === 'duplicate' ? '–' : r.stalls} | ${r.resent} | ${r.tcpRetransmits ?? '–'} | ${r.degraded} |\n`;
  }
  if (wanRows.length === 0) return md;
  md += `\nSmall datagrams (200 bytes, 200/s, one-way, client → server, ${WAN_SECONDS} s) on 25±5 / 40±5 ms links with 1 % random loss each (bench:wan (a), the NFQUEUE emulator; "conns": the client's connections_per_link), each mode with the raw links beside it, one stream after the other:\n\n`;
  md += '| conns | mode | method | delivered | duplicates | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|\n';
  for (const w of wanRows) md += `| ${w.connections} | ${w.mode} | ${w.method} | ${w.delivered}/${w.sent} | ${w.duplicates ?? '–'} | ${f1(w.p50)} | ${f1(w.p99)} | ${f1(w.max)} |\n`;
  md +=
    '\nThe client (sender) over each stream: ' +
    senders.map((x) => `${x.mode} (${x.connections} conns): striped ${x.striped}, on every link ${x.onEveryLink}, resent ${x.resent}, stalls ${x.stalls}, degraded ${x.degraded}`).join('; ') +
    '. Emulators (all packets on both links, machine load): ' +
    senders.map((x) => `${x.mode} (${x.connections} conns): ${x.emulators}`).join('; ') +
    '.\n';
  return md;
}

async function main(): Promise<void> {
  const why = e2eUnavailable() ?? wanUnavailable();
  if (why) {
    console.error(`bench:modes: ${why}`);
    process.exit(1);
  }
  mkdirSync(OUT, { recursive: true });
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    cpus: `${cpus().length} × ${cpus()[0]?.model.trim()}`,
    node: process.version,
    load: loadavg()
      .map((l) => l.toFixed(2))
      .join(' '),
  };
  const t0 = Date.now();
  tb = await Testbed.create('bmod');
  process.on('SIGINT', () => (tb.destroySync(), process.exit(130)));
  const streams: StreamRow[] = [];
  const wanRows: WanRow[] = [];
  const senders: WanSender[] = [];
  try {
    tb.startDpTcp('server', SERVER_YAML);
    for (const [r1, r2] of NO_STREAMS ? [] : SHAPES) {
      console.log(`== links ${r1} + ${r2} Mbit/s`);
      await shape(r1, r2);
      for (const mode of MODES) {
        await useMode(mode);
        if (streams.length === 0) tb.spawn('server', 'iperf3', ['-s', '-B', '10.0.0.1', '-p', String(PORT)]);
        await sleep(500);
        streams.push(await stream(mode, r1, r2, false));
        streams.push(await stream(mode, r1, r2, true));
      }
    }
    await unshape();
    if (!NO_WAN) {
      console.log('== small datagrams, 25±5 / 40±5 ms, 1 % loss on each link');
      for (const connections of CONNECTIONS) {
        for (const mode of ['duplicate', 'adaptive'] as const) {
          const w = await wan(mode, connections);
          wanRows.push(...w.rows);
          senders.push(w.sender);
        }
      }
    }
  } finally {
    await tb.destroy();
  }
  const md = markdown(streams, wanRows, senders, meta);
  if (PARTIAL) {
    console.log('\n' + md + '\n(a part of the benchmark: bench/results/ left as it was)');
    return;
  }
  writeFileSync(join(OUT, 'modes.json'), JSON.stringify({ meta, seconds: SECONDS, wanSeconds: WAN_SECONDS, connectionsPerLink: CONNECTIONS, streams, wan: wanRows, wanSenders: senders }, null, 1));
  writeFileSync(join(OUT, 'modes.md'), md);
  console.log('\n' + md);
  console.log(`written: ${join(OUT, 'modes.json')}, modes.md (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}

await main();
