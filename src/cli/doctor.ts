// `dp-tcp doctor`: can dp-tcp run on this machine? Needs no config. One line
// per check, `ok`, `warn` or `FAIL`, and for each problem what to do; exit 0
// when every required check passes (warnings allowed), else 1.
//
// Required: Node >= 20.9, the native addon loads, /dev/net/tun opens,
// CAP_NET_ADMIN, and a TUN device can be created (a test device, removed at
// once: the kernel deletes a non-persistent TUN when its file is closed, and
// when the process dies). Warnings: no TUN offload (IFF_VNET_HDR, TSO,
// checksum: then `tunnel_device.offload: false` on both sides), no `ip`
// (only a client with `routes:` uses it), no `iptables`/`ip6tables` (only a
// server with `nat_out_interface:` uses them), no way to run at the default
// `nice` (the tunnel then warns and runs at the priority it was started with).
import { execFileSync } from 'node:child_process';
import { accessSync, closeSync, constants as fsc, openSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { delimiter, join, relative } from 'node:path';
import { CAP_NET_ADMIN, CAP_SYS_NICE, hasCap } from '../capabilities.js';
import { DEFAULT_NICE } from '../config/types.js';
import { errorMessage, isSystemError } from '../errors.js';
import { loadAddonInfo, noAddonAdvice, packageRoot, type LoadedAddon } from '../tun/loader.js';
import { tunNodeMode } from '../tun/native-device.js';
import type { NativeAddon, NativeTun } from '../tun/native.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  /** What was found. */
  readonly detail: string;
  /** What to do about a warn or fail. */
  readonly fix?: string;
}

/** Everything doctor asks of the system, so tests can stand in for it. */
export interface DoctorSystem {
  nodeVersion: string;
  kernelRelease: string;
  uid: number;
  /** Text of /proc/self/status. */
  procStatus(): string;
  /** Text of /proc/self/limits. */
  procLimits(): string;
  loadAddon(): LoadedAddon;
  /** Opens and closes /dev/net/tun read-write; throws the system error. */
  openTunDevice(): { rdev: string };
  /** /dev/net/tun's mode and owner, as a message names them. */
  tunNodeMode(): string;
  /** Network device names of this namespace. */
  netDevices(): Set<string>;
  /** Absolute path of a command found in PATH, or undefined. */
  which(cmd: string): string | undefined;
  /** First line of `cmd -V` (ip and iptables both know it), or undefined when it does not run. */
  version(cmd: string): string | undefined;
  pid: number;
}

export const MIN_NODE = '20.9.0';

/**
 * The lowest nice value RLIMIT_NICE lets a process without CAP_SYS_NICE set
 * (20 minus the soft limit), from the text of /proc/self/limits; undefined
 * when the line is not there.
 */
export function niceFloor(limits: string): number | undefined {
  const m = /^Max nice priority\s+(\d+|unlimited)\s/m.exec(limits);
  if (!m) return undefined;
  return m[1] === 'unlimited' ? -20 : 20 - Math.min(40, Number(m[1]));
}

