// `dp-tcp doctor`'s decisions, on a stand-in system: which checks are required
// (exit 1) and which only warn, what it says to do, that the test TUN device is
// always closed and never takes a name in use; and the addon loader's order.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { capEff, CAP_NET_ADMIN, CAP_SYS_NICE, hasCap } from '../../src/capabilities.js';
import {
  exitCodeFor,
  findInPath,
  formatResults,
  niceFloor,
  procNetDevices,
  runChecks,
  versionAtLeast,
  type CheckResult,
  type DoctorSystem,
} from '../../src/cli/doctor.js';
import { addonCandidates, isCheckout, noAddonAdvice, prebuildPath } from '../../src/tun/loader.js';
import type { NativeAddon } from '../../src/tun/native.js';

const ROOT_STATUS = 'Name:\tnode\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n';
const USER_STATUS = 'Name:\tnode\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n';

interface FakeTunLog {
  opened: Array<{ name: string; vnet: boolean }>;
  closed: string[];
  offloads: number[];
}

const CONSTANTS = {
  SOL_SOCKET: 1,
  IPPROTO_TCP: 6,
  TCP_NOTSENT_LOWAT: 25,
  TCP_USER_TIMEOUT: 18,
  SO_SNDBUF: 7,
  EAGAIN: 11,
  TUN_F_CSUM: 0x01,
  TUN_F_TSO4: 0x02,
  TUN_F_TSO6: 0x04,
  TUN_F_USO4: 0x20,
  TUN_F_USO6: 0x40,
  VIRTIO_NET_HDR_BYTES: 10,
};

function sysErr(code: string, syscall = 'ioctl'): Error {
  return Object.assign(new Error(`${syscall}: ${code}`), { code, syscall });
}

/** An addon whose Tun fails as told; every device opened is logged, and its close. */
function fakeAddon(log: FakeTunLog, opts: { vnetFails?: string; plainFails?: string; uso?: boolean } = {}): NativeAddon {
  class Tun {
    readonly name: string;
    readonly fd = 3;
    readonly lastErrno = 0;
    readonly readDiscards = 0;
    constructor(name: string, vnet = false) {
      if (vnet && opts.vnetFails) throw sysErr(opts.vnetFails);
      if (opts.plainFails) throw sysErr(opts.plainFails);
      this.name = name;
      log.opened.push({ name, vnet });
    }
    setOffload(flags: number): void {
      if (!opts.uso && (flags & CONSTANTS.TUN_F_USO4) !== 0) throw sysErr('EINVAL');
      log.offloads.push(flags);
    }
    close(): void {
      log.closed.push(this.name);
    }
  }
  return { Tun, setsockoptInt: () => undefined, constants: CONSTANTS } as unknown as NativeAddon;
}

/** /proc/self/limits with this soft and hard RLIMIT_NICE. */
function limitsText(nice: string): string {
  return (
    'Limit                     Soft Limit           Hard Limit           Units     \n' +
    'Max open files            1024                 524288               files     \n' +
    `Max nice priority         ${nice.padEnd(20)} ${nice.padEnd(20)} \n` +
    'Max realtime priority     0                    0                    \n'
  );
}

function system(over: Partial<DoctorSystem> & { addon?: NativeAddon } = {}): DoctorSystem {
  const addon = over.addon;
  return {
    nodeVersion: '20.20.2',
    kernelRelease: '6.1.0-test',
    uid: 0,
    procStatus: () => ROOT_STATUS,
    procLimits: () => limitsText('0'),
    loadAddon: () => {
      if (!addon) throw new Error('cannot load the dp-tcp native addon: x; tried:\n  /a/build/Release/dptcp.node: not there');
      return { addon, path: join(process.cwd(), 'prebuilds', 'linux-x64', 'dptcp.glibc.node'), source: 'prebuilt' };
    },
    openTunDevice: () => ({ rdev: '10,200' }),
    tunNodeMode: () => 'mode 0600, owner uid 0 gid 0',
    netDevices: () => new Set(['lo', 'eth0']),
    which: (cmd) => `/usr/sbin/${cmd}`,
    version: (cmd) => `${cmd} v1`,
    pid: 4242,
    ...over,
  };
}

function byName(results: CheckResult[], name: string): CheckResult {
  const r = results.find((x) => x.name === name);
  assert.ok(r, `a check named ${name} in ${results.map((x) => x.name).join(', ')}`);
  return r;
}

function newLog(): FakeTunLog {
  return { opened: [], closed: [], offloads: [] };
}

