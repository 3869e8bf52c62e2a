// Root end-to-end: the WAN emulator (scripts/wanem) checked against raw UDP on
// the testbed's veth links before any tunnel figure is trusted. Four streams at
// once, one per link and direction, each through its own emulator:
//   link 1 c→s  25±5 ms uniform, 1 % random loss           -> p50 25 ± 1.5 ms, loss within bounds, FIFO kept
//   link 2 c→s  emulator with nothing configured           -> delay ≈ 0, nothing lost
//   link 1 s→c  40 ms, normal σ 5 ms, reordering allowed,
//               Gilbert–Elliott p 0.01 r 0.3 (3.2 % loss)  -> p50 40 ± 1.5 ms, loss and burst length within bounds
//   link 2 s→c  4 Mbit/s, 50 ms buffer, 8 Mbit/s offered   -> 4 Mbit/s delivered, queueing delay ≤ 50 ms
// Then two streams sent together on each link (as bench:wan sends raw UDP and the tunnels' copies):
//   link 1 c→s  25±5 ms, jitter held 2 ms                  -> both streams the same delays
//   link 2 c→s  25±5 ms, a jitter per packet               -> the second stream later (FIFO: the larger of two draws)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Testbed } from '../helpers/netns.js';
import { probe, streamStats, wanSkip, wanTools, WanLinks, type StreamStats, type WanCounters } from '../helpers/wan.js';

const SECONDS = 20;
const PPS = 200;

function line(name: string, s: StreamStats): string {
  return (
    `# ${name}: delivered ${s.delivered}/${s.sent} (${(((s.sent - s.delivered) / s.sent) * 100).toFixed(2)} % lost in ${s.lossRuns} runs, ` +
    `longest ${s.longestLossRun}), duplicates ${s.duplicates}, reordered ${s.reordered}, ` +
    `one-way p50 ${s.p50?.toFixed(2)} p99 ${s.p99?.toFixed(2)} max ${s.max?.toFixed(2)} ms`
  );
}

/** |observed - expected| within k standard deviations. */
function within(observed: number, expected: number, sd: number, k: number, what: string): void {
  assert.ok(
    Math.abs(observed - expected) <= k * sd,
    `${what}: ${observed} is more than ${k} σ from ${expected.toFixed(1)} (σ ${sd.toFixed(1)})`,
  );
}

/**
 * Runs a measurement and its assertions, and once more if an assertion fails. The bounds are
 * tight (±1.5 ms on a p50), and a burst of load from elsewhere on a shared 2-core machine can
 * push one run of streams past them (CI once saw a p50 26.7 ms for 25, and a p99 58.7 ms
 * for a 50 ms buffer, both passing alone right after). An emulator that does not do what was
 * configured fails both runs.
 */
async function twice(what: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (err) {
    if (!(err instanceof assert.AssertionError)) throw err;
    console.log(`# ${what}, first run: ${err.message}; measuring again`);
    await run();
  }
}

