// Root end-to-end: many clients on one server. Eight clients, each in a
// network namespace of its own with its own key, two links each through two
// bridges to one server (test/helpers/fleet.ts), the real binary everywhere.
// All up; isolation (a client sending from, or claiming, another client's
// address gets nothing through, is counted against its own peer, and the
// other client keeps working; a client never receives another's traffic);
// one client crashing and restarting and another losing a link disturb no
// one else's datagram stream; SIGHUP adds a peer and removes one while the
// others keep their sessions untouched.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Fleet, type ServerStats } from '../helpers/fleet.js';
import { dropCounters, interfaceDrops, skipReason, waitFor, type StreamSummary } from '../helpers/netns.js';

const skip = skipReason();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const N = 8;
/** Configured from the start: clients 1..N; client N+1 is a peer the reload adds. */
const FIRST = Array.from({ length: N }, (_, k) => k + 1);
const LATE = N + 1;

type ServerSession = ServerStats['sessions'][number];

function session(s: ServerStats, i: number): ServerSession {
  const x = Fleet.sessionOf(s, i);
  assert.ok(x, `the server has a session for c${i}`);
  return x;
}

/** What must not change for a client whose session is left alone: its id, handshakes and each link's connection count. */
function fingerprint(x: ServerSession): string {
  return JSON.stringify({ id: x.id, handshakes: x.handshakes, connects: x.links.map((l) => [l.id, l.connects]) });
}

function report(name: string, s: StreamSummary): void {
  console.log(
    `# ${name}: sent ${s.sent}, received ${s.received}, missing ${s.missing}, duplicates ${s.duplicates}, ` +
      `latency p50 ${s.latencyMs.p50?.toFixed(2)} ms p99 ${s.latencyMs.p99?.toFixed(2)} ms max ${s.latencyMs.max?.toFixed(2)} ms`,
  );
}

function assertComplete(name: string, s: StreamSummary): void {
  assert.equal(s.duplicates, 0, `${name}: no datagram delivered twice`);
  assert.equal(s.missing, 0, `${name}: no datagram lost`);
  assert.equal(s.maxSeq, s.sent, `${name}: the stream reached its end`);
  assert.equal(s.received, s.sent, `${name}: every datagram arrived`);
}