describe('doctor', () => {
  it('passes on a ready machine, with a test device opened with IFF_VNET_HDR and closed', () => {
    const log = newLog();
    const r = runChecks(system({ addon: fakeAddon(log, { uso: true }) }));
    assert.equal(exitCodeFor(r), 0, formatResults(r).join('\n'));
    assert.ok(r.every((x) => x.status === 'ok'), formatResults(r).join('\n'));
    assert.deepEqual(log.opened, [{ name: 'dpdoc4242', vnet: true }], 'one test device, with the virtio header');
    assert.deepEqual(log.closed, ['dpdoc4242'], 'and it is closed');
    assert.match(byName(r, 'tun offload').detail, /TSO and USO/, 'USO reported');
    assert.match(byName(r, 'addon').detail, /prebuilt for/, 'says which addon loaded');
    assert.match(formatResults(r).at(-1) ?? '', /ready: every required check passed$/, 'summary line');
  });

  it('reports TSO without USO on an older kernel, still ok', () => {
    const log = newLog();
    const r = runChecks(system({ addon: fakeAddon(log, { uso: false }) }));
    assert.equal(exitCodeFor(r), 0, formatResults(r).join('\n'));
    assert.match(byName(r, 'tun offload').detail, /no UDP segmentation offload/, 'says USO is missing');
    assert.deepEqual(log.offloads, [0x07], 'fell back to csum+TSO');
  });

  it('a TUN without offload is a warning, with the config change to make', () => {
    const log = newLog();
    const r = runChecks(system({ addon: fakeAddon(log, { vnetFails: 'EINVAL' }) }));
    assert.equal(exitCodeFor(r), 0, formatResults(r).join('\n'));
    const off = byName(r, 'tun offload');
    assert.equal(off.status, 'warn', 'warn');
    assert.match(off.fix ?? '', /offload: false/, 'names the setting');
    assert.deepEqual(log.opened, [{ name: 'dpdoc4242', vnet: false }], 'the plain device was tried');
    assert.deepEqual(log.closed, ['dpdoc4242'], 'and closed');
  });

  it('no TUN at all fails', () => {
    const r = runChecks(system({ addon: fakeAddon(newLog(), { plainFails: 'EPERM' }) }));
    assert.equal(exitCodeFor(r), 1, formatResults(r).join('\n'));
    assert.equal(byName(r, 'tun device').status, 'fail', 'fail');
  });

  it('an addon that does not load fails with what to do, and skips the device test', () => {
    const r = runChecks(system());
    assert.equal(exitCodeFor(r), 1, formatResults(r).join('\n'));
    const a = byName(r, 'addon');
    assert.equal(a.status, 'fail', 'fail');
    assert.match(a.detail, /not there/, 'lists what was tried');
    assert.ok(a.fix, 'says what to do');
    assert.equal(byName(r, 'tun device').status, 'skip', 'device test skipped');
  });

  it('without CAP_NET_ADMIN: fails, says to use root or the capability, opens nothing', () => {
    const log = newLog();
    const r = runChecks(system({ addon: fakeAddon(log), uid: 1000, procStatus: () => USER_STATUS }));
    assert.equal(exitCodeFor(r), 1, formatResults(r).join('\n'));
    const p = byName(r, 'privileges');
    assert.equal(p.status, 'fail', 'fail');
    assert.match(p.fix ?? '', /root|CAP_NET_ADMIN/, 'what to do');
    assert.deepEqual(log.opened, [], 'no device tried');
  });

  it('root without CAP_NET_ADMIN (a container) is told about --cap-add', () => {
    const r = runChecks(system({ addon: fakeAddon(newLog()), procStatus: () => 'CapEff:\t00000000a80425fb\n' }));
    assert.match(byName(r, 'privileges').fix ?? '', /cap-add NET_ADMIN/, 'container hint');
  });

  it('priority: ok with CAP_SYS_NICE or an RLIMIT_NICE down to the default nice; otherwise a warning with the remedy', () => {
    const root = byName(runChecks(system({ addon: fakeAddon(newLog()) })), 'priority');
    assert.equal(root.status, 'ok', 'root');
    assert.match(root.detail, /: CAP_SYS_NICE$/);
    // Without CAP_SYS_NICE (CapEff without bit 23) but with CAP_NET_ADMIN, as the systemd units run it.
    const unit = 'CapEff:\t0000000000001000\n';
    assert.equal(hasCap(unit, CAP_SYS_NICE), false);
    const limited = runChecks(system({ addon: fakeAddon(newLog()), uid: 999, procStatus: () => unit, procLimits: () => limitsText('40') }));
    assert.equal(byName(limited, 'priority').status, 'ok', 'LimitNICE=-20');
    assert.match(byName(limited, 'priority').detail, /RLIMIT_NICE allows down to -20/);
    const plain = runChecks(system({ addon: fakeAddon(newLog()), uid: 999, procStatus: () => unit, procLimits: () => limitsText('0') }));
    const p = byName(plain, 'priority');
    assert.equal(p.status, 'warn', formatResults(plain).join('\n'));
    assert.match(p.detail, /cannot run at nice -15 .*RLIMIT_NICE lets it lower no nice value/);
    assert.match(p.fix ?? '', /LimitNICE=-20 as the systemd units set.*nice: 0/);
    assert.equal(exitCodeFor(plain), 0, 'a warning: the tunnel runs anyway');
    const notEnough = runChecks(system({ addon: fakeAddon(newLog()), uid: 999, procStatus: () => unit, procLimits: () => limitsText('30') }));
    assert.equal(byName(notEnough, 'priority').status, 'warn', 'LimitNICE=-10 is not -15');
    assert.match(byName(notEnough, 'priority').detail, /RLIMIT_NICE allows down to -10/);
    // Root in a container without CAP_SYS_NICE: told about --cap-add, not to be root.
    const container = byName(runChecks(system({ addon: fakeAddon(newLog()), procStatus: () => unit })), 'priority');
    assert.equal(container.status, 'warn');
    assert.match(container.fix ?? '', /--cap-add SYS_NICE/);
    // Nothing readable: a warning, never a throw.
    const unreadable = runChecks(
      system({
        addon: fakeAddon(newLog()),
        uid: 999,
        procStatus: () => {
          throw new Error('EACCES');
        },
        procLimits: () => {
          throw new Error('EACCES');
        },
      }),
    );
    assert.match(byName(unreadable, 'priority').detail, /no RLIMIT_NICE in \/proc\/self\/limits/);
  });

  it('niceFloor reads RLIMIT_NICE from /proc/self/limits', () => {
    assert.equal(niceFloor(limitsText('0')), 20);
    assert.equal(niceFloor(limitsText('35')), -15);
    assert.equal(niceFloor(limitsText('unlimited')), -20);
    assert.equal(niceFloor('Limit Soft Hard\nMax open files 1 1 files\n'), undefined);
  });

  it('a missing /dev/net/tun fails with modprobe', () => {
    const r = runChecks(
      system({
        addon: fakeAddon(newLog()),
        openTunDevice: () => {
          throw sysErr('ENOENT', 'open');
        },
      }),
    );
    assert.equal(exitCodeFor(r), 1, formatResults(r).join('\n'));
    assert.match(byName(r, '/dev/net/tun').fix ?? '', /modprobe tun/, 'modprobe');
  });

  it('/dev/net/tun refused: EACCES is about who may open the node, EPERM about a device cgroup', () => {
    const refused = (code: string): CheckResult =>
      byName(
        runChecks(
          system({
            addon: fakeAddon(newLog()),
            openTunDevice: () => {
              throw sysErr(code, 'open');
            },
          }),
        ),
        '/dev/net/tun',
      );
    const acces = refused('EACCES');
    assert.equal(acces.status, 'fail');
    assert.equal(acces.detail, 'cannot be opened (EACCES; mode 0600, owner uid 0 gid 0)');
    assert.match(acces.fix ?? '', /run dp-tcp as root, or let this user open the device/);
    assert.doesNotMatch(acces.fix ?? '', /DeviceAllow/);
    const perm = refused('EPERM');
    assert.equal(perm.status, 'fail');
    assert.match(perm.detail, /device cgroup/);
    assert.match(perm.fix ?? '', /DeviceAllow=\/dev\/net\/tun rw/);
  });

  it('missing ip and iptables are warnings, not failures', () => {
    const r = runChecks(system({ addon: fakeAddon(newLog(), { uso: true }), which: () => undefined }));
    assert.equal(exitCodeFor(r), 0, formatResults(r).join('\n'));
    for (const n of ['ip', 'iptables', 'ip6tables']) assert.equal(byName(r, n).status, 'warn', `${n} warns`);
    assert.match(formatResults(r).at(-1) ?? '', /\(3 warnings\)/, 'counted');
  });

  it('the test device never takes a name in use', () => {
    const log = newLog();
    const r = runChecks(system({ addon: fakeAddon(log, { uso: true }), netDevices: () => new Set(['lo', 'dpdoc4242']) }));
    assert.deepEqual(log.opened.map((o) => o.name), ['dpdoc4242-1'], 'skipped the taken name');
    assert.equal(exitCodeFor(r), 0, formatResults(r).join('\n'));
  });

  it('a test device still there after its close fails, with the command that removes it', () => {
    let calls = 0;
    // First read: before the device is made (free name); second: after its close.
    const netDevices = (): Set<string> => (++calls === 1 ? new Set(['lo']) : new Set(['lo', 'dpdoc4242']));
    const r = runChecks(system({ addon: fakeAddon(newLog(), { uso: true }), netDevices }));
    assert.equal(exitCodeFor(r), 1, formatResults(r).join('\n'));
    assert.match(byName(r, 'cleanup').fix ?? '', /ip link del dpdoc4242/, 'how to remove it');
  });

  it('old Node fails', () => {
    const r = runChecks(system({ addon: fakeAddon(newLog(), { uso: true }), nodeVersion: '20.8.1' }));
    assert.equal(byName(r, 'node').status, 'fail', 'fail');
    assert.equal(exitCodeFor(r), 1, 'exit 1');
  });
});

