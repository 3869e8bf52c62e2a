// Root end-to-end: what an operator sees and what dp-tcp changes on the host.
// Status and metrics are checked against traffic actually sent; routes, rules,
// NAT and forwarding are checked while running and after exit.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusDocument } from '../../src/ops/format.js';
import { CLIENT_YAML, ROOT, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const skip = skipReason();
const CLI = join(ROOT, 'dist/cli/index.js');

describe('operations between two network namespaces', { skip, timeout: 300_000 }, () => {
  let tb: Testbed;
  let internet: string;
  const baseline: Record<string, string> = {};
  let clientCfg: string;

  // Routes the kernel makes for addresses (e.g. IPv6 link-local, which appear late) are not ours.
  const notKernel = (text: string): string => text.split('\n').filter((l) => !l.includes('proto kernel')).join('\n');
  const snapshotHost = async (): Promise<Record<string, string>> => ({
    clientRoutes: notKernel((await tb.run('client', 'ip', ['route', 'show', 'table', 'all'])).stdout),
    clientRules: (await tb.run('client', 'ip', ['rule', 'show'])).stdout,
    serverNat: (await tb.run('server', 'iptables', ['-t', 'nat', '-S'])).stdout,
    serverFilter: (await tb.run('server', 'iptables', ['-S'])).stdout,
    serverForward: (await tb.run('server', 'cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout,
  });

  async function statusOf(side: 'client' | 'server'): Promise<StatusDocument> {
    const { stdout } = await tb.run(side, process.execPath, [CLI, 'status', '--json', '--url', `http://127.0.0.1:${side === 'server' ? 9400 : 9401}/status`]);
    return JSON.parse(stdout) as StatusDocument;
  }

  before(async () => {
    tb = await Testbed.create('ops');
    internet = await tb.addInternetHost();
    Object.assign(baseline, await snapshotHost());
    tb.startDpTcp('server', SERVER_YAML.replace('logger:', '  nat_out_interface: ext0\nlogger:'));
    tb.startDpTcp('client', CLIENT_YAML.replace('logger:', '  routes: [0.0.0.0/0]\nlogger:'));
    clientCfg = join(tb.dir, 'client.yaml');
    await tb.waitUp(2);
  });
  after(async () => {
    await tb?.destroy();
  });

  it('/status counts exactly the traffic that was sent, per link', async () => {
    const c0 = (await statusOf('client')).sessions[0]!;
    const server0 = await statusOf('server');
    const s0 = server0.sessions[0]!;
    const stream = await tb.udpStream(500, 2);
    assert.equal(stream.received, 1000);
    const c1 = (await statusOf('client')).sessions[0]!;
    const server1 = await statusOf('server');
    const s1 = server1.sessions[0]!;
    // The data loop (src/core/data-loop.ts) is on, and the stream's packets woke it.
    assert.equal(server1.tun.dataLoop?.on, true);
    assert.ok((server1.tun.dataLoop?.watched ?? 0) >= 3, `watched: the TUN and both links (${server1.tun.dataLoop?.watched})`);
    const wakeups = (server1.tun.dataLoop?.wakeups ?? 0) - (server0.tun.dataLoop?.wakeups ?? 0);
    assert.ok(wakeups >= 100, `the data loop's wait took ${wakeups} wake-ups for 2,000 copies`);
    // Keepalives are not DATA; the only other traffic is the stream itself.
    for (const l of c1.links) {
      const before = c0.links.find((x) => x.name === l.name)!;
      assert.ok(l.txPackets - before.txPackets >= 1000, `${l.name} sent ${l.txPackets - before.txPackets}`);
      assert.equal(l.state, 'up');
      assert.ok(l.rttMs !== null && l.rttMs > 0);
    }
    const delivered = s1.rxPackets - s0.rxPackets;
    const eliminated = s1.elimination.duplicates - s0.elimination.duplicates;
    assert.ok(delivered >= 1000 && delivered < 1010, `server delivered ${delivered}`);
    assert.ok(eliminated >= 990, `server eliminated ${eliminated}`);
    const firsts = s1.links.reduce((a, l) => a + l.firstCopies, 0) - s0.links.reduce((a, l) => a + l.firstCopies, 0);
    assert.equal(firsts, s1.elimination.accepted - s0.elimination.accepted);
    // Open mode, duplicate scheduling: most of the 2,000 copies went the native receive path.
    const native = s1.links.reduce((a, l) => a + l.nativeFrames, 0) - s0.links.reduce((a, l) => a + l.nativeFrames, 0);
    assert.ok(native >= 1000, `the native receive path took ${native} of the copies`);
  });

  it('/metrics exposes the same counters in Prometheus format', async () => {
    const st = (await statusOf('server')).sessions[0]!;
    const { stdout } = await tb.run('server', process.execPath, [
      '-e',
      "fetch('http://127.0.0.1:9400/metrics').then(async (r) => process.stdout.write(r.headers.get('content-type') + '\\n' + (await r.text())))",
    ]);
    assert.match(stdout.split('\n')[0]!, /^text\/plain; version=0\.0\.4/);
    assert.match(stdout, /# TYPE dptcp_link_first_copies_total counter/);
    assert.match(stdout, /# TYPE dptcp_link_up gauge/);
    assert.match(stdout, /^dptcp_link_native_frames_total\{session="[0-9a-f]{8}",link="[^"]+",role="server"\} [1-9]\d*$/m);
    for (const l of st.links) {
      const m = new RegExp(`^dptcp_link_first_copies_total\\{session="${st.id.slice(0, 8)}",link="${l.name.replace('#', '#')}",role="server"\\} (\\d+)$`, 'm').exec(stdout);
      assert.ok(m, `metric for ${l.name}`);
      assert.ok(Number(m[1]) >= l.firstCopies, `${l.name}: ${m[1]} >= ${l.firstCopies}`);
      assert.match(stdout, new RegExp(`^dptcp_link_up\\{session="${st.id.slice(0, 8)}",link="${l.name}",role="server"\\} 1$`, 'm'));
    }
    assert.match(stdout, new RegExp(`^dptcp_session_dropped_packets_total\\{session="${st.id.slice(0, 8)}",reason="spoofed",role="server"\\} \\d+$`, 'm'));
    // Sealed records have their own counter (tampered ones close their link); an open session has none.
    assert.match(stdout, /^dptcp_session_records_dropped_total\{session="[0-9a-f]{8}",reason="tampered",role="server"\} 0$/m);
    assert.match(stdout, /^dptcp_process_resident_memory_bytes/m);
  });

  it('dp-tcp status prints the per-link table', async () => {
    const { stdout } = await tb.run('client', process.execPath, [CLI, 'status', '-r', 'client', '-c', clientCfg]);
    assert.match(stdout, /^dp-tcp \S+ client \(pid \d+\), TUN dptcp-c/m);
    assert.match(stdout, /^ {2}wan1 +up /m);
    assert.match(stdout, /^ {2}wan2 +up /m);
    const down = await tb.run('server', process.execPath, [CLI, 'status', '--url', 'http://127.0.0.1:1/status']).catch((e: { code: number; stderr: string }) => e);
    assert.ok('code' in down && down.code === 1 && /cannot reach/.test(down.stderr), 'a clear error when nothing listens');
  });

  it('dp-tcp status --watch keeps printing fresh snapshots', async () => {
    const out = join(tb.dir, 'watch.txt');
    const watch = tb.spawn('client', process.execPath, [CLI, 'status', '--watch', '--json', '--url', 'http://127.0.0.1:9401/status'], { stdout: out });
    await waitFor(() => existsSync(out) && readFileSync(out, 'utf8').split('\n').slice(0, -1).filter((l) => l.startsWith('{')).length >= 3, 'three snapshots', 6000);
    watch.kill('SIGINT');
    // Whole lines only: the last one may have been cut by the signal.
    const docs = readFileSync(out, 'utf8').split('\n').slice(0, -1).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as StatusDocument);
    assert.ok(docs[2]!.uptimeMs > docs[0]!.uptimeMs, 'each snapshot is new');
  });

  it('routes the default route through the tunnel while each link keeps its own path', async () => {
    const routes = (await tb.run('client', 'ip', ['route', 'show'])).stdout;
    assert.match(routes, /^0\.0\.0\.0\/1 dev dptcp-c/m);
    assert.match(routes, /^128\.0\.0\.0\/1 dev dptcp-c/m);
    const rules = (await tb.run('client', 'ip', ['rule', 'show'])).stdout;
    assert.match(rules, /^25700:\s+from 10\.0\.1\.2 to 10\.0\.1\.1 lookup 25700/m);
    assert.match(rules, /^25701:\s+from 10\.0\.2\.2 to 10\.0\.2\.1 lookup 25701/m);
    // The internet host is reachable only through the tunnel and the server's masquerade.
    const ping = await tb.run('client', 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '203.0.113.2']);
    assert.match(ping.stdout, /3 received/);
    const nat = (await tb.run('server', 'iptables', ['-t', 'nat', '-S', 'POSTROUTING'])).stdout;
    assert.match(nat, /-A POSTROUTING -s 10\.0\.0\.0\/24 -o ext0 .*-j MASQUERADE/);
    assert.equal((await tb.run('server', 'cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
    // The links did not fall into the tunnel: they are still up and carrying traffic.
    const st = await statusOf('client');
    assert.ok(st.sessions[0]!.links.every((l) => l.state === 'up' && l.connects === 1), 'no link reconnected');
    void internet;
  });

  it('a link whose interface went down and came back gets its own route back, never the tunnel', async () => {
    const table = async (): Promise<string> => (await tb.run('client', 'ip', ['route', 'show', 'table', '25700'])).stdout;
    const routeGet = async (): Promise<string> => {
      try {
        return (await tb.run('client', 'ip', ['route', 'get', '10.0.1.1', 'from', '10.0.1.2'])).stdout;
      } catch (e) {
        return String((e as { stderr?: string }).stderr ?? e);
      }
    };
    assert.match(await table(), /^10\.0\.1\.1 dev link1-c/m);
    const before = (await statusOf('client')).sessions[0]!.links.find((l) => l.name === 'wan1')!.connects;
    await tb.run('client', 'ip', ['link', 'set', 'link1-c', 'down']);
    try {
      // The kernel took the link's route with the interface; the link's traffic must not fall into the tunnel.
      assert.doesNotMatch(await table(), /dev link1-c/);
      const down = await routeGet();
      assert.doesNotMatch(down, /dptcp-c/, 'the link would dial through the tunnel');
      assert.match(down, /No route to host|unreachable/);
      // Down long enough that the link is declared dead and redials (and fails) at least once.
      const t0 = Date.now();
      let state = 'up';
      while (state === 'up' && Date.now() - t0 < 10_000) {
        await new Promise((r) => setTimeout(r, 200));
        state = (await statusOf('client')).sessions[0]!.links.find((l) => l.name === 'wan1')!.state;
      }
      assert.notEqual(state, 'up', `wan1 declared dead\n${tb.log('client').slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      await tb.run('client', 'ip', ['link', 'set', 'link1-c', 'up']);
    }
    let links = (await statusOf('client')).sessions[0]!.links;
    const t0 = Date.now();
    while (Date.now() - t0 < 15_000) {
      links = (await statusOf('client')).sessions[0]!.links;
      const wan1 = links.find((l) => l.name === 'wan1')!;
      if (wan1.state === 'up' && wan1.connects > before) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const wan1 = links.find((l) => l.name === 'wan1')!;
    assert.equal(wan1.state, 'up', 'wan1 came back');
    assert.ok(wan1.connects > before, `wan1 reconnected (connects ${wan1.connects})`);
    assert.match(await table(), /^10\.0\.1\.1 dev link1-c/m, 'its route is back in its table');
    assert.match(await routeGet(), /dev link1-c table 25700/);
    assert.match(tb.log('client'), /link route set again/);
    const ping = await tb.run('client', 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.0.0.1']);
    assert.match(ping.stdout, /3 received/);
  });

  it('on exit removes exactly what it added, after its links told the server why', async () => {
    assert.equal(await tb.stopDpTcp('client'), 0);
    // Each link's CLOSE reaches the server (it does not wait for a dead interval): the client's
    // dialers close their links (a CLOSE each) before the routes and rules are removed.
    await waitFor(() => (tb.log('server').match(/peer closed link/g) ?? []).length === 2, 'the server heard both links close', 2000);
    assert.equal(await tb.stopDpTcp('server'), 0);
    const now = await snapshotHost();
    // The TUN's own connected routes go with the device; the rest must match the baseline.
    assert.deepEqual(now, baseline);
    await waitFor(() => /network change undone/.test(tb.log('client')), 'teardown logged', 1000);
  });
  it('a side killed with SIGKILL comes back although its rules were left behind', async () => {
    tb.startDpTcp('server', SERVER_YAML.replace('logger:', '  nat_out_interface: ext0\nlogger:'));
    tb.startDpTcp('client', CLIENT_YAML.replace('logger:', '  routes: [0.0.0.0/0]\nlogger:'));
    await tb.waitUp(2);
    await tb.stopDpTcp('client', 'SIGKILL');
    await tb.stopDpTcp('server', 'SIGKILL');
    // What a killed run leaves: its policy rules and NAT rules (the TUN and its routes are gone).
    assert.match((await tb.run('client', 'ip', ['rule', 'show'])).stdout, /lookup 25700/);
    assert.match((await tb.run('server', 'iptables', ['-t', 'nat', '-S'])).stdout, /dp-tcp dptcp-s/);
    tb.startDpTcp('server', SERVER_YAML.replace('logger:', '  nat_out_interface: ext0\nlogger:'));
    tb.startDpTcp('client', CLIENT_YAML.replace('logger:', '  routes: [0.0.0.0/0]\nlogger:'));
    await tb.waitUp(2);
    const rules = (await tb.run('client', 'ip', ['rule', 'show'])).stdout;
    assert.equal(rules.match(/lookup 25700/g)?.length, 1, 'the leftover rule was replaced, not doubled');
    const nat = (await tb.run('server', 'iptables', ['-t', 'nat', '-S'])).stdout;
    assert.equal(nat.match(/MASQUERADE/g)?.length, 1);
    assert.match(tb.log('client'), /removed a leftover of an earlier run/);
    const ping = await tb.run('client', 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '203.0.113.2']);
    assert.match(ping.stdout, /2 received/);
    // A clean exit now removes everything, leftovers included; only the forwarding setting the
    // killed run had changed cannot be known any more, so it stays on.
    assert.equal(await tb.stopDpTcp('client'), 0);
    assert.equal(await tb.stopDpTcp('server'), 0);
    const now = await snapshotHost();
    assert.deepEqual({ ...now, serverForward: '' }, { ...baseline, serverForward: '' });
    assert.equal(now.serverForward?.trim(), '1');
  });

});
