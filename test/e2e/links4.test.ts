// Root end-to-end: one client with four links (the modern `links:` list takes
// up to 16), each through its own bridge to the server. A numbered UDP stream
// runs through the tunnel while three of the four links are blackholed in
// turn, one at a time: nothing lost, nothing duplicated, and every link comes
// back. The server's per-link counters show that more than one link delivered.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../helpers/fleet.js';
import { skipReason, waitFor } from '../helpers/netns.js';

const skip = skipReason();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const LINKS = 4;

describe(`one client with ${LINKS} links`, { skip, timeout: 120_000 }, () => {
  let f: Fleet;

  before(async () => {
    f = await Fleet.create({ tag: 'l4', clients: 1, links: LINKS });
    f.startServer();
    await waitFor(() => (f.log('server').match(/listening/g) ?? []).length >= LINKS, `the server listening on ${LINKS} links`, 15_000, () => f.log('server'));
    f.startClient(1);
    await f.waitUp([1], 20_000);
  });
  after(async () => {
    await f?.destroy();
  });

  it(`all ${LINKS} links up on both sides; ping through`, async () => {
    const c = await f.fresh(1);
    assert.equal(c.sessions[0]!.links.filter((l) => l.state === 'up').length, LINKS, `the client has ${LINKS} links up`);
    assert.equal(await f.ping(1, '10.0.0.1', 5), 5, 'pings answered, none twice');
  });

  it('links 1, 2 and 3 blackholed in turn (1.5 s each, one at a time) under a UDP stream: nothing lost, nothing duplicated', async () => {
    const s0 = Fleet.sessionOf(await f.fresh('server'), 1)!;
    const outages: string[] = [];
    const streams = await f.udpStreams([1], 1000, 14, async () => {
      await sleep(1500);
      for (const b of [1, 2, 3]) {
        const connects = (): number => Fleet.sessionOf(f.stats('server')!, 1)?.links.find((l) => l.id === b - 1)?.connects ?? 0;
        const before = connects();
        const t0 = Date.now();
        await f.blackhole(1, b, true);
        await sleep(1500);
        await f.blackhole(1, b, false);
        // Declared dead after 800 ms of silence, redialled: wait until it is back before the next outage.
        await waitFor(() => connects() > before && f.upOnServer(f.stats('server'), 1), `link ${b} back`, 10_000, () => f.log(1).slice(-2000));
        outages.push(`link ${b}: out 1.5 s, back within ${Date.now() - t0 - 1500} ms`);
      }
    });
    const s = streams.get(1)!;
    const s1 = Fleet.sessionOf(await f.fresh('server'), 1)!;
    console.log(`# ${outages.join('; ')}`);
    console.log(
      `# 4 links, three blackholed in turn: sent ${s.sent}, received ${s.received}, missing ${s.missing}, duplicates ${s.duplicates}, ` +
        `latency p50 ${s.latencyMs.p50?.toFixed(2)} ms p99 ${s.latencyMs.p99?.toFixed(2)} ms max ${s.latencyMs.max?.toFixed(2)} ms`,
    );
    const delta = [...s1.links].sort((a, b) => a.id - b.id).map((l) => `${l.name}: first ${l.firstCopies - (s0.links.find((x) => x.id === l.id)?.firstCopies ?? 0)}, reconnects ${l.connects - (s0.links.find((x) => x.id === l.id)?.connects ?? 0)}`);
    console.log(`# server, per link during the stream: ${delta.join('; ')}`);
    assert.equal(s.duplicates, 0, 'no datagram delivered twice');
    assert.equal(s.missing, 0, 'no datagram lost');
    assert.equal(s.maxSeq, s.sent, 'the stream reached its end');
    assert.equal(s.received, s.sent, 'every datagram arrived');
    assert.equal(s1.id, s0.id, 'one session throughout');
    for (const b of [1, 2, 3]) {
      const l = s1.links.find((x) => x.id === b - 1)!;
      const before = s0.links.find((x) => x.id === b - 1)!;
      assert.ok(l.connects > before.connects, `link ${b} was declared dead and redialled (${before.connects} -> ${l.connects} connections)`);
    }
    const l4 = s1.links.find((x) => x.id === 3)!;
    assert.equal(l4.connects, s0.links.find((x) => x.id === 3)!.connects, 'link 4 was never cut');
    assert.equal(s1.links.filter((l) => l.state === 'up').length, LINKS, `all ${LINKS} links up at the end`);
  });
});
