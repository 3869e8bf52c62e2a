// The Prometheus registry (src/ops/metrics.ts): what /metrics shows for a
// client's configured links and for a server's handshake refusals.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Registry } from 'prom-client';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { LinkStats, type Link } from '../../src/core/link.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { memoryLogger } from '../../src/log.js';
import { buildRegistry } from '../../src/ops/metrics.js';
import { ServerStats } from '../../src/roles/server.js';
import { AdmissionStats } from '../../src/secure/admission.js';
import { FakeTun } from '../helpers/fake-tun.js';

type Series = Array<{ labels: Record<string, string | number>; value: number }>;

async function series(reg: Registry, name: string): Promise<Series> {
  const m = reg.getSingleMetric(name);
  assert.ok(m, `${name} is registered`);
  return (await m.get()).values.map(({ labels, value }) => ({ labels: labels as Record<string, string | number>, value }));
}

function valueOf(s: Series, labels: Record<string, string>): number | undefined {
  return s.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

describe('metrics', () => {
  const tunnels: Tunnel[] = [];
  afterEach(() => {
    for (const t of tunnels.splice(0)) t.close();
  });
  const newTunnel = (): Tunnel => {
    const t = new Tunnel(new FakeTun('ut-metrics'), DEFAULT_TIMING, memoryLogger('warn'));
    tunnels.push(t);
    return t;
  };

  it('client: a configured link that never connected has dptcp_link_up 0, with the labels of a connected one', async () => {
    const tunnel = newTunnel();
    const session = tunnel.newSession(Buffer.alloc(8, 0xab), Buffer.alloc(8), []);
    // Link 1 (wan1) is up; link 2 (wan2) never completed a handshake: the session has no entry for it.
    session.linkStats.set(1, { name: 'wan1', stats: new LinkStats() });
    session.links.set(1, { state: 'up', local: null, remote: null, srttMs: NaN, paceKbit: undefined, queueBytes: 0, close: () => {}, destroy: () => {} } as unknown as Link);
    const configured = [
      { id: 1, name: 'wan1' },
      { id: 2, name: 'wan2' },
    ];
    const reg = buildRegistry(() => tunnel.snapshot(), 'client', { configuredLinks: () => ({ session: session.idHex, links: configured }) });
    const up = await series(reg, 'dptcp_link_up');
    const sid = session.idHex.slice(0, 8);
    assert.equal(valueOf(up, { session: sid, link: 'wan1' }), 1, 'the connected link is up');
    assert.equal(valueOf(up, { session: sid, link: 'wan2' }), 0, 'the never-connected link is there, down');
    assert.equal(up.length, 2, 'one series per configured link');
    assert.deepEqual(Object.keys(up.find((v) => v.labels['link'] === 'wan2')?.labels ?? {}).sort(), ['link', 'session']);
    // Its other per-link series stay absent: there is nothing to count yet.
    assert.equal((await series(reg, 'dptcp_link_sent_packets_total')).length, 1);
  });

  it('aggregate: the striped bytes a session keeps until acknowledged, in /metrics and /status', async () => {
    const tunnel = newTunnel();
    const session = tunnel.newSession(Buffer.alloc(8, 0xcd), Buffer.alloc(8), []);
    session.mode = 'aggregate';
    session.retainBudget.add(12345);
    const reg = buildRegistry(() => tunnel.snapshot(), 'server');
    assert.equal(valueOf(await series(reg, 'dptcp_session_retained_bytes'), { session: session.idHex.slice(0, 8) }), 12345);
    assert.equal(tunnel.snapshot().sessions[0]!.retainedBytes, 12345);
    assert.equal(tunnel.retainBudget.bytes, 12345, "counted in the tunnel's budget");
    session.retainBudget.add(-12345);
  });

  it('client: without configured links (a server) dptcp_link_up shows only the snapshot', async () => {
    const tunnel = newTunnel();
    tunnel.newSession(Buffer.alloc(8, 0xcd), Buffer.alloc(8), []);
    const reg = buildRegistry(() => tunnel.snapshot(), 'server');
    assert.equal((await series(reg, 'dptcp_link_up')).length, 0);
  });

  it('server: handshake refusals by reason, completed handshakes and admission counters are counters', async () => {
    const tunnel = newTunnel();
    const stats = new ServerStats();
    stats.refused.bad_mac1 = 7;
    stats.refused.unknown_peer = 2;
    stats.refused.rekey_rate = 1;
    stats.handshakesCompleted = 5;
    const admission = new AdmissionStats();
    admission.rateLimited = 3;
    admission.evicted.prefix_full = 4;
    admission.cookiesSent = 6;
    const reg = buildRegistry(() => tunnel.snapshot(), 'server', { server: () => ({ stats, admission }) });
    const refused = await series(reg, 'dptcp_server_handshakes_refused_total');
    assert.equal(valueOf(refused, { reason: 'bad_mac1' }), 7);
    assert.equal(valueOf(refused, { reason: 'unknown_peer' }), 2);
    assert.equal(valueOf(refused, { reason: 'rekey_rate' }), 1);
    // Every reason has a series from the start (0), so rate() sees the first refusal.
    assert.deepEqual(refused.map((v) => v.labels['reason']).sort(), Object.keys(stats.refused).sort());
    assert.equal(valueOf(refused, { reason: 'replay' }), 0);
    assert.equal(valueOf(await series(reg, 'dptcp_server_handshakes_completed_total'), {}), 5);
    assert.equal(valueOf(await series(reg, 'dptcp_server_connections_blocked_total'), {}), 3);
    const evicted = await series(reg, 'dptcp_server_connections_evicted_total');
    assert.equal(valueOf(evicted, { reason: 'prefix_full' }), 4);
    assert.equal(valueOf(evicted, { reason: 'pending_full' }), 0);
    assert.equal(valueOf(await series(reg, 'dptcp_server_cookies_sent_total'), {}), 6);
    // Read at scrape time: a later refusal shows at the next scrape.
    stats.refused.bad_mac1++;
    assert.equal(valueOf(await series(reg, 'dptcp_server_handshakes_refused_total'), { reason: 'bad_mac1' }), 8);
    const text = await reg.metrics();
    assert.match(text, /^# TYPE dptcp_server_handshakes_refused_total counter$/m);
    assert.match(text, /^dptcp_server_handshakes_refused_total\{reason="bad_mac1",role="server"\} 8$/m);
  });

  it('client: no server counters', async () => {
    const tunnel = newTunnel();
    const reg = buildRegistry(() => tunnel.snapshot(), 'client');
    assert.equal(reg.getSingleMetric('dptcp_server_handshakes_refused_total'), undefined);
    assert.doesNotMatch(await reg.metrics(), /dptcp_server_/);
  });

  it('session: CLOSE and ACK frames that named another link (misdirected) are a counter', async () => {
    const tunnel = newTunnel();
    const session = tunnel.newSession(Buffer.alloc(8, 0xef), Buffer.alloc(8), []);
    session.stats.misdirected = 3;
    const reg = buildRegistry(() => tunnel.snapshot(), 'server');
    assert.equal(valueOf(await series(reg, 'dptcp_session_misdirected_frames_total'), { session: session.idHex.slice(0, 8) }), 3);
  });
});
