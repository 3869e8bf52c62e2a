// Root end-to-end: the scheduling modes (docs/protocol.md "Scheduling modes")
// with the real binary on links shaped by tbf (both directions of both veths),
// as ../shared/acceptance/modes.sh shapes them. One testbed; the client is
// restarted with a new config for each mode (a mode change is a new session).
//  - duplicate (no `mode:` key) is still the default: no reorder buffer;
//  - aggregate: one TCP stream gets clearly more than the fastest link alone
//    could carry (40+40 and 40+20 Mbit/s), and a transfer survives a link that
//    dies for good in its middle, byte for byte, its unacknowledged data resent
//    on the other link;
//  - adaptive: the same on 40+40, and a stream of small datagrams loses
//    nothing and gets no duplicate while link 1 is blackholed for 2 s.
// The issue's speed goal (85 % of the sum) is a benchmark's: `npm run
// bench:modes` measures it; on this shared 2-core machine a timed test holds
// only what no correct striping can miss.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLIENT_YAML, SERVER_YAML, skipReason, Testbed, waitFor, type Side, type StreamSummary } from '../helpers/netns.js';

const skip = skipReason();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const IPERF_PORT = 5231;
/** The issue's goal (bench:modes): one TCP stream gets this share of the sum of the link rates. */
const GOAL = 0.85;
/** What the tests hold: 70 % of the sum, and 10 % more than the fastest link alone. */
const striping = (links: number[]): number => Math.max(0.7 * links.reduce((a, b) => a + b, 0), 1.1 * Math.max(...links));

type Mode = 'duplicate' | 'aggregate' | 'adaptive';

/** What status says of the modes (the stats file is `dp-tcp status --json` plus a time). */
interface ModeLink {
  id: number;
  name: string;
  state: string;
  txBytes: number;
  stalls: number;
  reclaimed: number;
  drops: Record<string, number>;
}
interface ModeSession {
  id: string;
  mode: string;
  reorder: { waiting: number; waited: number; releasedPast: number; late: number; boundMs: number } | null;
  stripedPackets: number;
  duplicatedPackets: number;
  duplicatedBytes: number;
  resentPackets: number;
  degradedEntered: number;
  degradedReason: string;
  elimination: { accepted: number; duplicates: number; stale: number };
  links: ModeLink[];
}
interface ModeSnapshot {
  time: string;
  sessions: ModeSession[];
}

