// `dp-tcp status` without being told where: the control socket each instance
// serves (an abstract unix socket named after its TUN), its listing from
// /proc/net/unix, the --url forms a user types, and the persistent-TUN check.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AddressInfo, createServer } from 'node:net';
import { getPriority } from 'node:os';
import { after, describe, it } from 'node:test';
import { currentNice } from '../../src/cli/priority.js';
import { fetchStatus, normalizeStatusUrl, renderStatus } from '../../src/cli/status.js';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { DpError } from '../../src/errors.js';
import { memoryLogger } from '../../src/log.js';
import { controlSocketPath, getFromInstance, holdsTun, listInstances, loopbackListenerUids, parseControlSockets, tunOfFdinfo, untrustedListener, untrustedStatusPort } from '../../src/ops/discovery.js';
import { loadAddon } from '../../src/tun/loader.js';
import { processMemory } from '../../src/ops/format.js';
import { buildRegistry } from '../../src/ops/metrics.js';
import { StatusServer } from '../../src/ops/status-server.js';
import { existingDevice, nameTakenError } from '../../src/tun/existing.js';
import { FakeTun } from '../helpers/fake-tun.js';
import { rootSkip } from '../helpers/netns.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const dir = tempDir('dptcp-status-');
after(() => removeDir(dir));

describe('status --url', () => {
  it('takes what a user types', () => {
    const table: Array<[string, string]> = [
      ['127.0.0.1:9401', 'http://127.0.0.1:9401/status'],
      ['localhost:9400', 'http://localhost:9400/status'],
      ['[::1]:9400', 'http://[::1]:9400/status'],
      ['http://127.0.0.1:9400', 'http://127.0.0.1:9400/status'],
      ['http://127.0.0.1:9400/', 'http://127.0.0.1:9400/status'],
      ['http://127.0.0.1:9400/status', 'http://127.0.0.1:9400/status'],
      ['http://127.0.0.1:9400/metrics', 'http://127.0.0.1:9400/status'],
      ['  127.0.0.1:9401/metrics ', 'http://127.0.0.1:9401/status'],
      ['https://status.example:443/dp/status', 'https://status.example/dp/status'],
      ['file:///tmp/x.json', 'file:///tmp/x.json'],
    ];
    for (const [input, url] of table) assert.equal(normalizeStatusUrl(input), url, input);
  });

  it('refuses what is not a URL, with exit 2 and no stack', () => {
    for (const bad of ['ht tp://x', 'ftp://127.0.0.1/status', 'http://']) {
      assert.throws(
        () => normalizeStatusUrl(bad),
        (e: unknown) => e instanceof DpError && e.exitCode === 2 && e.message.startsWith(`--url '${bad}'`),
        bad,
      );
    }
  });
});

