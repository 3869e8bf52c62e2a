// Root end-to-end: the secure channel as an operator sets it up, with the real
// binary in network namespaces. Both forms (a psk file alone; peer keys made
// with `dp-tcp genkey` / `pubkey`) with both ciphers carry ping and a 50 MB
// transfer; a client with a key the server does not list, or with another
// server key, gets no tunnel and says why; nothing sent through the tunnel is
// readable on the wire; a private key file others can read is refused.
// Attacks on the wire (relay, replays, strangers, an insider, floods) are in
// attacks.test.ts.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CLIENT_YAML, ROOT, SERVER_YAML, skipReason, Testbed, waitFor, type Side, type StatsSnapshot } from '../helpers/netns.js';
import { BLOCK_MS } from '../../src/secure/limits.js';

const execFileP = promisify(execFile);
const skip = skipReason();
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const CIPHERS = ['chacha20-poly1305', 'aes-256-gcm'] as const;
type Cipher = (typeof CIPHERS)[number];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** What the client logs when a keyed server drops its handshake without a word. */
const SILENT_REFUSAL_HINT = /the server closed the connection without answering the handshake: check server_public_key/;

interface KeyFiles {
  file: string;
  pub: string;
}

/** Text inserted into a side's section of SERVER_YAML / CLIENT_YAML (before `logger:`). */
function withSecurity(yaml: string, lines: string[]): string {
  return yaml.replace('logger:', `${lines.map((l) => `  ${l}\n`).join('')}logger:`);
}

