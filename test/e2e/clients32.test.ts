// Root end-to-end: 32 clients, each in a network namespace of its own with its
// own key and two links through two bridges to one server, all started at
// once (test/helpers/fleet.ts). Every client passes traffic within 30 s, and
// the server's resident memory grows by at most 2 MiB per client (measured
// from /proc/<pid>/status: VmRSS before the clients and with all of them up).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Fleet } from '../helpers/fleet.js';
import { skipReason, waitFor } from '../helpers/netns.js';

const skip = skipReason();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const N = 32;
const LIMIT_MS = 30_000;
const RSS_PER_CLIENT_KIB = 2048;

describe(`${N} clients started at once, each in its own namespace with two links through bridges`, { skip, timeout: 180_000 }, () => {
  let f: Fleet;

  before(async () => {
    const t0 = Date.now();
    f = await Fleet.create({ tag: 'c32', clients: N });
    console.log(`# ${N + 1} namespaces, ${2 * N} veth pairs, 2 bridges built in ${Date.now() - t0} ms`);
  });
  after(async () => {
    await f?.destroy();
  });

  it(`all ${N} pass traffic within ${LIMIT_MS / 1000} s; server RSS grows by at most ${RSS_PER_CLIENT_KIB / 1024} MiB per client`, async () => {
    const all = f.allClients();
    f.startServer();
    await waitFor(() => (f.log('server').match(/listening/g) ?? []).length >= 2, 'the server listening on both links', 15_000, () => f.log('server'));
    await sleep(2000); // settled: the baseline is an idle server
    const server = f.pid('server');
    const baseKiB = Fleet.rssKiB(server);

    // The machine's load when the clients start: a loaded 2-core box makes 32 Node start-ups slow.
    const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    const t0 = Date.now();
    for (const i of all) f.startClient(i);
    // Each client: once it logs a link up, ping the server's tunnel address until one is answered
    // (null: not within the limit and 10 s of grace).
    const upMs = await Promise.all(
      all.map(async (i) => {
        try {
          await waitFor(() => f.loggedLinkUp(i), `c${i} logging a link up`, LIMIT_MS + 10_000);
          return await f.firstPing(i, t0, LIMIT_MS + 10_000);
        } catch {
          return null;
        }
      }),
    );
    const sorted = upMs.filter((x): x is number => x !== null).sort((a, b) => a - b);
    const late = all.filter((i) => upMs[i - 1] === null || (upMs[i - 1] as number) > LIMIT_MS);
    console.log(
      `# ${N} clients started at once (load average ${load}): ${sorted.length} passed traffic, the first ping answered after ` +
        `${sorted[0]} ms (first), ${sorted[sorted.length >> 1]} ms (median), ${sorted[sorted.length - 1]} ms (last)`,
    );
    assert.deepEqual(late, [], `every client passed traffic within ${LIMIT_MS} ms (late or never: ${late.map((i) => `c${i}`).join(' ')}; c${late[0]}'s log:\n${late.length > 0 ? f.log(late[0]!).slice(-1500) : ''})`);

    await f.waitUp(all, 20_000);
    const answered = await Promise.all(all.map((i) => f.ping(i, '10.0.0.1', 10, { interval: 0.1, waitS: 5 })));
    const total = answered.reduce((a, b) => a + b, 0);
    const s = await f.fresh('server');
    await sleep(1000);
    const afterKiB = Fleet.rssKiB(server);
    const perClient = (afterKiB - baseKiB) / N;
    console.log(
      `# then 10 pings from each at once: ${total}/${10 * N} answered (per client: ${answered.join(' ')}); ` +
        `server RSS ${(baseKiB / 1024).toFixed(1)} MiB idle -> ${(afterKiB / 1024).toFixed(1)} MiB with ${N} clients: ` +
        `+${((afterKiB - baseKiB) / 1024).toFixed(1)} MiB, ${perClient.toFixed(0)} KiB per client`,
    );
    assert.equal(s.sessions.length, N, `one session per client (${s.sessions.length})`);
    assert.ok(s.sessions.every((x) => x.links.filter((l) => l.state === 'up').length === 2), 'every session has both links up');
    // 320 pings at once right after 32 start-ups on 2 cores: a few may wait past ping's 5 s, or past a
    // link queue's 200 ms age bound on both links while the loop is starved (seen: one client 8/10; 314/320
    // in a clean-clone CI run whose first ping came 13 s after the start, twice the usual).
    assert.ok(answered.every((n) => n >= 8), `every client's pings answered (${answered.join(' ')})`);
    assert.ok(total >= 10 * N - 8, `pings answered: ${total}/${10 * N}`);
    assert.ok(perClient <= RSS_PER_CLIENT_KIB, `server RSS per client ${perClient.toFixed(0)} KiB <= ${RSS_PER_CLIENT_KIB} KiB`);
  });
});