describe('discovery', () => {
  it('lists the listening dp-tcp control sockets of /proc/net/unix, nothing else', () => {
    const pad = '@'.repeat(80);
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      `0000000000000000: 00000002 00000000 00010000 0001 01 629098 @dp-tcp/dptcp-c${pad}`,
      `0000000000000000: 00000003 00000000 00000000 0001 03 629100 @dp-tcp/dptcp-c${pad}`,
      '0000000000000000: 00000002 00000000 00010000 0001 01 629101 @dp-tcp/dptcp-s',
      '0000000000000000: 00000002 00000000 00010000 0001 01 629102 /run/systemd/private',
      '0000000000000000: 00000002 00000000 00010000 0001 01 629103 @other/dptcp-x',
      '0000000000000000: 00000002 00000000 00000000 0002 01 629104',
    ].join('\n');
    assert.deepEqual(parseControlSockets(text), ['dptcp-c', 'dptcp-s'], 'listening sockets only, padding stripped, each once');
    assert.deepEqual(listInstances(join(dir, 'absent')), [], 'no /proc: nothing found, no throw');
  });

  it('finds an instance by its control socket and reads its status; --json gives { instances }', async () => {
    const tunName = `ut${process.pid.toString(36)}`;
    const log = memoryLogger('debug');
    const tunnel = new Tunnel(new FakeTun(tunName), DEFAULT_TIMING, log);
    const doc = (): unknown => ({ role: 'client', version: 'test', pid: process.pid, tunName, memory: processMemory(), nice: currentNice(), ...tunnel.snapshot(), links: [] });
    const server = new StatusServer(doc, buildRegistry(() => tunnel.snapshot(), 'client'), log);
    try {
      assert.equal(await server.listenControl(controlSocketPath(tunName)), true, 'the control socket is up');
      assert.ok(listInstances().includes(tunName), 'listed in /proc/net/unix');
      const d = await fetchStatus({ tun: tunName });
      assert.equal(d.tunName, tunName, 'its document');
      const text = await renderStatus({});
      assert.match(text, new RegExp(`^dp-tcp test client \\(pid ${process.pid}\\), TUN ${tunName}.*, RSS \\d+(\\.\\d)? MiB, nice ${getPriority()}$`, 'm'), 'in the plain listing, with its memory and priority');
      const json = JSON.parse(await renderStatus({ json: true })) as { instances: Array<{ tunName: string }> };
      assert.ok(json.instances.some((i) => i.tunName === tunName), '--json: { instances: [...] }');
      const mine = json.instances.find((i) => i.tunName === tunName) as { memory?: { rssMiB: number; heapUsedMiB: number } };
      assert.ok((mine.memory?.rssMiB ?? 0) > (mine.memory?.heapUsedMiB ?? Infinity), `--json: the memory, resident above the heap in use (${JSON.stringify(mine.memory)})`);
      const servers = await renderStatus({ role: 'server' }).catch((e: unknown) => (e instanceof Error ? e.message : String(e)));
      assert.doesNotMatch(servers, new RegExp(`TUN ${tunName}`), '-r server leaves the client out');
      // A second instance cannot take the same name: a warning, not a failure.
      const other = new StatusServer(doc, buildRegistry(() => tunnel.snapshot(), 'client'), log);
      assert.equal(await other.listenControl(controlSocketPath(tunName)), false, 'the name is taken');
      assert.ok(log.lines.some((l) => /cannot serve the control socket.*the name is taken/.test(l)), 'and says so');
      other.close();
    } finally {
      server.close();
      tunnel.close();
    }
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(!listInstances().includes(tunName), 'gone once closed');
  });

  it('believes a control socket held by root or by the user who asks, nobody else', () => {
    assert.equal(untrustedListener({ pid: 10, uid: 0, gid: 0 }, 1000), undefined, 'root: dp-tcp listens before --user drops it');
    assert.equal(untrustedListener({ pid: 10, uid: 1000, gid: 1000 }, 1000), undefined, 'the user who asks');
    assert.match(untrustedListener({ pid: 77, uid: 1001, gid: 1001 }, 1000) ?? '', /pid 77 of uid 1001, neither root nor you/, 'another user');
    assert.equal(untrustedListener({ pid: 77, uid: 1001, gid: 1001 }, 0, () => true), undefined, 'another user that holds the TUN device (a service with CAP_NET_ADMIN)');
    assert.equal(tunOfFdinfo('pos:\t0\nflags:\t02100002\nmnt_id:\t23\nino:\t103\niff:\tdptcp-s\n'), 'dptcp-s', 'the fdinfo of a TUN descriptor names its device');
    assert.equal(tunOfFdinfo('pos:\t0\nflags:\t02\n'), undefined, 'one not attached names none');
    assert.match(untrustedListener({ pid: 77, uid: 1001, gid: 0 }, 0) ?? '', /uid 1001/, 'another user, asked by root');
  });

  it('knows the process that holds a TUN device by its /proc fdinfo', { skip: rootSkip('opens a TUN device') }, () => {
    const name = `ht${process.pid.toString(36)}`;
    const tun = new (loadAddon().Tun)(name);
    try {
      assert.equal(holdsTun(process.pid, name), true, 'this process holds it');
      assert.equal(holdsTun(process.pid, `${name}x`), false, 'not another name');
      assert.equal(holdsTun(1, name), false, 'nor does another process');
    } finally {
      tun.close();
    }
  });

  it('a local user who squats the control socket name gets no answer shown', { skip: rootSkip('runs the squatter as uid 65534') }, async () => {
    const tunName = `sq${process.pid.toString(36)}`;
    const forged = JSON.stringify({ role: 'server', version: 'forged', pid: 1, tunName, sessions: [], links: [] });
    const program = `require('node:net').createServer((c) => c.on('data', () => c.end('HTTP/1.1 200 OK\\r\\nContent-Length: ' + Buffer.byteLength(process.argv[1]) + '\\r\\n\\r\\n' + process.argv[1]))).listen({ path: '\\0dp-tcp/${tunName}' }, () => console.log('up'))`;
    const squatter = spawn(process.execPath, ['-e', program, forged], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        squatter.stdout.once('data', () => resolve());
        squatter.once('exit', (code) => reject(new Error(`the squatter exited (${code})`)));
      });
      assert.ok(listInstances().includes(tunName), 'it is listed like an instance');
      await assert.rejects(getFromInstance(tunName, '/status'), (e: Error) => {
        assert.match(e.message, new RegExp(`not trusting the control socket @dp-tcp/${tunName}: it is held by pid ${squatter.pid} of uid 65534`));
        return true;
      });
      // Nothing else runs here: the listing finds no instance, and says why the squatter's is not one.
      const text = await renderStatus({}).then(
        (t) => t,
        (e: unknown) => (e instanceof Error ? e.message : String(e)),
      );
      assert.doesNotMatch(text, /forged/, 'its document is not shown');
      assert.match(text, new RegExp(`dp-tcp on ${tunName}: not trusting the control socket`), 'the listing says why');
    } finally {
      squatter.kill();
    }
  });

  it('a default status port held by another local user is not believed (the fallback when no control socket answers)', { skip: rootSkip('runs the squatter as uid 65534') }, async () => {
    const program = `const s = require('node:net').createServer().listen(0, '127.0.0.1', () => console.log(s.address().port))`;
    const squatter = spawn(process.execPath, ['-e', program], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] });
    const own = createServer();
    try {
      const port = await new Promise<number>((resolve, reject) => {
        squatter.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
        squatter.once('exit', (code) => reject(new Error(`the squatter exited (${code})`)));
      });
      assert.match(untrustedStatusPort(port) ?? '', new RegExp(`port ${port} is held by uid 65534, neither root nor you`));
      await new Promise<void>((r) => own.listen(0, '127.0.0.1', r));
      assert.equal(untrustedStatusPort((own.address() as AddressInfo).port), undefined, 'a port root holds is believed');
      assert.equal(untrustedStatusPort(port, 65534), undefined, 'and one the asking user holds');
    } finally {
      squatter.kill();
      own.close();
    }
  });

  it('reads the owners of loopback listeners from /proc/net/tcp and tcp6', () => {
    const tcp = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:24B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 1 1',
      '   1: 0100007F:24B8 0100007F:9EC4 01 00000000:00000000 00:00000000 00000000  1000        0 2 1',
      '   2: 0A000001:24B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 3 1',
      '   3: 00000000:24B9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1',
    ].join('\n');
    const tcp6 = [
      '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000000000000000000001000000:24B8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 5 1',
      '   1: 0000000000000000FFFF000000000000:24B8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 6 1',
    ].join('\n');
    assert.deepEqual(loopbackListenerUids(9400, [tcp, tcp6]), [65534, 1003], 'listening on 127.0.0.1 and ::ffff:0.0.0.0; not a connection, not 10.0.0.1, not ::1');
    assert.deepEqual(loopbackListenerUids(9401, [tcp, tcp6]), [0], 'the wildcard reaches loopback too');
  });

  it('reads /status where --url points at /metrics, without a stack trace for a non-status answer', async () => {
    const log = memoryLogger('debug');
    const tunnel = new Tunnel(new FakeTun('ut-url'), DEFAULT_TIMING, log);
    const server = new StatusServer(() => ({ role: 'server', version: 'test', pid: 1, tunName: 'ut-url', ...tunnel.snapshot() }), buildRegistry(() => tunnel.snapshot(), 'server'), log);
    try {
      const bound = await server.listen('127.0.0.1', 0);
      assert.ok(bound, 'listening');
      const { port } = bound;
      const text = await renderStatus({ url: `127.0.0.1:${port}/metrics` });
      assert.match(text, /^dp-tcp test server \(pid 1\), TUN ut-url/m, 'the status, not the Prometheus text');
      await assert.rejects(
        renderStatus({ url: `http://127.0.0.1:${port}/nothing` }),
        (e: unknown) => e instanceof DpError && /answered 404/.test(e.message),
        'a 404 is one line',
      );
      const file = join(dir, 'not-status.json');
      writeFileSync(file, '{"hello": 1}');
      await assert.rejects(
        renderStatus({ url: `file://${file}` }),
        (e: unknown) => e instanceof DpError && /did not answer with a dp-tcp status document/.test(e.message),
        'JSON that is not a status document',
      );
      await assert.rejects(
        renderStatus({ url: `file://${join(dir, 'missing.json')}` }),
        (e: unknown) => e instanceof DpError && /cannot read file:.*ENOENT/.test(e.message),
        'a file that is not there is one line',
      );
    } finally {
      server.close();
      tunnel.close();
    }
  });
});

