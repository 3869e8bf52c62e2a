// The server's NAT and forwarding setup and its teardown, against a fake
// iptables (a script first in PATH that records its arguments) and a fake
// /proc/sys: nothing of the machine's network is touched.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ClientConfig, ServerConfig } from '../../src/config/types.js';
import { DpError } from '../../src/errors.js';
import { memoryLogger } from '../../src/log.js';
import { instancesWithTun } from '../../src/ops/discovery.js';
import { bestPath, NetworkSetup } from '../../src/ops/routing.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const dir = tempDir('dptcp-routing-');
after(() => removeDir(dir));

/**
 * A fake iptables in `bin` (the only directory in PATH while `f` runs): `-C` finds nothing, the
 * rest succeeds, or runs `onAdd` (shell) for a rule added with -A or -I.
 */
function withFakeIptables<T>(f: (calls: () => string[]) => T, onAdd = 'exit 0'): T {
  const bin = join(dir, 'bin');
  const log = join(dir, 'iptables.log');
  mkdirSync(bin, { recursive: true });
  writeFileSync(log, '');
  const script = `#!/bin/sh\necho "$*" >> '${log}'\ncase " $* " in *" -C "*) exit 1;; *" -A "*|*" -I "*) ${onAdd};; esac\nexit 0\n`;
  for (const cmd of ['iptables', 'ip6tables']) {
    writeFileSync(join(bin, cmd), script);
    chmodSync(join(bin, cmd), 0o755);
  }
  const path = process.env['PATH'];
  process.env['PATH'] = bin;
  try {
    return f(() => readFileSync(log, 'utf8').split('\n').filter((l) => l !== ''));
  } finally {
    process.env['PATH'] = path;
  }
}

function fakeProcSys(forwarding: string): string {
  const root = join(dir, `proc-${Math.random().toString(36).slice(2)}`);
  mkdirSync(join(root, 'net/ipv4'), { recursive: true });
  writeFileSync(join(root, 'net/ipv4/ip_forward'), `${forwarding}\n`);
  return root;
}

const config = {
  natOutInterface: 'eth0',
  tunnel: { addresses: [{ family: 4, address: '10.99.0.1', prefix: 24 }] },
} as unknown as ServerConfig;