/** a >= b for dotted versions ("v" prefix allowed). */
export function versionAtLeast(a: string, b: string): boolean {
  const pa = a.replace(/^v/, '').split('.').map((x) => parseInt(x, 10) || 0);
  const pb = b.replace(/^v/, '').split('.').map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

/** Looks a command up in PATH as execFile does. */
export function findInPath(cmd: string, path: string = process.env['PATH'] ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, fsc.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Device names in /proc/net/dev (this process's network namespace). */
export function procNetDevices(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n').slice(2)) {
    const i = line.indexOf(':');
    if (i > 0) names.add(line.slice(0, i).trim());
  }
  return names;
}

export function realSystem(): DoctorSystem {
  return {
    nodeVersion: process.versions.node,
    kernelRelease: release(),
    uid: process.getuid?.() ?? -1,
    procStatus: () => readFileSync('/proc/self/status', 'utf8'),
    procLimits: () => readFileSync('/proc/self/limits', 'utf8'),
    loadAddon: loadAddonInfo,
    openTunDevice: () => {
      const st = statSync('/dev/net/tun');
      if (!st.isCharacterDevice()) throw Object.assign(new Error('/dev/net/tun is not a character device'), { code: 'ENOTCHR' });
      closeSync(openSync('/dev/net/tun', fsc.O_RDWR));
      return { rdev: `${Math.floor(st.rdev / 256)},${st.rdev % 256}` };
    },
    tunNodeMode,
    netDevices: () => {
      try {
        return procNetDevices(readFileSync('/proc/net/dev', 'utf8'));
      } catch {
        return new Set();
      }
    },
    which: (cmd) => findInPath(cmd),
    version: (cmd) => {
      try {
        return execFileSync(cmd, ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).split('\n')[0]?.trim();
      } catch {
        return undefined;
      }
    },
    pid: process.pid,
  };
}

function checkNode(sys: DoctorSystem): CheckResult {
  const v = `v${sys.nodeVersion}`;
  if (versionAtLeast(sys.nodeVersion, MIN_NODE)) return { name: 'node', status: 'ok', detail: `${v} (needs ${MIN_NODE} or newer)` };
  return { name: 'node', status: 'fail', detail: `${v} is too old`, fix: `install Node.js ${MIN_NODE} or newer (20 LTS or later)` };
}

function checkAddon(sys: DoctorSystem): { result: CheckResult; addon?: NativeAddon } {
  try {
    const a = sys.loadAddon();
    const rel = relative(packageRoot(), a.path);
    const shown = rel.startsWith('..') ? a.path : rel;
    const what =
      a.source === 'prebuilt'
        ? `prebuilt for ${process.platform}-${process.arch}`
        : a.source === 'local build'
          ? 'built on this machine'
          : 'from $DPTCP_ADDON';
    return { result: { name: 'addon', status: 'ok', detail: `loads: ${what} (${shown})` }, addon: a.addon };
  } catch (e) {
    const lines = errorMessage(e).split('\n');
    const tried = lines
      .slice(1)
      .map((l) => l.trim())
      .join('; ');
    return {
      result: { name: 'addon', status: 'fail', detail: `does not load${tried ? ` (${tried})` : `: ${lines[0]}`}`, fix: noAddonAdvice() },
    };
  }
}

function checkTunDevice(sys: DoctorSystem): CheckResult {
  try {
    const { rdev } = sys.openTunDevice();
    return { name: '/dev/net/tun', status: 'ok', detail: `character device ${rdev}, opens read-write` };
  } catch (e) {
    const code = isSystemError(e) ? e.code : undefined;
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO') {
      return {
        name: '/dev/net/tun',
        status: 'fail',
        detail: `missing (${code})`,
        fix: 'load the tun module (modprobe tun); in a container, pass the device in (docker run --device /dev/net/tun --cap-add NET_ADMIN)',
      };
    }
    if (code === 'EACCES') {
      return {
        name: '/dev/net/tun',
        status: 'fail',
        detail: `cannot be opened (EACCES; ${sys.tunNodeMode()})`,
        fix: 'run dp-tcp as root, or let this user open the device (udev makes it mode 0666); where its mode already lets the user in, a nodev mount or a security module such as SELinux refuses it',
      };
    }
    if (code === 'EPERM') {
      return {
        name: '/dev/net/tun',
        status: 'fail',
        detail: 'cannot be opened (EPERM: a device cgroup refuses it)',
        fix: 'allow the device (systemd: DeviceAllow=/dev/net/tun rw, as the units in packaging/systemd do; a container: --device /dev/net/tun)',
      };
    }
    return { name: '/dev/net/tun', status: 'fail', detail: errorMessage(e), fix: 'it must be the TUN character device 10,200 (mknod /dev/net/tun c 10 200)' };
  }
}

function checkPrivileges(sys: DoctorSystem): CheckResult {
  let status: string;
  try {
    status = sys.procStatus();
  } catch (e) {
    return { name: 'privileges', status: 'warn', detail: `cannot read /proc/self/status: ${errorMessage(e)}`, fix: 'mount /proc' };
  }
  const who = sys.uid === 0 ? 'root' : `uid ${sys.uid}`;
  if (hasCap(status, CAP_NET_ADMIN)) return { name: 'privileges', status: 'ok', detail: `${who}, with CAP_NET_ADMIN` };
  return {
    name: 'privileges',
    status: 'fail',
    detail: `${who}, without CAP_NET_ADMIN (needed for the TUN device, its addresses and routes)`,
    fix:
      sys.uid === 0
        ? 'this root has no CAP_NET_ADMIN (a container? run it with --cap-add NET_ADMIN)'
        : 'run dp-tcp as root (sudo dp-tcp ...), or with the capability as the systemd units give it (AmbientCapabilities=CAP_NET_ADMIN)',
  };
}

/**
 * Whether the tunnel may run at the default `nice` (src/cli/priority.ts): a
 * warning, as the tunnel only warns. CapEff is read as the kernel shows it: in
 * a user namespace (a rootless container) the bit may be set while the kernel
 * checks it against the initial namespace, and the tunnel's setpriority fails
 * (it then warns).
 */
function checkPriority(sys: DoctorSystem): CheckResult {
  const name = 'priority';
  try {
    if (hasCap(sys.procStatus(), CAP_SYS_NICE)) return { name, status: 'ok', detail: `can run at nice ${DEFAULT_NICE} (the default \`nice\`): CAP_SYS_NICE` };
  } catch {
    // Said by the privileges check.
  }
  let floor: number | undefined;
  try {
    floor = niceFloor(sys.procLimits());
  } catch {
    floor = undefined;
  }
  if (floor !== undefined && floor <= DEFAULT_NICE) {
    return { name, status: 'ok', detail: `can run at nice ${DEFAULT_NICE} (the default \`nice\`): RLIMIT_NICE allows down to ${floor}` };
  }
  const limit =
    floor === undefined ? 'no RLIMIT_NICE in /proc/self/limits' : floor >= 0 ? 'RLIMIT_NICE lets it lower no nice value' : `RLIMIT_NICE allows down to ${floor}`;
  return {
    name,
    status: 'warn',
    detail:
      `cannot run at nice ${DEFAULT_NICE} (the default \`nice\`; no CAP_SYS_NICE, ${limit}): ` +
      'under CPU load its packets would wait for the time slices of the transfers they carry',
    fix:
      sys.uid === 0
        ? 'this root has no CAP_SYS_NICE (a container? run it with --cap-add SYS_NICE), or set `nice: 0` to keep the priority it is started with'
        : 'run it as root, or with LimitNICE=-20 as the systemd units set (or CAP_SYS_NICE), or set `nice: 0` to keep the priority it is started with',
  };
}

/** A name no device has: the test device must not attach to someone's persistent TUN. */
function freeName(sys: DoctorSystem): string {
  const taken = sys.netDevices();
  for (let i = 0; ; i++) {
    const name = `dpdoc${sys.pid % 1_000_000}${i === 0 ? '' : `-${i}`}`.slice(0, 15);
    if (!taken.has(name)) return name;
  }
}

function errCode(e: unknown): string {
  return isSystemError(e) ? `${e.code}${e.syscall ? ` in ${e.syscall}` : ''}` : errorMessage(e);
}

/**
 * Creates a test TUN device with IFF_VNET_HDR and the offloads dp-tcp turns
 * on, then closes it (the kernel removes it). Falls back to a plain device to
 * tell "no TUN at all" from "no offload".
 */
function checkTunCreate(sys: DoctorSystem, addon: NativeAddon): CheckResult[] {
  const kernel = `kernel ${sys.kernelRelease}`;
  const c = addon.constants;
  const name = freeName(sys);
  const open = (vnet: boolean, use: (t: NativeTun) => string): string => {
    const t = new addon.Tun(name, vnet);
    try {
      return use(t);
    } finally {
      t.close();
    }
  };
  const left = (): CheckResult[] =>
    sys.netDevices().has(name)
      ? [{ name: 'cleanup', status: 'fail', detail: `the test device ${name} is still there`, fix: `remove it: ip link del ${name}` }]
      : [];
  try {
    const offloads = open(true, (t) => {
      const base = c.TUN_F_CSUM | c.TUN_F_TSO4 | c.TUN_F_TSO6;
      try {
        t.setOffload(base | c.TUN_F_USO4 | c.TUN_F_USO6);
        return 'checksum, TSO and USO';
      } catch (e) {
        if (!isSystemError(e) || e.code !== 'EINVAL') throw e;
        t.setOffload(base);
        return 'checksum and TSO (no UDP segmentation offload: that needs kernel 6.2 or newer)';
      }
    });
    return [
      { name: 'tun device', status: 'ok', detail: `created a test device (${name}) and removed it` },
      { name: 'tun offload', status: 'ok', detail: `IFF_VNET_HDR with ${offloads}; ${kernel}` },
      ...left(),
    ];
  } catch (offloadErr) {
    try {
      open(false, () => '');
    } catch (e) {
      return [
        {
          name: 'tun device',
          status: 'fail',
          detail: `creating a test device failed (${errCode(e)}); ${kernel}`,
          fix: 'the kernel needs TUN support (CONFIG_TUN); in a container, --device /dev/net/tun --cap-add NET_ADMIN',
        },
        ...left(),
      ];
    }
    return [
      { name: 'tun device', status: 'ok', detail: `created a test device (${name}) and removed it` },
      {
        name: 'tun offload',
        status: 'warn',
        detail: `no TUN offload (${errCode(offloadErr)}); ${kernel}`,
        fix: 'set tunnel_device.offload: false on both sides (the default, true, will not start here)',
      },
      ...left(),
    ];
  }
}

function checkTool(sys: DoctorSystem, cmd: string, pkg: string, usedFor: string): CheckResult {
  const path = sys.which(cmd);
  if (path === undefined) {
    return { name: cmd, status: 'warn', detail: `not found in PATH (${usedFor})`, fix: `install it (Debian/Ubuntu: apt-get install ${pkg})` };
  }
  const v = sys.version(cmd);
  if (v === undefined) return { name: cmd, status: 'warn', detail: `${path} does not run (${cmd} -V failed; ${usedFor})`, fix: `reinstall ${pkg}` };
  return { name: cmd, status: 'ok', detail: `${path} (${v})` };
}

/** Runs every check; never creates anything that outlives it. */
export function runChecks(sys: DoctorSystem = realSystem()): CheckResult[] {
  const results: CheckResult[] = [checkNode(sys)];
  const addon = checkAddon(sys);
  results.push(addon.result);
  const dev = checkTunDevice(sys);
  results.push(dev);
  const priv = checkPrivileges(sys);
  results.push(priv);
  const blockers = [addon.result, dev, priv].filter((r) => r.status === 'fail').map((r) => r.name);
  if (addon.addon === undefined || blockers.length > 0) {
    results.push({ name: 'tun device', status: 'skip', detail: `not tried: ${blockers.join(', ')} failed` });
  } else {
    results.push(...checkTunCreate(sys, addon.addon));
  }
  results.push(checkPriority(sys));
  results.push(checkTool(sys, 'ip', 'iproute2', 'a client with routes: uses it'));
  results.push(checkTool(sys, 'iptables', 'iptables', 'a server with nat_out_interface: uses it'));
  results.push(checkTool(sys, 'ip6tables', 'iptables', 'a server with nat_out_interface: and an IPv6 tunnel address uses it'));
  return results;
}

const TAG: Record<CheckStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' };

export function formatResults(results: readonly CheckResult[]): string[] {
  const w = Math.max(...results.map((r) => r.name.length));
  const lines = results.map((r) => `${TAG[r.status].padEnd(4)}  ${r.name.padEnd(w)}  ${r.detail}${r.fix ? `; to fix: ${r.fix}` : ''}`);
  const fails = results.filter((r) => r.status === 'fail').length;
  const warns = results.filter((r) => r.status === 'warn').length;
  const w8 = warns === 0 ? '' : ` (${warns} warning${warns === 1 ? '' : 's'})`;
  lines.push(
    fails === 0
      ? `dp-tcp doctor: ready: every required check passed${w8}`
      : `dp-tcp doctor: not ready: ${fails} required check${fails === 1 ? '' : 's'} failed${w8}`,
  );
  return lines;
}

/** 0 when no required check failed. */
export function exitCodeFor(results: readonly CheckResult[]): 0 | 1 {
  return results.some((r) => r.status === 'fail') ? 1 : 0;
}

/** The command: prints the checks, returns the exit code. */
export function doctor(sys: DoctorSystem = realSystem()): 0 | 1 {
  const results = runChecks(sys);
  process.stdout.write(formatResults(results).join('\n') + '\n');
  return exitCodeFor(results);
}
