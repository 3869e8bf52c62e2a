// Root end-to-end: the real binary on both sides of two veth links, real
// tools through the tunnel, real impairments.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MALLOC_TUNABLES, NO_MEMORY_REDUCER, SEMI_SPACE_MB } from '../../src/cli/memory.js';
import { DEFAULT_NICE } from '../../src/config/types.js';
import { CLIENT_YAML, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const skip = skipReason();

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

describe('dp-tcp between two network namespaces', { skip, timeout: 300_000 }, () => {
  let tb: Testbed;
  let bigFile: string;

  before(async () => {
    tb = await Testbed.create('core');
    bigFile = join(tb.dir, 'big.bin');
    writeFileSync(bigFile, randomBytes(50 * 1024 * 1024));
    tb.startDpTcp('server', SERVER_YAML);
    tb.startDpTcp('client', CLIENT_YAML);
    await tb.waitUp(2);
  });

  after(async () => {
    await tb?.destroy();
  });

  async function tcpTransfer(port: number, during?: () => Promise<void>): Promise<{ out: string; seconds: number }> {
    const r = await tb.tcpTransfer(bigFile, port, during);
    assert.equal(r.exitCode, 0, 'receiver exited cleanly');
    return r;
  }

  it('pings through the tunnel over IPv4 and IPv6', async () => {
    const v4 = await tb.run('client', 'ping', ['-c', '5', '-i', '0.2', '-W', '2', '10.0.0.1']);
    assert.match(v4.stdout, /5 packets transmitted, 5 received, 0% packet loss/);
    const v6 = await tb.run('client', 'ping', ['-6', '-c', '3', '-i', '0.2', '-W', '2', 'fd00:dd::1']);
    assert.match(v6.stdout, /3 packets transmitted, 3 received, 0% packet loss/);
    // No duplicate replies: ping flags them with "(DUP!)".
    assert.doesNotMatch(v4.stdout + v6.stdout, /DUP!/);
  });

  it('carries ncat UDP datagrams in both directions', async () => {
    for (const [from, to, addr, port] of [
      ['client', 'server', '10.0.0.1', 5002],
      ['server', 'client', '10.0.0.2', 5003],
    ] as const) {
      const text = Array.from({ length: 50 }, (_, i) => `${from}->${to} datagram line ${i}`).join('\n') + '\n';
      const src = join(tb.dir, `udp-${port}.txt`);
      const dst = join(tb.dir, `udp-${port}.out`);
      writeFileSync(src, text);
      writeFileSync(dst, '');
      tb.spawn(to, 'sh', ['-c', `exec ncat -u -l ${addr} ${port} --recv-only > ${dst}`]);
      await tb.listening(to, 'udp', port);
      await tb.run(from, 'sh', ['-c', `ncat -u --send-only ${addr} ${port} < ${src}`]);
      await waitFor(() => readFileSync(dst, 'utf8') === text, `UDP ${from} -> ${to} delivered`, 5000, () =>
        JSON.stringify(readFileSync(dst, 'utf8').slice(0, 200)),
      );
    }
  });

  it('moves 50 MB over TCP through the tunnel, byte for byte', async () => {
    const { out, seconds } = await tcpTransfer(5001);
    assert.equal(sha256(out), sha256(bigFile));
    console.log(`# 50 MB in ${seconds.toFixed(2)} s = ${((50 * 8 * 1.048576) / seconds).toFixed(0)} Mbit/s`);
  });

  it('moves 50 MB intact while link 1 is blackholed in the middle of the transfer', async () => {
    // 100 Mbit/s links: the transfer takes seconds, so the outage lands inside it.
    await tb.limitRate('100mbit');
    const before = tb.stats('client').sessions[0]!;
    const { out, seconds } = await tcpTransfer(5004, async () => {
      await new Promise((r) => setTimeout(r, 1000));
      await tb.blackhole(1, true);
      await new Promise((r) => setTimeout(r, 2500));
      await tb.blackhole(1, false);
    });
    assert.equal(sha256(out), sha256(bigFile));
    console.log(`# 50 MB with a 2.5 s outage of link 1 in ${seconds.toFixed(2)} s`);
    assert.ok(seconds > 3.5, `the outage (1 to 3.5 s in) fell inside the transfer (${seconds.toFixed(2)} s)`);
    // Link 2 carried the transfer through the outage; link 1 was declared dead and came back.
    assert.match(tb.log('client'), /\[client\/wan1\] link down/);
    await tb.waitUp(2, 10_000);
    const after = tb.stats('client').sessions[0]!;
    const connects = (s: typeof before): number => s.links.find((l) => l.name === 'wan1')!.connects;
    assert.ok(connects(after) > connects(before), 'link 1 was redialled after the outage');
  });

  it('counts what each link carried and what was eliminated', async () => {
    await waitFor(() => tb.stats('server').sessions[0]!.rxPackets > 0, 'stats written', 3000);
    const client = tb.stats('client').sessions[0]!;
    const server = tb.stats('server').sessions[0]!;
    // With TSO a packet is up to 64 KiB: 100 MB is a few thousand of them.
    for (const l of client.links) assert.ok(l.txPackets > 1000, `client ${l.name} sent ${l.txPackets} packets`);
    assert.ok(server.elimination.duplicates > 1000, `server eliminated ${server.elimination.duplicates} copies`);
    // Accepted packets go to the TUN, except those anti-spoofing drops and the client kernel's
    // IPv6 link-local packets (router solicitations: not routed, counted apart as link_local).
    assert.equal(server.elimination.accepted, server.rxPackets + server.dropsSpoofed + server.dropsLinkLocal);
    const firsts = server.links.reduce((a, l) => a + l.firstCopies, 0);
    assert.equal(firsts, server.elimination.accepted, 'every delivered packet is credited to the link that brought it');
  });

  it('runs with its memory settings: restarted in place (same pid) with the small young generation and malloc tunables', () => {
    for (const side of ['client', 'server'] as const) {
      // The spawned `ip netns exec` became node, which restarted itself with execv: one pid throughout.
      const pid = tb.process(side).pid as number;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.ok(cmdline.includes(`--max-semi-space-size=${SEMI_SPACE_MB}`), `${side}: ${cmdline.join(' ')}`);
      assert.ok(cmdline.includes(NO_MEMORY_REDUCER), `${side}: the memory reducer is off: ${cmdline.join(' ')}`);
      // glibc parses GLIBC_TUNABLES in place at start-up (its ':' become NULs): look for each setting.
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      assert.match(environ, /(^|\0)GLIBC_TUNABLES=/, `${side}: GLIBC_TUNABLES in its environment`);
      for (const t of MALLOC_TUNABLES.split(':')) assert.ok(environ.includes(t), `${side}: ${t} in its environment`);
      assert.ok(tb.alive(side));
    }
  });

  it('runs ahead of the applications it carries: every thread at the default nice value', () => {
    for (const side of ['client', 'server'] as const) {
      const pid = tb.process(side).pid as number;
      const threads = readdirSync(`/proc/${pid}/task`);
      assert.ok(threads.length > 1, `${side}: ${threads.length} threads`);
      for (const tid of threads) {
        // Field 19 of stat, counted after the command name's closing parenthesis (the name may hold spaces).
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
        assert.equal(nice, DEFAULT_NICE, `${side}: thread ${tid} (${stat.slice(0, stat.lastIndexOf(')') + 1)}) nice`);
      }
      assert.equal(tb.stats(side).nice, DEFAULT_NICE, `${side}: its status says so`);
    }
  });

  it('tears down on SIGTERM: exit 0, TUN devices gone', async () => {
    assert.equal(await tb.stopDpTcp('client'), 0);
    assert.equal(await tb.stopDpTcp('server'), 0);
    const c = await tb.run('client', 'ip', ['-o', 'link', 'show']);
    const s = await tb.run('server', 'ip', ['-o', 'link', 'show']);
    assert.doesNotMatch(c.stdout, /dptcp-c/);
    assert.doesNotMatch(s.stdout, /dptcp-s/);
    assert.match(tb.log('client'), /shutting down reason=SIGTERM/);
    // Logs are structured: every line the binary wrote is one JSON object with level, time, scope, msg.
    for (const side of ['client', 'server'] as const) {
      for (const line of tb.rawLog(side).split('\n').filter((l) => l !== '')) {
        const o = JSON.parse(line) as Record<string, unknown>;
        assert.ok(typeof o['msg'] === 'string' && typeof o['scope'] === 'string' && typeof o['time'] === 'string', line);
        assert.ok(['error', 'warn', 'info', 'debug', 'trace'].includes(o['level'] as string), line);
      }
    }
  });
});