describe(`${N} clients on one server, each with its own key and namespace, two links through bridges`, { skip, timeout: 240_000 }, () => {
  let f: Fleet;

  before(async () => {
    f = await Fleet.create({ tag: 'many', clients: N + 1 });
    f.startServer(FIRST);
    await waitFor(() => (f.log('server').match(/listening/g) ?? []).length >= 2, 'the server listening on both links', 15_000, () => f.log('server'));
    const t0 = Date.now();
    for (const i of FIRST) f.startClient(i);
    await f.waitUp(FIRST, 40_000);
    console.log(`# ${N} clients started at once: all links up on the server after ${Date.now() - t0} ms`);
  });
  after(async () => {
    await f?.destroy();
  });

  it('(a) every client is up and pings the server; the server reaches every client', async () => {
    const answered = await Promise.all(FIRST.map((i) => f.ping(i, '10.0.0.1', 5)));
    assert.deepEqual(answered, FIRST.map(() => 5), `every client's 5 pings answered (${answered.join(' ')})`);
    // Cryptokey routing: a packet to 10.0.0.1x goes to the session of the peer whose allowed_ips hold it.
    const back = await Promise.all(FIRST.map((i) => f.ping('server', f.tunAddr(i), 3)));
    assert.deepEqual(back, FIRST.map(() => 3), `the server's pings to each client answered (${back.join(' ')})`);
    const s = await f.fresh('server');
    assert.equal(s.sessions.length, N, `one session per client (${s.sessions.map((x) => x.peer?.name).join(',')})`);
    for (const i of FIRST) {
      const x = session(s, i);
      assert.equal(x.links.filter((l) => l.state === 'up').length, 2, `c${i}: both links up`);
      assert.equal(x.encrypted, true, `c${i}: encrypted`);
      assert.deepEqual(x.peerAddresses, [`${f.tunAddr(i)}/24`], `c${i}: holds its own address`);
    }
    const listed = (s.peers ?? []).map((p) => `${p.name}:${p.session ? 'connected' : 'none'}`);
    assert.deepEqual(listed, FIRST.map((i) => `c${i}:connected`), `the configured peers, each with its session (${listed.join(' ')})`);
    console.log(`# ${N} clients: 5/5 pings each, the server reaches each of them; ${N} sessions, 2 links up each`);
  });

  it('(b) isolation: sending from or claiming another client\'s address gets nothing through; no client receives another\'s traffic', async () => {
    const thief = 1;
    const victim = 2;
    const victimAddr = f.tunAddr(victim);
    const s0 = await f.fresh('server');
    const c0 = await f.fresh(thief);
    const victimBefore = fingerprint(session(s0, victim));

    // The thief puts the victim's address on its own TUN and sends from it, while the victim pings on.
    await f.run(thief, 'ip', ['addr', 'add', `${victimAddr}/32`, 'dev', 'dpf-c']);
    try {
      const [stolen, victimPings] = await Promise.all([
        f.ping(thief, '10.0.0.1', 10, { source: victimAddr, interval: 0.1 }),
        f.ping(victim, '10.0.0.1', 20, { interval: 0.1 }),
      ]);
      // The server sends to the victim's address: only the victim may receive it, though the thief has the address too.
      const toVictim = await f.ping('server', victimAddr, 10, { interval: 0.1 });
      const s1 = await f.fresh('server');
      const c1 = await f.fresh(thief);
      const spoofed = session(s1, thief).dropsSpoofed - session(s0, thief).dropsSpoofed;
      const victimSpoofed = session(s1, victim).dropsSpoofed - session(s0, victim).dropsSpoofed;
      const thiefRx = c1.sessions[0]!.rxPackets - c0.sessions[0]!.rxPackets;
      console.log(
        `# c${thief} sending as c${victim}: ${stolen}/10 through, the server dropped ${spoofed} as spoofed (counted on c${thief}); ` +
          `c${victim} meanwhile ${victimPings}/20; server -> c${victim}'s address ${toVictim}/10 answered, c${thief} received ${thiefRx} packets`,
      );
      assert.equal(stolen, 0, 'nothing sent from another client\'s address gets through');
      assert.ok(spoofed >= 10, `the spoofed packets are dropped and counted on the thief's peer (${spoofed})`);
      assert.equal(victimSpoofed, 0, 'nothing is counted against the victim');
      assert.equal(victimPings, 20, 'the victim keeps working meanwhile');
      assert.equal(toVictim, 10, 'traffic for the victim reaches the victim');
      assert.equal(thiefRx, 0, 'the thief receives none of it');
    } finally {
      await f.run(thief, 'ip', ['addr', 'del', `${victimAddr}/32`, 'dev', 'dpf-c']);
    }

    // A listed peer whose config claims the victim's address is refused; the victim keeps its session.
    assert.equal(await f.stop(thief), 0, 'the thief stopped cleanly');
    const mark = f.log('server').length;
    f.startClient(thief, f.clientYaml(thief, { tunAddr: victimAddr }));
    try {
      await waitFor(
        () => /handshake refused .*not in the allowed_ips of peer c1/.test(f.log('server').slice(mark)),
        'the server to refuse the claim',
        15_000,
        () => f.log('server').slice(mark),
      );
      const claimed = await f.ping(thief, '10.0.0.1', 5, { interval: 0.1 });
      const victimPings = await f.ping(victim, '10.0.0.1', 10, { interval: 0.1 });
      const s2 = await f.fresh('server');
      console.log(`# c${thief} configured with c${victim}'s address: refused (not in its allowed_ips), ${claimed}/5 through; c${victim} ${victimPings}/10`);
      assert.equal(claimed, 0, 'the claimant gets nothing through');
      assert.equal(victimPings, 10, 'the victim keeps working');
      assert.equal(fingerprint(session(s2, victim)), victimBefore, 'the victim kept its session, its handshakes and its connections');
      // Its old session (links down since it stopped) waits out session_idle_ms; nothing new came up.
      const thiefSessions = s2.sessions.filter((x) => x.peer?.name === `c${thief}`);
      assert.ok(
        thiefSessions.every((x) => x.links.every((l) => l.state !== 'up') && x.peerAddresses.every((a) => !a.startsWith(`${victimAddr}/`))),
        `the claimant has no link up and no session with the claimed address (${JSON.stringify(thiefSessions.map((x) => x.peerAddresses))})`,
      );
    } finally {
      // Back to its own config: the thief rejoins as itself.
      await f.stop(thief);
      f.startClient(thief);
    }
    await f.waitUp([thief], 20_000);
    assert.equal(await f.ping(thief, '10.0.0.1', 3), 3, 'c1 rejoined with its own address');
  });

  it('(c) one client crashing and restarting, another losing a link: the others\' streams lose nothing', async () => {
    const crasher = 6;
    const cut = 7;
    const bystanders = [3, 4, 5];
    const s0 = await f.fresh('server');
    const oldCrasher = session(s0, crasher).id;
    const pps = 250;
    const seconds = 12;
    const streams = await f.udpStreams([...bystanders, cut], pps, seconds, async () => {
      await sleep(2000);
      // A crash: SIGKILL, then the same config again (a new session id, the same key and address).
      await f.stop(crasher, 'SIGKILL');
      await sleep(300);
      f.startClient(crasher);
      // Link 1 of another client blackholed for 2.5 s: declared dead, redialled when the path is back.
      await f.blackhole(cut, 1, true);
      await sleep(2500);
      await f.blackhole(cut, 1, false);
    });
    for (const [i, s] of streams) report(`c${i} stream${i === cut ? ' (its link 1 blackholed 2.5 s)' : ''}`, s);
    // Where a datagram could have gone: every drop counter of the server and of each sender, and its TUN's kernel queue.
    const drops = (x: unknown): Record<string, number> => Object.fromEntries([...dropCounters(x)].filter(([, v]) => v > 0));
    console.log(`# server drops: ${JSON.stringify(drops({ tun: (await f.fresh('server')).tun }))}`);
    for (const i of streams.keys()) {
      const c = await f.fresh(i).catch(() => undefined);
      let tunDrops: number | string;
      try {
        tunDrops = interfaceDrops(f.ns(i)).get('dpf-c')?.tx ?? 'unknown (no dpf-c)';
      } catch (err) {
        tunDrops = `unknown (${(err as Error).message.split('\n')[0]})`;
      }
      console.log(`# c${i} drops: ${JSON.stringify(drops({ tun: c?.tun, sessions: c?.sessions }))}, its TUN's TX dropped ${tunDrops}`);
    }
    for (const [i, s] of streams) assertComplete(`c${i}`, s);

    await f.waitUp([crasher, cut], 20_000);
    const s1 = await f.fresh('server');
    for (const i of bystanders) assert.equal(fingerprint(session(s1, i)), fingerprint(session(s0, i)), `c${i}'s session untouched`);
    const restarted = session(s1, crasher);
    assert.notEqual(restarted.id, oldCrasher, 'the restarted client has a new session');
    assert.equal(s1.sessions.filter((x) => x.peer?.name === `c${crasher}`).length, 1, 'its old session was retired');
    const cutLink = session(s1, cut).links.find((l) => l.name.startsWith('wan1'));
    const cutLinkBefore = session(s0, cut).links.find((l) => l.name.startsWith('wan1'));
    assert.ok(cutLink && cutLinkBefore && cutLink.connects > cutLinkBefore.connects, 'the cut link was redialled');
    assert.equal(session(s1, cut).id, session(s0, cut).id, 'the client that lost a link kept its session');
    assert.equal(await f.ping(crasher, '10.0.0.1', 3), 3, 'the restarted client pings again');
  });

  it('(d) SIGHUP: an added peer connects, a removed peer is dropped, the others keep their sessions', async () => {
    const removed = N;
    const kept = FIRST.filter((i) => i !== removed);
    const s0 = await f.fresh('server');
    const before = new Map(kept.map((i) => [i, fingerprint(session(s0, i))]));
    assert.equal(await f.ping(removed, '10.0.0.1', 2), 2, 'the peer to be removed works before the reload');

    const line = await f.reloadServer([...kept, LATE]);
    console.log(`# reload: ${line.trim()}`);
    assert.match(line, new RegExp(`added=c${LATE}\\b`), 'the reload names the added peer');
    assert.match(line, new RegExp(`removed=c${removed}\\b`), 'the reload names the removed peer');

    const t0 = Date.now();
    f.startClient(LATE);
    await f.waitUp([LATE], 20_000);
    const lateUp = Date.now() - t0;
    const latePings = await f.ping(LATE, '10.0.0.1', 5);
    const removedPings = await f.ping(removed, '10.0.0.1', 5, { interval: 0.2 });
    const keptPings = await Promise.all(kept.map((i) => f.ping(i, '10.0.0.1', 3)));
    const s1 = await f.fresh('server');
    console.log(
      `# after the reload: c${LATE} up in ${lateUp} ms, ${latePings}/5 pings; removed c${removed} ${removedPings}/5; ` +
        `the other ${kept.length} ${keptPings.join(' ')} (of 3)`,
    );
    assert.equal(latePings, 5, 'the added peer passes traffic');
    assert.equal(removedPings, 0, 'the removed peer\'s traffic stopped');
    assert.equal(Fleet.sessionOf(s1, removed), undefined, 'the removed peer has no session');
    assert.ok(!(s1.peers ?? []).some((p) => p.name === `c${removed}`), 'nor is it listed');
    assert.deepEqual(keptPings, kept.map(() => 3), 'the others pass traffic');
    for (const i of kept) assert.equal(fingerprint(session(s1, i)), before.get(i), `c${i}: same session, no new handshake, no reconnection`);
    // The removed peer keeps trying; the server answers nothing (an unknown key) and it stays out.
    await sleep(1500);
    const s2 = await f.fresh('server');
    assert.equal(Fleet.sessionOf(s2, removed), undefined, 'the removed peer did not get back in');
    assert.ok((s2.server?.refused['unknown_peer'] ?? 0) > (s0.server?.refused['unknown_peer'] ?? 0), 'its handshakes are refused as an unknown peer');
  });
});