describe('doctor helpers', () => {
  it('versionAtLeast', () => {
    assert.equal(versionAtLeast('20.9.0', '20.9.0'), true, 'equal');
    assert.equal(versionAtLeast('v22.1.0', '20.9.0'), true, 'newer major');
    assert.equal(versionAtLeast('20.10.0', '20.9.0'), true, 'minor 10 > 9');
    assert.equal(versionAtLeast('20.8.9', '20.9.0'), false, 'older');
  });

  it('reads CapEff and its CAP_NET_ADMIN bit', () => {
    assert.equal(capEff(ROOT_STATUS), 0x1ffffffffffn, 'parsed');
    assert.equal(hasCap(ROOT_STATUS, CAP_NET_ADMIN), true, 'root has it');
    assert.equal(hasCap(USER_STATUS, CAP_NET_ADMIN), false, 'user has not');
    assert.equal(hasCap('CapEff:\t0000000000001000\n', CAP_NET_ADMIN), true, 'bit 12 alone');
    assert.equal(hasCap('Name: x\n', CAP_NET_ADMIN), false, 'no line: no capability');
  });

  it('parses /proc/net/dev', () => {
    const text = 'Inter-|   Receive\n face |bytes\n    lo: 1 2 3\n  eth0: 4 5 6\ndptcp-s: 0 0\n';
    assert.deepEqual([...procNetDevices(text)], ['lo', 'eth0', 'dptcp-s'], 'names');
  });

  it('finds commands in PATH', () => {
    assert.equal(findInPath('node', `/nonexistent:${join(process.execPath, '..')}`), process.execPath, 'node found');
    assert.equal(findInPath('no-such-command-dptcp', '/usr/bin:/bin'), undefined, 'missing');
  });
});