describe('a device of the TUN name already there', () => {
  /** A fake /proc/net/dev and /sys/class/net with these devices. */
  function fakeNet(devices: Record<string, { tunFlags?: number; devtype?: string } | 'no-sysfs'>): { procNetDev: string; sysClassNet: string } {
    const root = join(dir, `net${Object.keys(devices).join('-')}`);
    const sys = join(root, 'sys');
    mkdirSync(sys, { recursive: true });
    const rows = Object.keys(devices).map((n) => `${n.padStart(6)}: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0`);
    writeFileSync(join(root, 'dev'), ['Inter-|   Receive', ' face |bytes', '    lo: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0', ...rows].join('\n') + '\n');
    for (const [n, d] of Object.entries(devices)) {
      if (d === 'no-sysfs') continue;
      mkdirSync(join(sys, n));
      if (d.tunFlags !== undefined) writeFileSync(join(sys, n, 'tun_flags'), `0x${d.tunFlags.toString(16)}\n`);
      writeFileSync(join(sys, n, 'uevent'), `INTERFACE=${n}\n${d.devtype ? `DEVTYPE=${d.devtype}\n` : ''}`);
    }
    return { procNetDev: join(root, 'dev'), sysClassNet: sys };
  }

  it('tells a TUN, a TAP, another kind and a device sysfs does not show apart', () => {
    const net = fakeNet({ tun0: { tunFlags: 0x1001 }, tap0: { tunFlags: 0x1002 }, br0: { devtype: 'bridge' }, veth0: {}, ghost: 'no-sysfs' });
    assert.equal(existingDevice('dptcp-c', net), undefined, 'a free name');
    assert.deepEqual(existingDevice('tun0', net), { name: 'tun0', kind: 'tun' }, 'a persistent TUN');
    assert.deepEqual(existingDevice('tap0', net), { name: 'tap0', kind: 'tap' }, 'a TAP');
    assert.deepEqual(existingDevice('br0', net), { name: 'br0', kind: 'other', devtype: 'bridge' }, 'a bridge');
    assert.deepEqual(existingDevice('veth0', net), { name: 'veth0', kind: 'other' }, 'no DEVTYPE');
    assert.deepEqual(existingDevice('ghost', net), { name: 'ghost', kind: 'unknown' }, 'sysfs of another namespace');
  });

  it('one clear line each, exit 2', () => {
    const msg = (d: Parameters<typeof nameTakenError>[0], byDpTcp = false): string => {
      const e = nameTakenError(d, byDpTcp);
      assert.equal(e.exitCode, 2, 'exit 2');
      assert.ok(!e.message.includes('\n'), 'one line');
      return e.message;
    };
    assert.match(msg({ name: 'tun0', kind: 'tun' }), /^a TUN device named 'tun0' already exists \(a persistent one, e\.g\. from 'ip tuntap add'.*leaves this one as it is; choose another tunnel_device\.name, or remove the device \(ip link del tun0\)$/);
    assert.match(msg({ name: 'br0', kind: 'other', devtype: 'bridge' }), /^a network device named 'br0' already exists and is not a TUN device \(it is a bridge\): choose another/);
    assert.match(msg({ name: 'dptcp-s', kind: 'tun' }, true), /^TUN device 'dptcp-s' already exists and is in use by another dp-tcp in this namespace/);
  });
});
