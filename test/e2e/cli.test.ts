// Start-up failures of the real binary: one clear line, exit code 2, nothing left behind.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CLIENT_YAML, ROOT, SERVER_YAML, skipReason, Testbed, waitFor } from '../helpers/netns.js';

const execFileP = promisify(execFile);
const CLI = join(ROOT, 'dist', 'cli', 'index.js');
const skip = skipReason();

interface Outcome {
  code: number;
  stderr: string;
}

describe('dp-tcp start-up errors', { skip, timeout: 120_000 }, () => {
  let tb: Testbed;

  before(async () => {
    tb = await Testbed.create('cli');
  });
  after(async () => {
    await tb?.destroy();
  });

  async function runCli(args: string[], prefix: string[] = []): Promise<Outcome> {
    try {
      const r = await execFileP('ip', ['netns', 'exec', tb.serverNs, ...prefix, process.execPath, CLI, ...args], {
        timeout: 20_000,
      });
      return { code: 0, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stderr: string };
      return { code: err.code, stderr: err.stderr };
    }
  }

  async function devices(): Promise<string> {
    return (await tb.run('server', 'ip', ['-o', 'link', 'show'])).stdout;
  }

  /**
   * A command prefix that runs the rest in a mount namespace of its own whose
   * /dev/net/tun is a fresh TUN node of `mode` (root's): what an unprivileged
   * user may do with the device is then the test's, not the machine's (udev
   * makes it 0666; some machines have 0600).
   */
  function tunNode(mode: number): string[] {
    const dir = join(tb.dir, 'tun-node');
    mkdirSync(dir, { recursive: true });
    const script = `mount -t tmpfs -o mode=0755 none "$0" && mknod "$0/tun" c 10 200 && chmod ${mode.toString(8)} "$0/tun" && mount --bind "$0/tun" /dev/net/tun && exec "$@"`;
    return ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, dir];
  }

  function config(name: string, text: string): string {
    const f = join(tb.dir, name);
    writeFileSync(f, text);
    return f;
  }

  it('a bad field: exit 2, one line naming file and field, no device created', async () => {
    const f = config('bad.yaml', SERVER_YAML.replace('10.0.1.1:31411', '10.0.1.1:70000'));
    const r = await runCli(['server', '-c', f]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /bad\.yaml: server\.links\[0\]\.listen: port 70000 is out of range/);
    assert.doesNotMatch(await devices(), /dptcp-s/);
  });

  it('a missing file and a usage error exit 2', async () => {
    const r = await runCli(['server', '-c', join(tb.dir, 'nope.yaml')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /nope\.yaml: cannot read the config file/);
    assert.equal((await runCli(['server'])).code, 2);
    assert.equal((await runCli(['bogus'])).code, 2);
  });

  it('without CAP_NET_ADMIN: exit 2 and says what is missing', async () => {
    const f = config('ok.yaml', SERVER_YAML);
    chmodSync(tb.dir, 0o755); // the unprivileged user must be able to read the config
    // A device only root may open, as well: the missing capability is still what it is told first.
    const r = await runCli(['server', '-c', f], [...tunNode(0o600), 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /needs CAP_NET_ADMIN: run dp-tcp as root \(sudo\)/);
    assert.doesNotMatch(await devices(), /dptcp-s/);
  });

  it('with CAP_NET_ADMIN but a /dev/net/tun only root may open: exit 2, names the device and its mode', async () => {
    const f = config('ok.yaml', SERVER_YAML);
    chmodSync(tb.dir, 0o755);
    const caps = '+net_admin,+net_bind_service';
    const r = await runCli(['server', '-c', f], [...tunNode(0o600), 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', `--inh-caps=${caps}`, `--ambient-caps=${caps}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /this user may not open \/dev\/net\/tun \(EACCES; the device is mode 0600, owner uid 0 gid 0\): run dp-tcp as root/);
    assert.doesNotMatch(r.stderr, /needs CAP_NET_ADMIN/, 'it has CAP_NET_ADMIN');
    assert.doesNotMatch(await devices(), /dptcp-s/);
  });

  it('--user without the right to switch users (CAP_NET_ADMIN only): exit 2 with a clear line, the TUN device gone', async () => {
    const f = config('ok.yaml', SERVER_YAML);
    chmodSync(tb.dir, 0o755);
    const caps = '+net_admin,+net_bind_service';
    const r = await runCli(['server', '-c', f, '--user', 'nobody'], [...tunNode(0o666), 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', `--inh-caps=${caps}`, `--ambient-caps=${caps}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--user nobody: cannot switch to uid 65534 \/ gid 65534: EPERM.*CAP_SETUID/);
    assert.doesNotMatch(r.stderr, /unexpected error|\n\s+at /, 'one line, no stack');
    assert.doesNotMatch(await devices(), /dptcp-s/);
  });

  it('a busy port: exit 2, and the TUN device it had created is gone', async () => {
    const f = config('ok.yaml', SERVER_YAML);
    const squatter = tb.spawn('server', 'ncat', ['-l', '-k', '10.0.1.1', '31411']);
    await new Promise((r) => setTimeout(r, 300));
    const r = await runCli(['server', '-c', f]);
    squatter.kill();
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /cannot listen on 10\.0\.1\.1:31411 \(wan1\): the port is already in use/);
    assert.doesNotMatch(await devices(), /dptcp-s/);
  });

  it('a listen address no interface has (yet): exit 1, which the systemd units restart after, and the TUN device is gone', async () => {
    const f = config('absent.yaml', SERVER_YAML.replace('10.0.1.1:31411', '10.0.1.77:31411'));
    const r = await runCli(['server', '-c', f]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cannot listen on 10\.0\.1\.77:31411 \(wan1\): no interface has that address \(yet\?\)/);
    assert.doesNotMatch(r.stderr, /unexpected error|\n\s+at /, 'one line, no stack');
    assert.doesNotMatch(await devices(), /dptcp-s/);
  });

  it('with offload off on both sides the tunnel carries TCP intact', async () => {
    const off = (yaml: string): string => yaml.replace(/mtu: 1400 \}/, 'mtu: 1400, offload: false }');
    tb.startDpTcp('server', off(SERVER_YAML));
    tb.startDpTcp('client', off(CLIENT_YAML));
    await tb.waitUp(2);
    const file = join(tb.dir, 'off.bin');
    writeFileSync(file, randomBytes(20 * 1024 * 1024));
    const { out, exitCode } = await tb.tcpTransfer(file, 5300);
    assert.equal(exitCode, 0);
    assert.ok(readFileSync(out).equals(readFileSync(file)));
    assert.equal(await tb.stopDpTcp('client'), 0);
    assert.equal(await tb.stopDpTcp('server'), 0);
  });

  it('SIGTERM while it is still starting: a clean exit 0, the TUN device gone', async () => {
    // The log holds the earlier tests' runs too: wait for one more "TUN device up" than it has now.
    const ups = (): number => tb.log('server').split('TUN device up').length;
    const before = ups();
    const p = tb.startDpTcp('server', SERVER_YAML);
    // The device is up before the listeners, the control socket and the main signal handlers.
    await waitFor(() => ups() > before, 'TUN device up', 10_000, () => tb.log('server'));
    assert.equal(await tb.stopDpTcp('server'), 0, `exit code (signal ${String(p.signalCode)})`);
    assert.match(tb.log('server').split('TUN device up').at(-1) ?? '', /shutting down.*SIGTERM/);
    const links = await tb.run('server', 'ip', ['-o', 'link', 'show']);
    assert.doesNotMatch(links.stdout, /dptcp-s/, 'no TUN device left');
  });

  it('a TUN name another process holds: exit 2 with a clear line', async () => {
    const f = config('ok.yaml', SERVER_YAML);
    const mark = tb.rawLog('server').length;
    const first = tb.startDpTcp('server', SERVER_YAML);
    await waitFor(() => tb.rawLog('server').slice(mark).includes('"msg":"TUN device up"'), 'the first instance holds its TUN', 15_000);
    const r = await runCli(['server', '-c', f]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /TUN device 'dptcp-s' already exists and is in use/);
    assert.equal(first.exitCode, null, 'the running instance is untouched');
    assert.equal(await tb.stopDpTcp('server'), 0);
  });
});