describe('server NAT and forwarding', () => {
  it('turns forwarding on and restores it at teardown, with its own iptables rules removed', () => {
    withFakeIptables((calls) => {
      const procSys = fakeProcSys('0');
      const net = new NetworkSetup(memoryLogger('warn'), { procSys, instances: () => [] });
      net.setupServer(config, 'dptcp-a');
      assert.equal(readFileSync(join(procSys, 'net/ipv4/ip_forward'), 'utf8').trim(), '1', 'on');
      net.teardown();
      assert.equal(readFileSync(join(procSys, 'net/ipv4/ip_forward'), 'utf8').trim(), '0', 'restored');
      const added = calls().filter((c) => / -[AI] /.test(` ${c} `)).length;
      const deleted = calls().filter((c) => / -D /.test(` ${c} `) && !/ -C /.test(` ${c} `)).length;
      assert.equal(added, 3, 'three rules added');
      assert.equal(deleted, 3, 'the three removed');
      assert.ok(calls().every((c) => c.includes('--comment dp-tcp dptcp-a')), 'each tagged with its TUN');
      assert.ok(calls().every((c) => c.startsWith('-w 5 ')), 'each waits for the xtables lock');
    });
  });

  it('an uncaught exception after setup still removes the rules and restores forwarding (the exit hook)', () => {
    withFakeIptables((calls) => {
      const procSys = fakeProcSys('0');
      const child = join(dir, 'crash.ts');
      writeFileSync(
        child,
        [
          `import { memoryLogger } from ${JSON.stringify(new URL('../../src/log.ts', import.meta.url).pathname)};`,
          `import { NetworkSetup } from ${JSON.stringify(new URL('../../src/ops/routing.ts', import.meta.url).pathname)};`,
          `const net = new NetworkSetup(memoryLogger('warn'), { procSys: ${JSON.stringify(procSys)}, instances: () => [] });`,
          `net.setupServer(${JSON.stringify(config)}, 'dptcp-a');`,
          'net.teardownOnExit();',
          "setImmediate(() => { throw new Error('boom'); });",
          '',
        ].join('\n'),
      );
      // PATH holds only the fake iptables: the child is Node itself, by its full path.
      const r = spawnSync(process.execPath, ['--import', 'tsx', child], { encoding: 'utf8', cwd: ROOT });
      assert.equal(r.status, 1, `the child died of its exception: ${r.stderr}`);
      assert.match(r.stderr, /boom/);
      const added = calls().filter((c) => / -[AI] /.test(` ${c} `)).length;
      const deleted = calls().filter((c) => / -D /.test(` ${c} `)).length;
      assert.equal(added, 3, 'three rules added');
      assert.equal(deleted, 3, 'the three removed on the way out');
      assert.equal(readFileSync(join(procSys, 'net/ipv4/ip_forward'), 'utf8').trim(), '0', 'forwarding restored');
    });
  });

  it('IPv6: forwarding on, and the out interface keeps taking router advertisements (accept_ra 1 -> 2), both restored', () => {
    withFakeIptables(() => {
      const procSys = fakeProcSys('0');
      mkdirSync(join(procSys, 'net/ipv6/conf/all'), { recursive: true });
      mkdirSync(join(procSys, 'net/ipv6/conf/eth0'), { recursive: true });
      writeFileSync(join(procSys, 'net/ipv6/conf/all/forwarding'), '0\n');
      writeFileSync(join(procSys, 'net/ipv6/conf/eth0/accept_ra'), '1\n');
      const read = (f: string): string => readFileSync(join(procSys, f), 'utf8').trim();
      const net = new NetworkSetup(memoryLogger('warn'), { procSys, instances: () => [] });
      const v6 = { ...config, tunnel: { addresses: [{ family: 6, address: 'fd00::1', prefix: 64 }] } } as unknown as ServerConfig;
      net.setupServer(v6, 'dptcp-a');
      assert.equal(read('net/ipv6/conf/all/forwarding'), '1');
      assert.equal(read('net/ipv6/conf/eth0/accept_ra'), '2', 'router advertisements still taken with forwarding on');
      net.teardown();
      assert.equal(read('net/ipv6/conf/all/forwarding'), '0');
      assert.equal(read('net/ipv6/conf/eth0/accept_ra'), '1');
    });
  });

  it('a /proc/sys it cannot write (a container) is one clear error of exit code 2, not a stack trace', () => {
    withFakeIptables((calls) => {
      const net = new NetworkSetup(memoryLogger('warn'), { procSys: join(dir, 'no-such-proc-sys'), instances: () => [] });
      assert.throws(
        () => net.setupServer(config, 'dptcp-a'),
        (e: unknown) => e instanceof DpError && e.exitCode === 2 && /cannot set .*ip_forward to 1: .*ENOENT/.test(e.message),
      );
      assert.deepEqual(calls(), [], 'no iptables rule was added');
    });
  });

  it('the xtables lock held past the wait by another tool is exit code 1 (it passes: systemd restarts), another refusal exit 2', () => {
    const cases = [
      { say: 'Another app is currently holding the xtables lock. Stopped waiting after 5s.', status: 4, exitCode: 1 },
      { say: "iptables v1.8.9 (legacy): can't initialize iptables table `nat': Table does not exist", status: 3, exitCode: 2 },
      // An older iptables waited for the lock, then failed for another reason: that is no passing failure.
      { say: 'Another app is currently holding the xtables lock; waiting (1s) for it to exit...\niptables: No chain/target/match by that name.', status: 1, exitCode: 2 },
    ];
    for (const c of cases) {
      withFakeIptables(
        () => {
          const procSys = fakeProcSys('0');
          const net = new NetworkSetup(memoryLogger('warn'), { procSys, instances: () => [] });
          assert.throws(
            () => net.setupServer(config, 'dptcp-a'),
            (e: unknown) => e instanceof DpError && e.exitCode === c.exitCode && e.message.includes(c.say),
            c.say,
          );
          assert.equal(readFileSync(join(procSys, 'net/ipv4/ip_forward'), 'utf8').trim(), '0', 'forwarding is 0 after the failure');
        },
        `echo "${c.say.replace(/`/g, '\\`')}" >&2; exit ${c.status}`,
      );
    }
  });

  it('leaves forwarding on at teardown while another dp-tcp runs in the namespace (it may be the one that needs it)', () => {
    withFakeIptables(() => {
      const procSys = fakeProcSys('0');
      // Server A turns forwarding on; server B, started after it, finds it on and records nothing.
      const a = new NetworkSetup(memoryLogger('warn'), { procSys, instances: () => ['dptcp-a', 'dptcp-b'] });
      a.setupServer(config, 'dptcp-a');
      const log = memoryLogger('info');
      const b = new NetworkSetup(log, { procSys, instances: () => ['dptcp-a', 'dptcp-b'] });
      b.setupServer({ ...config, tunnel: { addresses: [{ family: 4, address: '10.98.0.1', prefix: 24 }] } } as unknown as ServerConfig, 'dptcp-b');
      // A stops first: B still forwards its clients' traffic.
      a.teardown();
      assert.equal(readFileSync(join(procSys, 'net/ipv4/ip_forward'), 'utf8').trim(), '1', 'still on for dptcp-b');
      b.teardown();
    });
  });
});