describe('addon loader', () => {
  it('tries $DPTCP_ADDON, then the local build, then the prebuild for this platform', () => {
    const c = addonCandidates('/pkg', { DPTCP_ADDON: '/x/a.node' });
    assert.deepEqual(
      c.map((x) => [x.path, x.source]),
      [
        ['/x/a.node', 'DPTCP_ADDON'],
        ['/pkg/build/Release/dptcp.node', 'local build'],
        [join('/pkg', prebuildPath()), 'prebuilt'],
      ],
      'order',
    );
    assert.equal(prebuildPath('linux', 'arm64'), join('prebuilds', 'linux-arm64', 'dptcp.glibc.node'), 'node-gyp-build naming');
  });

  it('knows the checkout from an installed package', () => {
    assert.equal(isCheckout(new URL('../../', import.meta.url).pathname), true, 'this is the checkout');
    assert.equal(isCheckout('/nonexistent'), false, 'a package has no src/');
  });

  it('tells an installed package to rebuild, never to run npm run build', () => {
    const advice = noAddonAdvice('/nonexistent');
    assert.doesNotMatch(advice, /npm run build/, `no npm run build in: ${advice}`);
    assert.match(advice, /npm rebuild dp-tcp/, `npm rebuild in: ${advice}`);
    assert.match(noAddonAdvice(new URL('../../', import.meta.url).pathname), /npm run build:native/, 'a checkout builds it');
  });
});
