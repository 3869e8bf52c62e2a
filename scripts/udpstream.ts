// A UDP stream with sequence numbers and send timestamps, to see what a tunnel
// does to it: what was lost, duplicated, and how late it came.
//   udpstream send HOST PORT --pps 1000 --seconds 10 [--size 200]
//   udpstream recv ADDR PORT --out result.json     (writes the summary on SIGTERM/SIGINT)
// Timestamps are CLOCK_MONOTONIC (process.hrtime), shared by every process on
// the machine, so one-way latency is exact when both ends run on one host.
import { createSocket } from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';

const HEADER = 16; // seq u64, send time ns u64

function usage(): never {
  process.stderr.write('usage: udpstream send HOST PORT [--pps N] [--seconds S] [--size B]\n       udpstream recv ADDR PORT --out FILE\n');
  process.exit(2);
}

function opt(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v <= 0) usage();
  return v;
}

const nowNs = (): bigint => process.hrtime.bigint();

async function send(host: string, port: number, args: string[]): Promise<void> {
  const pps = opt(args, 'pps', 1000);
  const seconds = opt(args, 'seconds', 5);
  const size = Math.max(HEADER, opt(args, 'size', 200));
  const total = Math.round(pps * seconds);
  const sock = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  await new Promise<void>((r) => sock.connect(port, host, () => r()));
  const t0 = Date.now();
  let seq = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((Date.now() - t0) * pps) / 1000));
      while (seq < due) {
        seq++;
        // A buffer of its own: a send the socket queues keeps a reference to it.
        const buf = Buffer.alloc(size);
        buf.writeBigUInt64BE(BigInt(seq), 0);
        buf.writeBigUInt64BE(nowNs(), 8);
        sock.send(buf);
      }
      if (seq >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await new Promise((r) => setTimeout(r, 50));
  sock.close();
  process.stdout.write(JSON.stringify({ sent: total }) + '\n');
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function recv(addr: string, port: number, args: string[]): void {
  const i = args.indexOf('--out');
  const out = i >= 0 ? args[i + 1] : undefined;
  if (!out) usage();
  const seen = new Set<number>();
  const latencyMs: number[] = [];
  let duplicates = 0;
  let maxSeq = 0;
  let reordered = 0;
  const sock = createSocket(isIPv6(addr) ? 'udp6' : 'udp4');
  sock.on('message', (m) => {
    if (m.length < HEADER) return;
    const seq = Number(m.readBigUInt64BE(0));
    const lat = Number(nowNs() - m.readBigUInt64BE(8)) / 1e6;
    if (seen.has(seq)) {
      duplicates++;
      return;
    }
    seen.add(seq);
    if (seq < maxSeq) reordered++;
    else maxSeq = seq;
    latencyMs.push(lat);
  });
  sock.bind(port, addr);
  const finish = (): void => {
    const sorted = [...latencyMs].sort((a, b) => a - b);
    let missing = 0;
    for (let s = 1; s <= maxSeq; s++) if (!seen.has(s)) missing++;
    const summary = {
      received: seen.size,
      maxSeq,
      missing,
      duplicates,
      reordered,
      latencyMs: {
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        max: sorted.length ? sorted[sorted.length - 1] : null,
        /** Latency at every percent, 0..100: the CDF. */
        cdf: Array.from({ length: 101 }, (_, p) => percentile(sorted, p)),
      },
    };
    writeFileSync(out, JSON.stringify(summary));
    sock.close();
    process.exit(0);
  };
  process.on('SIGTERM', finish);
  process.on('SIGINT', finish);
}

const [mode, host, portText, ...rest] = process.argv.slice(2);
const port = Number(portText);
if (!host || !Number.isInteger(port) || port < 1 || port > 65535) usage();
if (mode === 'send') await send(host, port, rest);
else if (mode === 'recv') recv(host, port, rest);
else usage();