describe('which other dp-tcp counts for forwarding', () => {
  it('a control socket name with no TUN device of that name (a squatter) does not keep forwarding on', () => {
    const root = join(dir, `sys-${Math.random().toString(36).slice(2)}`);
    const unix = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '0000000000000000: 00000002 00000000 00010000 0001 01 1001 @dp-tcp/dptcp-b@@@@',
      '0000000000000000: 00000002 00000000 00010000 0001 01 1002 @dp-tcp/evil',
      '0000000000000000: 00000002 00000000 00010000 0001 01 1003 @dp-tcp/eth0',
      '',
    ].join('\n');
    mkdirSync(join(root, 'net'), { recursive: true });
    writeFileSync(join(root, 'net/unix'), unix);
    mkdirSync(join(root, 'class/net/dptcp-b'), { recursive: true });
    writeFileSync(join(root, 'class/net/dptcp-b/tun_flags'), '0x1801\n'); // a TUN device
    mkdirSync(join(root, 'class/net/eth0'), { recursive: true }); // an interface, not a TUN
    assert.deepEqual(instancesWithTun(join(root, 'net/unix'), join(root, 'class/net')), ['dptcp-b']);
    assert.deepEqual(instancesWithTun(join(root, 'net/no-such'), join(root, 'class/net')), [], 'nothing readable: none');
  });
});