/** The client config with `mode:` under `client:`, or without the key (the default). */
function clientYaml(mode: Mode | undefined): string {
  return mode === undefined ? CLIENT_YAML : CLIENT_YAML.replace(/^client:\n/m, `client:\n  mode: ${mode}\n`);
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

describe('scheduling modes on tbf-shaped links', { skip, timeout: 300_000 }, () => {
  let tb: Testbed;
  let clientMode: Mode | undefined | null = null; // null: no client running yet

  /** A stats snapshot written after this call (the file is rewritten every second). */
  function fresh(side: Side, timeoutMs = 5000): Promise<ModeSnapshot> {
    return tb.freshStats<ModeSnapshot>(side, undefined, timeoutMs);
  }

  function session(snap: ModeSnapshot, side: Side): ModeSession {
    assert.equal(snap.sessions.length, 1, `the ${side} has one session (it has ${snap.sessions.length})`);
    return snap.sessions[0] as ModeSession;
  }

  /** Shapes link 1 to r1 and link 2 to r2 Mbit/s, both directions. */
  async function shape(r1: number, r2: number): Promise<void> {
    for (const [n, rate] of [[1, r1], [2, r2]] as const) {
      for (const side of ['server', 'client'] as const) {
        const dev = `link${n}-${side === 'server' ? 's' : 'c'}`;
        await tb.run(side, 'tc', ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${rate}mbit`, 'burst', '64kb', 'latency', '40ms']);
      }
    }
  }

  /**
   * Runs the client in `mode` (restarting it if it runs another mode, or
   * always with `restart`: a new session, so one measurement does not inherit
   * the last one's state) and waits until the server's one session is the
   * client's, in that mode, with both links up: the server's stats file
   * outlives a client restart, so its old session must not pass for the new one.
   */
  async function useMode(mode: Mode | undefined, restart = false): Promise<void> {
    if (!restart && clientMode === mode && tb.alive('client')) return;
    await tb.stopDpTcp('client');
    tb.startDpTcp('client', clientYaml(mode));
    clientMode = mode;
    const want = mode ?? 'duplicate';
    const up = (s: ModeSession): boolean => s.links.filter((l) => l.state === 'up').length === 2;
    let detail = '';
    await waitFor(
      () => {
        try {
          const c = JSON.parse(readFileSync(tb.statsFile('client'), 'utf8')) as ModeSnapshot;
          const s = JSON.parse(readFileSync(tb.statsFile('server'), 'utf8')) as ModeSnapshot;
          const cs = c.sessions[0];
          const ss = s.sessions[0];
          detail = `client ${JSON.stringify(c.sessions.map((x) => [x.id.slice(0, 8), x.mode]))} server ${JSON.stringify(s.sessions.map((x) => [x.id.slice(0, 8), x.mode]))}`;
          return c.sessions.length === 1 && s.sessions.length === 1 && cs!.id === ss!.id && ss!.mode === want && up(cs!) && up(ss!);
        } catch {
          return false;
        }
      },
      `the client in ${want} mode with both links up on both sides`,
      15_000,
      () => `${detail}\n--- server log\n${tb.log('server').slice(-3000)}\n--- client log\n${tb.log('client').slice(-3000)}`,
    );
  }

  /** One iperf3 TCP stream client -> server through the tunnel: Mbit/s received. */
  async function iperf(seconds: number): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await tb.run('client', 'iperf3', ['-c', '10.0.0.1', '-p', String(IPERF_PORT), '-t', String(seconds), '-J'], (seconds + 20) * 1000);
        const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
        return j.end.sum_received.bits_per_second / 1e6;
      } catch (e) {
        // A refused start (the iperf3 server still busy with the last test) is retried, as modes.sh does.
        if (attempt >= 3) throw e;
        await sleep(1000);
      }
    }
  }

  /**
   * The share of the client's bytes each link sent between two snapshots,
   * in link id order, in percent.
   */
  function shares(before: ModeSession, afterS: ModeSession): number[] {
    const delta = afterS.links
      .slice()
      .sort((a, b) => a.id - b.id)
      .map((l) => l.txBytes - (before.links.find((x) => x.id === l.id)?.txBytes ?? 0));
    const total = delta.reduce((a, b) => a + b, 0);
    return delta.map((d) => (total === 0 ? 0 : (100 * d) / total));
  }

  function reorderLine(s: ModeSession): string {
    const r = s.reorder;
    return r === null ? 'none' : `waited ${r.waited}, released past ${r.releasedPast}, late ${r.late}, bound ${r.boundMs} ms`;
  }

  /** A throughput run: the stream, the links' shares and the counters, printed. */
  async function throughput(label: string, sumMbit: number): Promise<{ mbps: number; share: number[]; client: ModeSession; server: ModeSession }> {
    const c0 = session(await fresh('client'), 'client');
    const mbps = await iperf(5);
    const client = session(await fresh('client'), 'client');
    const server = session(await fresh('server'), 'server');
    const share = shares(c0, client);
    console.log(
      `# ${label}: ${mbps.toFixed(1)} Mbit/s of ${sumMbit} (${((100 * mbps) / sumMbit).toFixed(0)} %, bench goal ${GOAL * 100} %); ` +
        `client link shares ${share.map((s) => `${s.toFixed(0)} %`).join(' / ')}; striped ${client.stripedPackets - c0.stripedPackets}, ` +
        `duplicated ${client.duplicatedPackets - c0.duplicatedPackets}, resent ${client.resentPackets - c0.resentPackets}, ` +
        `degraded ${client.degradedEntered - c0.degradedEntered}×${client.degradedEntered > c0.degradedEntered ? ` (last: ${client.degradedReason})` : ''}, stalls ${client.links.map((l) => l.stalls).join('/')}, ` +
        `drops ${client.links.map((l) => JSON.stringify(l.drops)).join(' / ')}; server reorder: ${reorderLine(server)}`,
    );
    return { mbps, share, client, server };
  }

  before(async () => {
    tb = await Testbed.create('mod');
    tb.startDpTcp('server', SERVER_YAML);
    await shape(40, 40);
    await useMode(undefined);
    // The server's TUN address exists now: one iperf3 server for every stream (killed by destroy).
    tb.spawn('server', 'iperf3', ['-s', '-B', '10.0.0.1', '-p', String(IPERF_PORT)]);
    await tb.listening('server', 'tcp', IPERF_PORT);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('duplicate is the default: no mode key, status says duplicate and has no reorder buffer', async () => {
    await useMode(undefined);
    for (const side of ['client', 'server'] as const) {
      const s = session(await fresh(side), side);
      assert.equal(s.mode, 'duplicate', `the ${side} session is in duplicate mode`);
      assert.equal(s.reorder, null, `the ${side} session has no reorder buffer`);
      assert.equal(s.stripedPackets, 0, `the ${side} striped nothing`);
    }
  });

  it(`aggregate on 40+40 Mbit/s: one TCP stream >= ${striping([40, 40])} Mbit/s, both links carry a share`, async () => {
    await shape(40, 40);
    await useMode('aggregate');
    const { mbps, share, client, server } = await throughput('aggregate 40+40', 80);
    assert.equal(client.mode, 'aggregate', 'the client session is in aggregate mode');
    assert.equal(server.mode, 'aggregate', 'the server took the mode from the handshake');
    assert.notEqual(server.reorder, null, 'the server has a reorder buffer');
    assert.ok(client.stripedPackets > 0, `the client striped (${client.stripedPackets} packets)`);
    assert.ok(mbps >= striping([40, 40]), `${mbps.toFixed(1)} Mbit/s >= ${striping([40, 40])} (link shares ${share.map((x) => x.toFixed(0)).join(' / ')} %)`);
    for (const [i, s] of share.entries()) assert.ok(s >= 25, `link ${i + 1} sent ${s.toFixed(1)} % of the bytes (>= 25 %)`);
  });

  it(`aggregate on 40+20 Mbit/s: one TCP stream >= ${striping([40, 20])} Mbit/s`, async () => {
    await shape(40, 20);
    await useMode('aggregate', true);
    try {
      const { mbps, share } = await throughput('aggregate 40+20', 60);
      assert.ok(mbps >= striping([40, 20]), `${mbps.toFixed(1)} Mbit/s >= ${striping([40, 20])} (link shares ${share.map((x) => x.toFixed(0)).join(' / ')} %)`);
      assert.ok(share[1]! > 10, `the slower link carried a share too (${share[1]!.toFixed(1)} %)`);
    } finally {
      await shape(40, 40);
    }
  });

  it('aggregate: link 1 dies for good mid-transfer; 24 MB arrive byte for byte, its unacknowledged data resent on link 2', async () => {
    await shape(40, 40);
    await useMode('aggregate');
    const file = join(tb.dir, 'aggregate.bin');
    writeFileSync(file, randomBytes(24 * 1024 * 1024));
    const c0 = session(await fresh('client'), 'client');
    let blackholedAtS = 0;
    let r: Awaited<ReturnType<Testbed['tcpTransfer']>>;
    const t0 = Date.now();
    try {
      r = await tb.tcpTransfer(file, 5230, async () => {
        await sleep(1000);
        await tb.blackhole(1, true);
        blackholedAtS = (Date.now() - t0) / 1000;
      });
    } finally {
      // Link 1 must be back for what follows; the client is restarted next anyway.
      if (blackholedAtS > 0) await tb.blackhole(1, false);
    }
    const client = session(await fresh('client'), 'client');
    const server = session(await fresh('server'), 'server');
    const l1 = client.links.find((l) => l.id === 0)!;
    const resent = client.resentPackets - c0.resentPackets;
    const reclaimed = l1.reclaimed - (c0.links.find((l) => l.id === 0)?.reclaimed ?? 0);
    console.log(
      `# aggregate, link 1 blackholed for good ${blackholedAtS.toFixed(2)} s into a 24 MB transfer: done in ${r.seconds.toFixed(2)} s; ` +
        `client resent ${resent}, link 1 reclaimed ${reclaimed}, stalls ${client.links.map((l) => l.stalls).join('/')}, ` +
        `link 1 ${l1.state}; server eliminated ${server.elimination.duplicates}, reorder: ${reorderLine(server)}`,
    );
    assert.equal(r.exitCode, 0, 'the receiver exited cleanly');
    assert.ok(blackholedAtS > 0 && r.seconds > blackholedAtS, `the outage (at ${blackholedAtS} s) fell inside the transfer (${r.seconds} s)`);
    assert.equal(sha256(r.out), sha256(file), 'the received file is the sent one, byte for byte');
    assert.ok(resent > 0 || reclaimed > 0, `link 1's unacknowledged data was sent again (resent ${resent}, reclaimed ${reclaimed})`);
  });

  it(`adaptive on 40+40 Mbit/s: one TCP stream >= ${striping([40, 40])} Mbit/s`, async () => {
    await shape(40, 40);
    await useMode('adaptive');
    const { mbps, share, client, server } = await throughput('adaptive 40+40', 80);
    assert.equal(client.mode, 'adaptive', 'the client session is in adaptive mode');
    assert.equal(server.mode, 'adaptive', 'the server took the mode from the handshake');
    assert.ok(client.stripedPackets > 0, `bulk data was striped (${client.stripedPackets} packets)`);
    assert.ok(mbps >= striping([40, 40]), `${mbps.toFixed(1)} Mbit/s >= ${striping([40, 40])} (link shares ${share.map((x) => x.toFixed(0)).join(' / ')} %)`);
  });

  it('adaptive: 1000 pps of 64-byte datagrams while link 1 is blackholed for 2 s: nothing lost, nothing doubled', async () => {
    await useMode('adaptive');
    const c0 = session(await fresh('client'), 'client');
    const ups = tb.linkUps('wan1');
    let s: StreamSummary;
    let on = false;
    try {
      s = await tb.udpStream(
        1000,
        5,
        async () => {
          await sleep(2000); // the sender's start-up (tsx), then about a second of stream
          await tb.blackhole(1, true);
          on = true;
          await sleep(2000);
          await tb.blackhole(1, false);
          on = false;
        },
        '10.0.0.1',
        64,
      );
    } finally {
      if (on) await tb.blackhole(1, false);
    }
    const client = session(await fresh('client'), 'client');
    const l = s.latencyMs;
    console.log(
      `# adaptive, 64-byte datagrams, link 1 out 2 s: sent ${s.sent}, received ${s.received}, missing ${s.missing}, duplicates ${s.duplicates}, ` +
        `latency p50 ${l.p50?.toFixed(2)} p99 ${l.p99?.toFixed(2)} max ${l.max?.toFixed(2)} ms; client duplicated ${client.duplicatedPackets - c0.duplicatedPackets}, ` +
        `striped ${client.stripedPackets - c0.stripedPackets}, degraded ${client.degradedEntered - c0.degradedEntered}×`,
    );
    assert.equal(s.duplicates, 0, 'no datagram delivered twice');
    assert.equal(s.missing, 0, 'no datagram lost');
    assert.equal(s.maxSeq, s.sent, 'the stream reached its end');
    assert.equal(s.received, s.sent, 'every datagram arrived');
    assert.ok(client.duplicatedPackets > c0.duplicatedPackets, 'the small datagrams went on every link');
    await tb.waitLinkBack('wan1', ups, 10_000);
  });
});