describe('security between two network namespaces: both forms, both ciphers, refusals, the wire', { skip, timeout: 300_000 }, () => {
  let tb: Testbed;
  let bigFile: string;
  let pskFile: string;
  let server: KeyFiles;
  let client: KeyFiles;
  let port = 5200;

  /** A key pair as an operator makes it: dp-tcp genkey into a file of mode 600, dp-tcp pubkey from it. */
  function genkey(name: string, mode = 0o600): KeyFiles {
    const priv = execFileSync(process.execPath, [CLI, 'genkey'], { encoding: 'utf8' });
    const pub = execFileSync(process.execPath, [CLI, 'pubkey'], { input: priv, encoding: 'utf8' }).trim();
    // 43 characters of base64, no '=': a key survives key=value text and shell splitting.
    assert.match(priv.trim(), /^[A-Za-z0-9+/]{43}$/, 'genkey prints 43 base64 characters');
    assert.match(pub, /^[A-Za-z0-9+/]{43}$/, 'pubkey prints 43 base64 characters');
    // The same keys as WireGuard's: wg, given the '=' back, makes the same public key.
    assert.equal(execFileSync('wg', ['pubkey'], { input: `${priv.trim()}=\n`, encoding: 'utf8' }).trim(), `${pub}=`, 'wg pubkey of a dp-tcp key');
    const file = join(tb.dir, `${name}.key`);
    writeFileSync(file, priv, { mode });
    chmodSync(file, mode);
    return { file, pub };
  }

  function pskConfig(side: Side, cipher: Cipher): string {
    return withSecurity(side === 'server' ? SERVER_YAML : CLIENT_YAML, [`psk_file: ${pskFile}`, `encryption: ${cipher}`]);
  }

  /** The peer-key form; `padded`: public keys written in wg's 44-character form (with '='), which is read as well. */
  function keysConfig(side: Side, cipher: Cipher, opts: { padded?: boolean; clientKey?: string; serverPub?: string } = {}): string {
    const text = (pub: string): string => (opts.padded ? `${pub}=` : pub);
    if (side === 'server') {
      return withSecurity(SERVER_YAML, [
        `private_key_file: ${server.file}`,
        'peers:',
        `  - { name: client, public_key: "${text(client.pub)}", allowed_ips: [10.0.0.2/32, "fd00:dd::2/128"] }`,
        `encryption: ${cipher}`,
      ]);
    }
    return withSecurity(CLIENT_YAML, [
      `private_key_file: ${opts.clientKey ?? client.file}`,
      `server_public_key: "${text(opts.serverPub ?? server.pub)}"`,
      `encryption: ${cipher}`,
    ]);
  }

  /** Restarts both sides with these configs; returns where each log stood before, to read only this run's lines. */
  async function restart(serverYaml: string, clientYaml: string): Promise<Record<Side, number>> {
    for (const side of ['client', 'server'] as const) {
      if (tb.alive(side)) assert.equal(await tb.stopDpTcp(side), 0, `${side} exited cleanly`);
    }
    const mark = { server: tb.log('server').length, client: tb.log('client').length };
    tb.startDpTcp('server', serverYaml);
    tb.startDpTcp('client', clientYaml);
    await tb.waitUp(2);
    return mark;
  }

  /** A status snapshot written after this call (the file is rewritten every second). */
  async function fresh(side: Side): Promise<StatsSnapshot> {
    const t0 = Date.now();
    let s: StatsSnapshot | undefined;
    await waitFor(
      () => {
        try {
          s = tb.stats(side);
        } catch {
          return false; // not written yet, or being renamed into place
        }
        return Date.parse((s as StatsSnapshot & { time: string }).time) > t0;
      },
      `a new ${side} stats snapshot`,
      5000,
    );
    return s as StatsSnapshot;
  }

  async function pingCount(count: number, dest = '10.0.0.1', extra: string[] = []): Promise<number> {
    try {
      const { stdout } = await tb.run('client', 'ping', ['-c', String(count), '-i', '0.2', '-W', '1', ...extra, dest], 20_000);
      return Number(/(\d+) received/.exec(stdout)?.[1] ?? 0);
    } catch (e) {
      // ping exits 1 when replies are missing: its output still says how many came.
      return Number(/(\d+) received/.exec((e as { stdout?: string }).stdout ?? '')?.[1] ?? 0);
    }
  }

  before(async () => {
    tb = await Testbed.create('sec');
    bigFile = join(tb.dir, 'big.bin');
    writeFileSync(bigFile, randomBytes(50 * 1024 * 1024));
    pskFile = join(tb.dir, 'psk');
    writeFileSync(pskFile, randomBytes(32).toString('base64'), { mode: 0o600 });
    chmodSync(pskFile, 0o600);
    server = genkey('server');
    client = genkey('client');
  });
  after(async () => {
    await tb?.destroy();
  });

  for (const form of ['psk', 'keys'] as const) {
    for (const cipher of CIPHERS) {
      const what = `${form === 'psk' ? 'psk form (psk_file alone)' : 'peer-key form'}, ${cipher}`;
      it(`${what}: ping and 50 MB over TCP, sha256 identical`, async () => {
        // The second peer-key run writes the public keys padded (44 characters, as wg prints them).
        const padded = form === 'keys' && cipher === 'aes-256-gcm';
        const mark =
          form === 'psk'
            ? await restart(pskConfig('server', cipher), pskConfig('client', cipher))
            : await restart(keysConfig('server', cipher, { padded }), keysConfig('client', cipher, { padded }));
        const peer = form === 'psk' ? 'psk' : 'client';
        assert.match(tb.log('server').slice(mark.server), new RegExp(`session joined .*peer=${peer} .*encryption=${cipher}`));
        if (form === 'psk') assert.match(tb.log('server').slice(mark.server), /shared-key mode/);
        assert.equal(await pingCount(3), 3, 'ping through the tunnel');

        const s0 = (await fresh('server')).sessions[0]!;
        const { out, seconds, exitCode } = await tb.tcpTransfer(bigFile, port++);
        assert.equal(exitCode, 0, 'the receiver exited cleanly');
        assert.equal(sha256(out), sha256(bigFile), 'the copy is byte for byte the original');
        const s1 = (await fresh('server')).sessions[0]!;
        const records = s1.records!.duplicate - s0.records!.duplicate;
        const perLink = s1.links.map((l) => (l.duplicateRecords ?? 0) - (s0.links.find((x) => x.id === l.id)?.duplicateRecords ?? 0));
        console.log(
          `# ${what}: 50 MB in ${seconds.toFixed(2)} s = ${((50 * 8 * 1.048576) / seconds).toFixed(0)} Mbit/s; ` +
            `server dropped ${records} second copies of records before decryption (per link ${perLink.join(' / ')}), ` +
            `${s1.elimination.duplicates - s0.elimination.duplicates} packet duplicates`,
        );
        assert.equal(s1.encrypted, true, 'the session is encrypted');
        // Every record went on both links: the later copy of each is dropped before it is decrypted.
        assert.ok(records > 100, `the second copies of the records were dropped as duplicate records (${records})`);
        assert.equal(perLink.reduce((a, b) => a + b, 0), records, 'each counted on the link that brought it');
      });
    }
  }

  it('nothing sent through the tunnel is readable on the wire (tcpdump on link 1)', async () => {
    const marker = `MARKER-${randomBytes(12).toString('hex')}`;
    const pattern = '5a'.repeat(16);
    const run = Buffer.alloc(64, 0x5a);

    /** Captures link 1 on the client side while `traffic` runs; returns the pcap, every packet of it. */
    async function capture(name: string, traffic: () => Promise<void>): Promise<Buffer> {
      const file = join(tb.dir, `${name}.pcap`);
      // Immediate mode: packets reach tcpdump one by one, not in blocks that a stop would leave unread.
      const dump = tb.spawn('client', 'tcpdump', ['-i', 'link1-c', '-n', '-U', '--immediate-mode', '-Z', 'root', '-w', file]);
      const exited = new Promise<void>((r) => dump.once('exit', () => r()));
      let said = '';
      dump.stderr?.on('data', (d: Buffer) => (said += d.toString()));
      await waitFor(() => /listening on/.test(said), 'tcpdump listening', 10_000, () => said);
      await traffic();
      await sleep(300);
      // Silence link 1 before tcpdump stops: a keepalive arriving in its last instant is counted as
      // received by the filter but never written (CI saw 70 of 72). Both senders drop in OUTPUT,
      // which comes before the capture point, for well under dead_interval_ms.
      const quiet = async (op: '-I' | '-D'): Promise<void> => {
        await tb.run('client', 'iptables', [op, 'OUTPUT', '-o', 'link1-c', '-j', 'DROP']);
        await tb.run('server', 'iptables', [op, 'OUTPUT', '-o', 'link1-s', '-j', 'DROP']);
      };
      await quiet('-I');
      try {
        await sleep(150);
        dump.kill('SIGINT');
        await exited;
      } finally {
        await quiet('-D');
      }
      const captured = /(\d+) packets? captured/.exec(said)?.[1];
      const seen = /(\d+) packets? received by filter/.exec(said)?.[1];
      assert.ok(captured !== undefined && captured === seen, `tcpdump wrote every packet it saw: ${said}`);
      return readFileSync(file);
    }

    const received = join(tb.dir, 'marker.out');
    writeFileSync(received, '');
    tb.spawn('server', 'sh', ['-c', `exec ncat -u -l 10.0.0.1 5400 --recv-only > ${received}`]);
    await tb.listening('server', 'udp', 5400);
    let answered = 0;
    const tunnel = await capture('tunnel', async () => {
      await tb.run('client', 'sh', ['-c', `for i in 1 2 3 4 5; do echo "${marker} line $i"; done | ncat -u --send-only 10.0.0.1 5400`]);
      answered = await pingCount(5, '10.0.0.1', ['-s', '256', '-p', pattern]);
      await waitFor(() => readFileSync(received, 'utf8').includes(marker), 'the marker delivered through the tunnel', 5000);
    });
    // The control: the same text and pattern sent over link 1 outside the tunnel are found by the same search.
    const clear = await capture('clear', async () => {
      await tb.run('client', 'sh', ['-c', `echo "${marker}" | ncat -u --send-only 10.0.1.1 5401`]);
      await pingCount(2, '10.0.1.1', ['-s', '256', '-p', pattern]);
    });
    console.log(
      `# capture of link 1 while the marker (UDP) and ${answered} pings of 0x5a went through the tunnel: ${tunnel.length} bytes, ` +
        `marker found ${tunnel.includes(marker)}, 0x5a run found ${tunnel.includes(run)}; in clear outside the tunnel: ${clear.length} bytes, ` +
        `marker found ${clear.includes(marker)}, 0x5a run found ${clear.includes(run)}`,
    );
    assert.equal(answered, 5, 'the pings went through the tunnel');
    assert.ok(tunnel.length > 2000, `the capture holds the tunnel's traffic (${tunnel.length} bytes)`);
    assert.ok(!tunnel.includes(marker), 'the marker text is not on the wire');
    assert.ok(!tunnel.includes(run), "the ping payload's pattern is not on the wire");
    assert.ok(clear.includes(marker) && clear.includes(run), 'the search finds both in clear traffic');
  });

  describe('clients that must get no tunnel (the server in the peer-key form)', () => {
    let serverMark = 0;

    /** Runs the client with this config in place of the real one; returns what it logged and what the server counted. */
    async function refusedClient(yaml: string): Promise<{ log: string; s0: StatsSnapshot; s1: StatsSnapshot; pings: number; c: StatsSnapshot }> {
      if (tb.alive('client')) assert.equal(await tb.stopDpTcp('client'), 0);
      const s0 = await fresh('server');
      const mark = tb.log('client').length;
      tb.startDpTcp('client', yaml);
      await waitFor(() => SILENT_REFUSAL_HINT.test(tb.log('client').slice(mark)), 'the client says why it gets no answer', 8000, () => tb.log('client').slice(mark));
      const pings = await pingCount(3);
      const c = await fresh('client');
      const s1 = await fresh('server');
      assert.equal(await tb.stopDpTcp('client'), 0);
      return { log: tb.log('client').slice(mark), s0, s1, pings, c };
    }

    function assertNoTunnel(r: { s0: StatsSnapshot; s1: StatsSnapshot; pings: number; c: StatsSnapshot }): void {
      assert.equal(r.pings, 0, 'no ping through the tunnel');
      assert.ok(r.c.sessions.every((s) => s.links.every((l) => l.state !== 'up' && l.connects === 0)), 'no link of the client ever came up');
      assert.equal(r.s1.server!.handshakesCompleted, r.s0.server!.handshakesCompleted, 'the server completed no handshake');
      assert.ok(r.s1.sessions.every((s) => s.links.every((l) => l.state !== 'up')), 'no link up on the server');
    }

    before(async () => {
      serverMark = tb.log('server').length;
      await restart(keysConfig('server', 'chacha20-poly1305'), keysConfig('client', 'chacha20-poly1305'));
    });

    it('a client whose key is not in peers: no tunnel, and its log says why', async () => {
      const stranger = genkey('stranger');
      const r = await refusedClient(keysConfig('client', 'chacha20-poly1305', { clientKey: stranger.file }));
      const refused = r.s1.server!.refused['unknown_peer']! - r.s0.server!.refused['unknown_peer']!;
      console.log(`# unlisted key: ${r.pings}/3 pings answered, server refused ${refused} INITIATIONs as unknown_peer; client: "${SILENT_REFUSAL_HINT.exec(r.log)?.[0]}..."`);
      assertNoTunnel(r);
      assert.ok(refused >= 1, 'the server refused it as an unknown peer');
      assert.match(tb.log('server').slice(serverMark), /handshake refused .*unknown peer/);
    });

    it('a client configured with another server_public_key: no tunnel, and its log says why', async () => {
      const other = genkey('other-server');
      // A slow run of the case above may have got its sources blocked (more than FAIL_LIMIT failures):
      // a blocked source is refused before mac1 is looked at, so wait the block out.
      if (/too many failed handshakes/.test(tb.log('server').slice(serverMark))) await sleep(BLOCK_MS + 500);
      const r = await refusedClient(keysConfig('client', 'chacha20-poly1305', { serverPub: other.pub }));
      const refused = r.s1.server!.refused['bad_mac1']! - r.s0.server!.refused['bad_mac1']!;
      console.log(`# wrong server key: ${r.pings}/3 pings answered, server refused ${refused} INITIATIONs for a bad mac1 (before any Diffie-Hellman)`);
      assertNoTunnel(r);
      assert.ok(refused >= 1, 'the server refused it on mac1');
    });

    it('the same client configuration with the right keys gets its tunnel (the control)', async () => {
      // The refused clients above failed many handshakes from these source addresses: the server
      // blocks such a source for 10 s (docs/security.md), so the real client may wait that long.
      const blocked = /too many failed handshakes/.test(tb.log('server').slice(serverMark));
      const t0 = Date.now();
      tb.startDpTcp('client', keysConfig('client', 'chacha20-poly1305'));
      await tb.waitUp(2, 20_000);
      console.log(`# the right keys: both links up after ${Date.now() - t0} ms (the source addresses were ${blocked ? '' : 'not '}blocked for failures)`);
      assert.equal(await pingCount(3), 3);
    });
  });

  it('a private key or psk file others can read: exit 2, and the message names the file', async () => {
    const cases: Array<[string, Side, (file: string) => string, number]> = [
      ['server private key', 'server', (f) => keysConfig('server', 'chacha20-poly1305').replace(server.file, f), 0o644],
      ['client private key', 'client', (f) => keysConfig('client', 'chacha20-poly1305', { clientKey: f }), 0o644],
      ['psk file', 'client', (f) => pskConfig('client', 'chacha20-poly1305').replace(pskFile, f), 0o640],
    ];
    for (const [name, side, yaml, mode] of cases) {
      const file = join(tb.dir, `readable-${name.replace(/ /g, '-')}`);
      writeFileSync(file, name.startsWith('psk') ? randomBytes(32).toString('base64') : readFileSync(client.file));
      chmodSync(file, mode);
      assert.equal(statSync(file).mode & 0o777, mode);
      // Another TUN name and no status port: the real pair keeps running beside it.
      const cfg = join(tb.dir, `readable-${side}.yaml`);
      writeFileSync(cfg, yaml(file).replace(/dptcp-[sc]/, 'dptcp-k').replace('logger:', '  status_listen: off\nlogger:'));
      const r = await execFileP('ip', ['netns', 'exec', tb.ns(side), process.execPath, CLI, side, '-c', cfg], { timeout: 20_000 }).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
      console.log(`# ${name} of mode ${mode.toString(8)}: exit ${r.code}: ${r.stderr.trim()}`);
      assert.equal(r.code, 2, `${name}: exit code 2`);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      assert.ok(r.stderr.includes(file), `${name}: the message names ${file}`);
      assert.match(r.stderr, new RegExp(`can be read or written by group or others \\(mode ${mode.toString(8)}\\): chmod 600`));
      assert.doesNotMatch((await tb.run(side, 'ip', ['-o', 'link', 'show'])).stdout, /dptcp-k/, 'no TUN device made');
    }
    assert.ok(tb.alive('server') && tb.alive('client'), 'the running pair is untouched');
  });
});