describe('client link routes', () => {
  it('bestPath: the most specific unicast route outside the tunnel, lowest metric among equals', () => {
    const routes = [
      { dst: 'default', gateway: '192.0.2.1', dev: 'eth0', metric: 100 },
      { dst: 'default', gateway: '198.51.100.1', dev: 'wlan0', metric: 50 },
      { dst: '0.0.0.0/1', dev: 'dptcp-c' },
      { dst: '10.0.0.0/8', type: 'unreachable' },
    ];
    assert.deepEqual(bestPath(routes, 'dptcp-c'), ['via', '198.51.100.1', 'dev', 'wlan0']);
    assert.deepEqual(bestPath([...routes, { dst: '10.1.0.0/16', dev: 'eth1' }], 'dptcp-c'), ['dev', 'eth1']);
    assert.equal(bestPath([{ dst: '0.0.0.0/1', dev: 'dptcp-c' }], 'dptcp-c'), undefined);
  });

  /**
   * A fake `ip`: no route to the server at first (`route get` fails, the main
   * table has none); `ip-state/main` holds the main table's JSON once the
   * uplink is "up"; every call is recorded.
   */
  async function withFakeIp(f: (calls: () => string[], uplinkUp: () => void) => Promise<void>): Promise<void> {
    const bin = join(dir, 'ipbin');
    const state = join(dir, 'ip-state');
    const log = join(dir, 'ip.log');
    mkdirSync(bin, { recursive: true });
    mkdirSync(state, { recursive: true });
    writeFileSync(log, '');
    writeFileSync(join(state, 'main'), '[{"dst":"0.0.0.0/1","dev":"dptcp-c"}]');
    const script = [
      '#!/bin/sh',
      `echo "$*" >> '${log}'`,
      'case " $* " in',
      '  *" route get "*) echo "RTNETLINK answers: Network is unreachable" >&2; exit 2;;',
      '  *" rule del "*) exit 2;;',
      `  *" show exact "*) echo '[]';;`,
      `  *" show table main match "*) /bin/cat '${join(state, 'main')}';;`,
      `  *" addr show to "*) echo '[{"ifname":"eth7"}]';;`,
      `  *" route replace "*" via "*) /bin/grep -q gateway '${join(state, 'main')}' || { echo "Error: Nexthop has invalid gateway." >&2; exit 2; };;`,
      'esac',
      'exit 0',
      '',
    ].join('\n');
    writeFileSync(join(bin, 'ip'), script);
    chmodSync(join(bin, 'ip'), 0o755);
    const path = process.env['PATH'];
    process.env['PATH'] = bin;
    try {
      await f(
        () => readFileSync(log, 'utf8').split('\n').filter((l) => l !== ''),
        () => writeFileSync(join(state, 'main'), '[{"dst":"default","gateway":"192.0.2.1","dev":"eth7"},{"dst":"0.0.0.0/1","dev":"dptcp-c"}]'),
      );
    } finally {
      process.env['PATH'] = path;
    }
  }

  const tunnel = { addresses: [{ family: 4, address: '10.0.0.2', prefix: 24 }] };
  const client = {
    tunnel,
    routes: [{ family: 4, address: '0.0.0.0', prefix: 0 }],
    links: [{ id: 0, name: 'wan1', remoteAddress: '203.0.113.9', remotePort: 443, localAddress: '192.0.2.50' }],
  } as unknown as ClientConfig;

  it('an IPv6 route on a tunnel without an IPv6 address is set, and start says its traffic is dropped in the tunnel (no leak)', async () => {
    await withFakeIp(async (calls) => {
      const log = memoryLogger('warn');
      const net = new NetworkSetup(log);
      net.setupClient({ ...client, routes: [{ family: 6, address: '::', prefix: 0 }] } as unknown as ClientConfig, 'dptcp-c');
      assert.match(log.lines.join('\n'), /the tunnel has no IPv6 address: IPv6 traffic to this prefix goes into it and is dropped there/);
      assert.ok(calls().includes('-6 route add ::/1 dev dptcp-c') && calls().includes('-6 route add 8000::/1 dev dptcp-c'), calls().join('\n'));
      net.teardown();
    });
  });

  it('a link with no route at start does not stop the client; its route is set once one appears, never into the tunnel', async () => {
    await withFakeIp(async (calls, uplinkUp) => {
      const log = memoryLogger('debug');
      const net = new NetworkSetup(log);
      net.setupClient(client, 'dptcp-c');
      assert.match(log.lines.join('\n'), /no route to this link's server yet/);
      // The fallback that keeps a dial out of the tunnel, the rule, the tunnel's routes; no route to the server yet.
      assert.ok(calls().includes('-4 route replace unreachable 203.0.113.9/32 table 25700 metric 4294967295'));
      assert.ok(calls().includes('-4 rule add from 192.0.2.50 to 203.0.113.9/32 lookup 25700 priority 25700'));
      assert.ok(!calls().some((c) => c.startsWith('-4 route replace 203.0.113.9/32')));
      // Before a redial with the uplink still down: the only candidate is the tunnel, which is never taken.
      await net.refreshLinkRoute(0);
      assert.ok(!calls().some((c) => c.startsWith('-4 route replace 203.0.113.9/32')), calls().join('\n'));
      uplinkUp();
      await net.refreshLinkRoute(0);
      assert.ok(calls().includes('-4 route replace 203.0.113.9/32 via 192.0.2.1 dev eth7 table 25700'), calls().join('\n') + log.lines.join('\n'));
      assert.match(log.lines.join('\n'), /link route set again/);
      await net.refreshLinkRoute(7); // not a link with a route of its own: nothing
      net.teardown();
      // Removed by their exact specifications (another dp-tcp's routes in a table of the same number stay).
      assert.ok(calls().includes('-4 route del 203.0.113.9/32 via 192.0.2.1 dev eth7 table 25700'), calls().join('\n'));
      assert.ok(calls().includes('-4 route del unreachable 203.0.113.9/32 table 25700 metric 4294967295'));
      assert.ok(!calls().some((c) => c.includes('flush')));
      assert.ok(calls().includes('-4 rule del from 192.0.2.50 to 203.0.113.9/32 lookup 25700 priority 25700'));
    });
  });

  /**
   * A fake `ip` with state: two uplinks, eth1 (192.0.2.0/24, the link's own,
   * which goes down and up) and eth2 (198.51.100.0/24, another default
   * route); the link's route to its server wherever it was put.
   */
  interface Uplinks {
    eth1: boolean;
    route: { dst: string; gateway?: string; dev: string } | undefined;
    slowMatchMs?: number;
  }
  async function withUplinks(f: (set: (s: Partial<Uplinks>) => void, get: () => Uplinks, calls: () => string[]) => Promise<void>): Promise<void> {
    const bin = join(dir, 'uplinks-bin');
    const state = join(dir, 'uplinks.json');
    const log = join(dir, 'uplinks.log');
    mkdirSync(bin, { recursive: true });
    writeFileSync(log, '');
    writeFileSync(state, JSON.stringify({ eth1: true, route: undefined }));
    const program = `#!${process.execPath}
const fs = require('node:fs');
const a = process.argv.slice(2);
const line = ' ' + a.join(' ') + ' ';
fs.appendFileSync(${JSON.stringify(log)}, a.join(' ') + '\\n');
const s = JSON.parse(fs.readFileSync(${JSON.stringify(state)}, 'utf8'));
const save = () => fs.writeFileSync(${JSON.stringify(state)}, JSON.stringify(s));
const fail = (m) => { process.stderr.write(m + '\\n'); process.exit(2); };
const json = a[0] === '-j';
if (line.includes(' route get ')) {
  if (!s.eth1) fail('RTNETLINK answers: Network is unreachable');
  console.log(JSON.stringify([{ dst: '203.0.113.9', gateway: '192.0.2.1', dev: 'eth1' }]));
} else if (line.includes(' show exact ')) {
  if (json) console.log(JSON.stringify(s.route ? [s.route] : []));
  else if (s.route) console.log('203.0.113.9 dev ' + s.route.dev);
} else if (line.includes(' show table main match ')) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, s.slowMatchMs || 0);
  const main = [{ dst: 'default', gateway: '198.51.100.1', dev: 'eth2', metric: 200 }, { dst: '0.0.0.0/1', dev: 'dptcp-c' }];
  if (s.eth1) main.unshift({ dst: 'default', gateway: '192.0.2.1', dev: 'eth1', metric: 100 });
  console.log(JSON.stringify(main));
} else if (line.includes(' addr show to ')) {
  console.log(JSON.stringify([{ ifname: 'eth1' }]));
} else if (line.includes(' route replace 203.0.113.9/32 ')) {
  const dev = a[a.indexOf('dev') + 1];
  if (dev === 'eth1' && !s.eth1) fail('Error: Nexthop has invalid gateway.');
  s.route = { dst: '203.0.113.9', dev, ...(a.includes('via') ? { gateway: a[a.indexOf('via') + 1] } : {}) };
  save();
} else if (line.includes(' route del 203.0.113.9/32 ')) {
  s.route = undefined;
  save();
} else if (line.includes(' rule del ')) {
  process.exit(2);
}
`;
    writeFileSync(join(bin, 'ip'), program);
    chmodSync(join(bin, 'ip'), 0o755);
    const path = process.env['PATH'];
    process.env['PATH'] = bin;
    const get = (): Uplinks => JSON.parse(readFileSync(state, 'utf8')) as Uplinks;
    try {
      await f(
        (o) => writeFileSync(state, JSON.stringify({ ...get(), ...o })),
        get,
        () => readFileSync(log, 'utf8').split('\n').filter((l) => l !== ''),
      );
    } finally {
      process.env['PATH'] = path;
    }
  }

  const linkOf = (localAddress?: string): ClientConfig =>
    ({
      tunnel,
      routes: [{ family: 4, address: '0.0.0.0', prefix: 0 }],
      links: [{ id: 0, name: 'wan1', remoteAddress: '203.0.113.9', remotePort: 443, localAddress }],
    }) as unknown as ClientConfig;

  it("a link with a source address keeps to its own uplink: not moved onto another while it is down, back once it is up", async () => {
    await withUplinks(async (set, get) => {
      const net = new NetworkSetup(memoryLogger('debug'));
      net.setupClient(linkOf('192.0.2.50'), 'dptcp-c');
      assert.equal(get().route?.dev, 'eth1');
      // eth1 goes down and takes the route with it; the link redials.
      set({ eth1: false, route: undefined });
      await net.refreshLinkRoute(0);
      assert.equal(get().route, undefined, 'not onto eth2 with eth1\'s address: the dial fails on the unreachable route instead');
      set({ eth1: true });
      await net.refreshLinkRoute(0);
      assert.deepEqual(get().route, { dst: '203.0.113.9', dev: 'eth1', gateway: '192.0.2.1' }, 'back on eth1');
      net.teardown();
      assert.equal(get().route, undefined, 'removed at teardown');
    });
  });

  it('a link without a source address rides another uplink while its own is down, and goes back home once it is up', async () => {
    await withUplinks(async (set, get) => {
      const log = memoryLogger('debug');
      const net = new NetworkSetup(log);
      net.setupClient(linkOf(undefined), 'dptcp-c');
      assert.equal(get().route?.dev, 'eth1');
      set({ eth1: false, route: undefined });
      await net.refreshLinkRoute(0);
      assert.equal(get().route?.dev, 'eth2', 'the best main-table route outside the tunnel (its source address follows the route)');
      set({ eth1: true });
      await net.refreshLinkRoute(0);
      assert.equal(get().route?.dev, 'eth1', 'back on its own uplink');
      assert.match(log.lines.join('\n'), /link route back on its own path/);
      net.teardown();
      assert.equal(get().route, undefined, 'removed at teardown');
    });
  });

  it('a route check under way when the setup is torn down leaves no route behind', async () => {
    await withUplinks(async (set, get, calls) => {
      const net = new NetworkSetup(memoryLogger('debug'));
      net.setupClient(linkOf(undefined), 'dptcp-c');
      set({ eth1: false, route: undefined, slowMatchMs: 300 }); // the route went missing; the main-table look-up is slow
      const pending = net.refreshLinkRoute(0);
      await new Promise((r) => setTimeout(r, 100));
      net.teardown(); // SIGTERM while the redial's check runs
      const atTeardown = calls().length;
      await pending;
      assert.deepEqual(calls().slice(atTeardown).filter((c) => c.includes('route replace')), [], calls().join('\n'));
      assert.equal(get().route, undefined);
    });
  });
});
