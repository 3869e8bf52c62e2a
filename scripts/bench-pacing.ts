// Paced links under load (`npm run bench:pacing`), one run, two network
// namespaces joined by two veth links shaped with tbf (both ends, rate R,
// burst 64 kB, latency 40 ms): one iperf3 TCP stream client -> server through
// the tunnel, and beside it pings every 100 ms through the tunnel and over the
// raw link 1. Variants, interleaved round after round: dp-tcp with
// upload_mbit/download_mbit at 90 % of R (paced), the same with the paced
// socket's unsent data left to TCP_NOTSENT_LOWAT alone
// (DPTCP_PACED_UNSENT_CAP=0), and not paced. Prints one line per run.
// Flags: --rate MBIT (10), --seconds N (8), --rounds N (2), --variants a,b,c.
import { readFileSync } from 'node:fs';
import { CLIENT_YAML, e2eUnavailable, SERVER_YAML, Testbed } from '../test/helpers/netns.js';

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const RATE = Number(flag('--rate') ?? 10);
const PACE = Math.round(RATE * 9) / 10;
const SECONDS = Number(flag('--seconds') ?? 8);
const ROUNDS = Number(flag('--rounds') ?? 2);
const VARIANTS = (flag('--variants') ?? 'paced,paced-lowat-only,unpaced').split(',');
const PORT = 5251;

interface LinkView {
  name: string;
  urgentPassed: number;
  drops: Record<string, number>;
}

function quantiles(text: string): { p50: number; p99: number; n: number } {
  const v = [...text.matchAll(/time=([0-9.]+)/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  const q = (x: number): number => v[Math.min(v.length - 1, Math.floor(v.length * x))] ?? NaN;
  return { p50: q(0.5), p99: q(0.99), n: v.length };
}

const why = e2eUnavailable();
if (why) {
  console.error(`bench:pacing: ${why}`);
  process.exit(1);
}
const tb = await Testbed.create('pace');
try {
  for (const n of [1, 2]) {
    for (const side of ['server', 'client'] as const) {
      await tb.run(side, 'tc', ['qdisc', 'replace', 'dev', `link${n}-${side === 'server' ? 's' : 'c'}`, 'root', 'tbf', 'rate', `${RATE}mbit`, 'burst', '64kb', 'latency', '40ms']);
    }
  }
  tb.spawn('server', 'iperf3', ['-s', '-p', String(PORT)]);
  console.log(`links shaped to ${RATE} Mbit/s (tbf, both ends); paced variants at ${PACE}; ${SECONDS} s iperf3 c->s; pings every 100 ms; RTTs in ms`);
  console.log('variant | Mbit/s | tunnel ping p50 / p99 | raw link ping p50 / p99 | iperf3 TCP RTT mean | urgent passed | link drops');
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of VARIANTS) {
      const paced = variant.startsWith('paced');
      const env = process.env['DPTCP_PACED_UNSENT_CAP'];
      process.env['DPTCP_PACED_UNSENT_CAP'] = variant === 'paced-lowat-only' ? '0' : '1';
      tb.startDpTcp('server', SERVER_YAML);
      tb.startDpTcp('client', paced ? CLIENT_YAML.replace(/local: (10\.0\.[12]\.2) }/g, `local: $1, upload_mbit: ${PACE}, download_mbit: ${PACE} }`) : CLIENT_YAML);
      if (env === undefined) delete process.env['DPTCP_PACED_UNSENT_CAP'];
      else process.env['DPTCP_PACED_UNSENT_CAP'] = env;
      try {
        await tb.waitUp(2, 20_000);
        await new Promise((r) => setTimeout(r, 500));
        const count = String(Math.max(10, SECONDS * 10 - 20));
        const tunnel = tb.run('client', 'ping', ['-c', count, '-i', '0.1', '-W', '2', '10.0.0.1'], 120_000);
        const raw = tb.run('client', 'ping', ['-c', count, '-i', '0.1', '-W', '2', '10.0.1.1'], 120_000);
        const out = await tb.run('client', 'iperf3', ['-c', '10.0.0.1', '-p', String(PORT), '-t', String(SECONDS), '-J'], (SECONDS + 60) * 1000);
        const j = JSON.parse(out.stdout) as { end: { sum_received: { bits_per_second: number }; streams: { sender: { mean_rtt: number } }[] } };
        const t = quantiles((await tunnel).stdout);
        const r = quantiles((await raw).stdout);
        const links = (JSON.parse(readFileSync(tb.statsFile('client'), 'utf8')) as { sessions: { links: LinkView[] }[] }).sessions[0]?.links ?? [];
        const drops = links.map((l) => `${l.name} ${Object.entries(l.drops).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`).join('; ');
        console.log(
          `${variant} | ${(j.end.sum_received.bits_per_second / 1e6).toFixed(1)} | ${t.p50} / ${t.p99} (${t.n} answered) | ${r.p50} / ${r.p99} | ${((j.end.streams[0]?.sender.mean_rtt ?? NaN) / 1000).toFixed(1)} | ${links.reduce((n, l) => n + l.urgentPassed, 0)} | ${drops}`,
        );
      } finally {
        await tb.stopDpTcp('client');
        await tb.stopDpTcp('server');
      }
    }
  }
} finally {
  await tb.destroy();
}