describe('WAN emulator against raw UDP', { skip: wanSkip('the WAN emulator test'), timeout: 150_000 }, () => {
  let tb: Testbed;
  let links: WanLinks | undefined;

  before(async () => {
    wanTools();
    tb = await Testbed.create('wanem');
  });
  after(async () => {
    if (links) await links.stop().catch(() => undefined);
    await tb?.destroy();
  });

  it('delay, jitter, order, random and bursty loss and rate are what was configured', () =>
    twice('four streams', async () => {
      const ge = { p: 0.01, r: 0.3 };
      links = await WanLinks.apply(tb, {
        1: {
          c2s: { delayMs: 25, jitterMs: 5, dist: 'uniform', loss: 0.01 },
          s2c: { delayMs: 40, jitterMs: 5, dist: 'normal', reorder: true, ge },
        },
        2: { c2s: {}, s2c: { rateMbit: 4, limitMs: 50 } },
      });
      const t0 = Date.now();
      const [c2s, ge1, rate2] = await Promise.all([
        probe({ sendNs: tb.ns('client'), recvNs: tb.ns('server'), dests: ['10.0.1.1', '10.0.2.1'], pps: PPS, seconds: SECONDS, graceMs: 1000 }),
        probe({ sendNs: tb.ns('server'), recvNs: tb.ns('client'), dests: ['10.0.1.2'], pps: PPS, seconds: SECONDS, graceMs: 1000 }),
        // 1000 B of payload = 1028 B IP packets, 1000/s: 8.2 Mbit/s into a 4 Mbit/s link
        probe({ sendNs: tb.ns('server'), recvNs: tb.ns('client'), dests: ['10.0.2.2'], pps: 1000, seconds: SECONDS, size: 1000, graceMs: 1000 }),
      ]);
      const counters: Record<string, WanCounters> = await links.stop();
      links = undefined;
      console.log(`# streams of ${SECONDS} s took ${((Date.now() - t0) / 1000).toFixed(1)} s`);

      // link 1 c→s: 25±5 ms, 1 % loss, FIFO
      const a = streamStats(c2s, 0);
      console.log(line('link 1 c→s, 25±5 ms uniform, 1 % loss', a));
      const c1 = counters['link1 c2s']!;
      console.log(`#   emulator: ${JSON.stringify(c1)}`);
      assert.ok(a.p50 !== null && Math.abs(a.p50 - 25) <= 1.5, `link 1 c→s: p50 ${a.p50} ms, configured 25 ms`);
      assert.ok(a.sorted[0]! >= 20 - 0.1, `link 1 c→s: nothing faster than 20 ms (min ${a.sorted[0]})`);
      within(a.sent - a.delivered, a.sent * 0.01, Math.sqrt(a.sent * 0.01 * 0.99), 4.5, 'link 1 c→s: datagrams lost');
      assert.equal(a.sent - a.delivered, c1.lost_random, 'link 1 c→s: every datagram lost was lost by the emulator, and only those');
      assert.equal(a.reordered, 0, 'link 1 c→s: FIFO order kept with jitter');
      assert.equal(a.duplicates, 0, 'link 1 c→s: no duplicates');

      // link 2 c→s: nothing configured
      const z = streamStats(c2s, 1);
      console.log(line('link 2 c→s, emulator with nothing configured', z));
      assert.equal(z.delivered, z.sent, 'link 2 c→s: nothing lost');
      assert.ok(z.p50 !== null && z.p50 < 1, `link 2 c→s: p50 ${z.p50} ms, configured 0`);

      // link 1 s→c: 40 ms normal σ 5, reordering allowed, Gilbert–Elliott
      const b = streamStats(ge1, 0);
      console.log(line('link 1 s→c, 40 ms normal σ 5, reorder, GE p 0.01 r 0.3', b));
      console.log(`#   emulator: ${JSON.stringify(counters['link1 s2c'])}`);
      assert.ok(b.p50 !== null && Math.abs(b.p50 - 40) <= 1.5, `link 1 s→c: p50 ${b.p50} ms, configured 40 ms`);
      assert.ok(b.reordered > 0, 'link 1 s→c: with --reorder, packets overtake each other');
      // A two-state Markov chain: mean loss πB = p/(p+r); the variance of the count over n steps is
      // n πB πG (1+λ)/(1-λ), λ = 1-p-r.
      const piB = ge.p / (ge.p + ge.r), lambda = 1 - ge.p - ge.r;
      const lost = b.sent - b.delivered;
      within(lost, b.sent * piB, Math.sqrt(b.sent * piB * (1 - piB) * ((1 + lambda) / (1 - lambda))), 4.5, 'link 1 s→c: datagrams lost');
      const meanRun = lost / b.lossRuns;
      console.log(`#   mean loss burst ${meanRun.toFixed(2)} datagrams (1/r = ${(1 / ge.r).toFixed(2)})`);
      // burst lengths are geometric: mean 1/r, standard deviation √(1-r)/r (independent loss would give about 1)
      within(meanRun, 1 / ge.r, Math.sqrt(1 - ge.r) / ge.r / Math.sqrt(b.lossRuns), 4, 'link 1 s→c: mean loss burst (datagrams)');
      assert.ok(meanRun > 1.5, `link 1 s→c: losses come in bursts (mean ${meanRun} datagrams)`);

      // link 2 s→c: 4 Mbit/s with a 50 ms buffer
      const r = streamStats(rate2, 0);
      const mbps = (r.delivered * 1028 * 8) / SECONDS / 1e6;
      console.log(line('link 2 s→c, 4 Mbit/s, 50 ms buffer, 8.2 Mbit/s offered', r) + `, ${mbps.toFixed(2)} Mbit/s delivered`);
      console.log(`#   emulator: ${JSON.stringify(counters['link2 s2c'])}`);
      assert.ok(mbps > 3.85 && mbps < 4.2, `link 2 s→c: ${mbps} Mbit/s delivered through 4 Mbit/s`);
      assert.equal(r.sent - r.delivered, counters['link2 s2c']!.dropped_rate, 'link 2 s→c: losses are the bottleneck buffer overflowing');
      assert.ok(r.p50 !== null && r.p50 > 40, `link 2 s→c: a full buffer delays (p50 ${r.p50} ms)`);
      // 50 ms of buffer + 2.06 ms to serialise the packet itself; the max also holds the machine's
      // scheduling noise (the emulator's late_us_max), so the p99 is checked, with this run's own noise
      // (the p99 of link 2 c→s, configured without delay; at most 10 ms) on top of 2 ms of slack
      const noise = Math.min(10, Math.max(2, z.p99 ?? 0));
      assert.ok(r.p99 !== null && r.p99 < 54 + noise, `link 2 s→c: no packet waits beyond the 50 ms buffer (p99 ${r.p99} ms, noise ${noise} ms)`);
  }));

  it('streams sent together on one link: with the jitter held they see the same delays; drawn per packet, the second gets the larger draw', () =>
    twice('streams sent together', async () => {
      links = await WanLinks.apply(tb, {
        1: { c2s: { delayMs: 25, jitterMs: 5, holdMs: 2 }, s2c: {} },
        2: { c2s: { delayMs: 25, jitterMs: 5 }, s2c: {} },
      });
      // Each tick sends stream 0 then 1 to link 1, then 2 and 3 to link 2, back to back.
      const res = await probe({
        sendNs: tb.ns('client'),
        recvNs: tb.ns('server'),
        dests: ['10.0.1.1', '10.0.1.1', '10.0.2.1', '10.0.2.1'],
        pps: PPS,
        seconds: 10,
        graceMs: 1000,
      });
      await links.stop();
      links = undefined;
      const [h0, h1, p0, p1] = [0, 1, 2, 3].map((i) => streamStats(res, i));
      console.log(line('link 1, jitter held 2 ms, first stream', h0!));
      console.log(line('link 1, jitter held 2 ms, second stream', h1!));
      console.log(line('link 2, a jitter per packet, first stream', p0!));
      console.log(line('link 2, a jitter per packet, second stream', p1!));
      for (const st of [h0!, h1!, p0!]) assert.ok(st.p50 !== null && Math.abs(st.p50 - 25) <= 1.5, `p50 ${st.p50} ms, configured 25 ms`);
      assert.ok(Math.abs(h1!.p50! - h0!.p50!) <= 0.5, `held: the second stream's p50 ${h1!.p50} ms is the first's ${h0!.p50} ms`);
      // The larger of two uniform draws on [20, 30]: median 20 + 10·√0.5 = 27.07 ms.
      assert.ok(p1!.p50! - p0!.p50! >= 1, `per packet: the second stream's p50 ${p1!.p50} ms is later than the first's ${p0!.p50} ms`);
  }));
});
