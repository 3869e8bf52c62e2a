// A new user's first hour with the real binary in network namespaces: a
// client whose server is unreachable says so within 5 s; `dp-tcp status` with
// no flags finds what runs in the namespace (a lone client, or a client and a
// server), lists links that never connected with their error, and reads no
// secret; `dp-tcp check` validates without touching the system; a device of
// the TUN name already there is refused and left as it was; SIGHUP and the
// death of an npm wrapper end the process cleanly; a plain ping session
// counts no spoofed packet.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { StatusDocument } from '../../src/ops/format.js';
import { CLIENT_YAML, ROOT, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const execFileP = promisify(execFile);
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const skip = skipReason();

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

describe('first hour', { skip, timeout: 180_000 }, () => {
  let tb: Testbed;

  before(async () => {
    tb = await Testbed.create('fh');
  });
  after(async () => {
    await tb?.destroy();
  });

  /** The CLI in a namespace (as `prefix`, e.g. setpriv, if given); never throws. */
  async function cli(side: 'server' | 'client', args: string[], prefix: string[] = []): Promise<Outcome> {
    try {
      const r = await execFileP('ip', ['netns', 'exec', tb.ns(side), ...prefix, process.execPath, CLI, ...args], { timeout: 20_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, stdout: err.stdout, stderr: err.stderr };
    }
  }

  function file(name: string, text: string, mode = 0o644): string {
    const f = join(tb.dir, name);
    writeFileSync(f, text);
    chmodSync(f, mode);
    return f;
  }

  it('a client alone: warns within 5 s with address and reason; status without flags lists its links, never connected', async () => {
    const t0 = Date.now();
    tb.startDpTcp('client', CLIENT_YAML);
    await waitFor(
      () => /WARN +\[client\/wan1\] link wan1 cannot connect to 10\.0\.1\.1:31411: connect ECONNREFUSED/.test(tb.log('client')) && /\[client\/wan2\] link wan2 cannot connect/.test(tb.log('client')),
      'the warnings about wan1 and wan2',
      5000,
      () => tb.log('client'),
    );
    console.log(`# unreachable server reported after ${Date.now() - t0} ms (process start included)`);
    assert.match(tb.log('client'), /\[client\/wan2\] link wan2 cannot connect to 10\.0\.2\.1:31413: connect ECONNREFUSED/, 'wan2 too');
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(tb.log('client').split('\n').filter((l) => / WARN .*cannot connect/.test(l)).length, 2, 'rate-limited: one warning per link in 3 s of redials');

    const text = await cli('client', ['status']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^dp-tcp \S+ client \(pid \d+\), TUN dptcp-c/m, 'found without flags');
    for (const [name, remote] of [['wan1', '10\\.0\\.1\\.1:31411'], ['wan2', '10\\.0\\.2\\.1:31413']]) {
      assert.match(text.stdout, new RegExp(`^ {2}${name} +down .* ${remote} \\(never connected: connect ECONNREFUSED ${remote}, \\d+ failures`, 'm'), `${name} listed:\n${text.stdout}`);
    }
    const json = await cli('client', ['status', '--json']);
    const doc = JSON.parse(json.stdout) as { instances: Array<Omit<StatusDocument, 'links'> & { links: Array<{ name: string; lastError: string | null; nextRetryInMs: number | null }> }> };
    assert.equal(doc.instances.length, 1, 'one instance in this namespace');
    const dial = doc.instances[0]!.links;
    assert.deepEqual(dial.map((l) => l.name), ['wan1', 'wan2'], 'both links in the JSON');
    assert.ok(dial.every((l) => /ECONNREFUSED/.test(l.lastError ?? '')), 'with their last error');
    assert.equal((await cli('server', ['status'])).code, 1, 'nothing runs in the server namespace');
  });

  it('the server comes: one info line per link; status finds client and server of one namespace, -r filters', async () => {
    tb.startDpTcp('server', SERVER_YAML);
    await tb.waitUp(2, 15_000);
    assert.equal(tb.log('client').split('\n').filter((l) => / INFO .*link up, after failing/.test(l)).length, 2, 'one recovery line per link');
    // A second dp-tcp, a server, in the client's namespace: its own TUN name, ports and status port.
    const second = file(
      'second.yaml',
      SERVER_YAML.replace('dptcp-s', 'dptcp-s2')
        .replace('10.0.0.1/24', '10.0.9.1/24')
        .replace('fd00:dd::1/64', 'fd00:d9::1/64')
        .replace(/10\.0\.(\d)\.1:314\d\d/g, '10.0.$1.2:4100$1')
        .replace('logger:', '  status_listen: "127.0.0.1:9409"\nlogger:'),
    );
    const p = spawn('ip', ['netns', 'exec', tb.clientNs, process.execPath, CLI, 'server', '-c', second], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    try {
      await waitFor(() => /listening/.test(err), 'the second instance listening', 10_000, () => err);
      const both = JSON.parse((await cli('client', ['status', '--json'])).stdout) as { instances: StatusDocument[] };
      assert.deepEqual(both.instances.map((i) => `${i.role} ${i.tunName}`).sort(), ['client dptcp-c', 'server dptcp-s2'], 'both instances of the namespace');
      const client = both.instances.find((i) => i.role === 'client')!;
      assert.ok(client.sessions[0]!.links.filter((l) => l.state === 'up').length === 2, 'the client with its two links up');
      const onlyServers = await cli('client', ['status', '-r', 'server']);
      assert.match(onlyServers.stdout, /TUN dptcp-s2/, '-r server: the server');
      assert.doesNotMatch(onlyServers.stdout, /TUN dptcp-c/, '-r server: not the client');
      assert.match(onlyServers.stdout, /listening: wan1 10\.0\.1\.2:41001, wan2 10\.0\.2\.2:41002/, 'a server shows where it listens');
    } finally {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  });

  it('status -c FILE needs no -r and no secret: as nobody, with a psk file only root can read', async () => {
    const psk = file('group.psk', 'a group key of at least 16 bytes\n', 0o600);
    const cfg = file('client-psk.yaml', CLIENT_YAML.replace('logger:', `  psk_file: ${psk}\nlogger:`));
    chmodSync(tb.dir, 0o755);
    const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const r = await cli('client', ['status', '-c', cfg], asNobody);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^dp-tcp \S+ client \(pid \d+\), TUN dptcp-c/m, 'the instance of that config');
    const u = await cli('client', ['status', '--url', '127.0.0.1:9401/metrics']);
    assert.equal(u.code, 0, u.stderr);
    assert.match(u.stdout, /TUN dptcp-c/, 'host:port/metrics is taken as its /status');
    const bad = await cli('client', ['status', '--url', 'http://127.0.0.1:9401/nothing']);
    assert.equal(bad.code, 1, 'not found');
    assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
  });

  it('a plain ping session counts no spoofed packet (IPv6 link-local and unspecified sources are not spoofing)', async () => {
    await tb.run('client', 'ping', ['-c', '3', '-i', '0.2', '10.0.0.1']);
    await tb.run('client', 'ping', ['-6', '-c', '3', '-i', '0.2', 'fd00:dd::1']);
    await new Promise((r) => setTimeout(r, 1500));
    const s = tb.stats('server').sessions[0]!;
    console.log(`# plain ping session at the server: spoofed ${s.dropsSpoofed}, link-local ${(s as { dropsLinkLocal?: number }).dropsLinkLocal}`);
    assert.equal(s.dropsSpoofed, 0, 'nothing counted as spoofed');
    assert.equal(await tb.stopDpTcp('client', 'SIGHUP'), 0, 'SIGHUP ends a client cleanly');
    assert.match(tb.log('client'), /shutting down reason=SIGHUP/, 'and says why');
  });

  it('dp-tcp check: exit 0 or 2, and nothing made', async () => {
    const devicesBefore = (await tb.run('server', 'ip', ['-o', 'link', 'show'])).stdout.replace(/^\d+: /gm, '');
    const good = await cli('server', ['check', '-c', file('good.yaml', SERVER_YAML)]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /good\.yaml: ok: server, TUN dptcp-s/, 'summary');
    const bad = await cli('server', ['check', '-c', file('bad.yaml', 'server:\n  tcp1_listen_addr: 10.0.1.1\n tcp1_listen_port: 1\n')]);
    assert.equal(bad.code, 2, bad.stdout);
    assert.match(bad.stderr, /bad\.yaml:3:1: is not valid YAML/, 'line and column');
    const devicesAfter = (await tb.run('server', 'ip', ['-o', 'link', 'show'])).stdout.replace(/^\d+: /gm, '');
    assert.equal(devicesAfter.split('\n').length, devicesBefore.split('\n').length, 'no device made by check');
  });

  it('a persistent TUN of the configured name: exit 2, one line, left exactly as it was; a non-TUN device: one line', async () => {
    assert.equal(await tb.stopDpTcp('server'), 0, 'the server stops');
    await tb.run('server', 'ip', ['tuntap', 'add', 'dev', 'dptcp-s', 'mode', 'tun']);
    await tb.run('server', 'ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'dptcp-s']);
    const before = (await tb.run('server', 'ip', ['-o', 'addr', 'show', 'dev', 'dptcp-s'])).stdout;
    const r = await cli('server', ['server', '-c', file('server.yaml', SERVER_YAML)]);
    const afterIt = (await tb.run('server', 'ip', ['-o', 'addr', 'show', 'dev', 'dptcp-s'])).stdout;
    await tb.run('server', 'ip', ['link', 'del', 'dptcp-s']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /a TUN device named 'dptcp-s' already exists \(a persistent one, e\.g\. from 'ip tuntap add'/, 'says what it is');
    assert.equal(afterIt, before, 'addresses unchanged');

    await tb.run('server', 'ip', ['link', 'add', 'dptcp-s', 'type', 'veth', 'peer', 'name', 'fh-peer']);
    const d = await cli('server', ['server', '-c', join(tb.dir, 'server.yaml')]);
    await tb.run('server', 'ip', ['link', 'del', 'dptcp-s']);
    assert.equal(d.code, 2, d.stderr);
    assert.equal(d.stderr.trim().split('\n').length, 1, `one line: ${d.stderr}`);
    assert.match(d.stderr, /a network device named 'dptcp-s' already exists and is not a TUN device/, 'not a TUN');
  });

  it('started by npm, it stops when npm is killed (no orphan holding the TUN)', async () => {
    // npm exec runs the bin under `sh -c`; killing npm leaves that shell's child behind. Here the
    // shell stands for npm: it stays the parent (the `; true`), and is killed outright.
    const cfg = file('client-npm.yaml', CLIENT_YAML);
    const sh = spawn('ip', ['netns', 'exec', tb.clientNs, 'sh', '-c', `${process.execPath} ${CLI} client -c ${cfg} 2>${join(tb.dir, 'npm.log')}; true`], {
      stdio: 'ignore',
      env: { ...process.env, npm_command: 'exec' },
    });
    let pid = 0;
    try {
      await waitFor(() => /TUN device up/.test(readLog()), 'the client up', 10_000, readLog);
      const doc = JSON.parse((await cli('client', ['status', '--json'])).stdout) as { instances: StatusDocument[] };
      pid = doc.instances.find((i) => i.tunName === 'dptcp-c')?.pid ?? 0;
      assert.ok(pid > 0, 'its pid from status');
      sh.kill('SIGKILL');
      await waitFor(() => !alive(pid), 'the orphan to exit', 5000, readLog);
    } finally {
      if (sh.exitCode === null && sh.signalCode === null) sh.kill('SIGKILL');
      if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    }
    assert.match(readLog(), /"reason":"the npm process that started dp-tcp \(pid \d+\) is gone"/, 'it said why');
    assert.doesNotMatch((await tb.run('client', 'ip', ['-o', 'link', 'show'])).stdout, /dptcp-c/, 'its TUN is gone');

    function readLog(): string {
      const f = join(tb.dir, 'npm.log');
      return existsSync(f) ? readFileSync(f, 'utf8') : '';
    }
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
