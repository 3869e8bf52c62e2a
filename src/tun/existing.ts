// Is a network device of the configured TUN name already there? dp-tcp makes
// its own non-persistent device and the kernel removes it when the process
// exits. TUNSETIFF on the name of an existing TUN device attaches to that
// device instead of failing (a persistent one made by `ip tuntap add`, whose
// addresses would then be changed and left behind), and on a device of another
// kind it fails with a bare EINVAL. So the name is looked up before the
// device is opened, and an existing one is refused with what it is.
import { existsSync, readFileSync } from 'node:fs';
import { DpError } from '../errors.js';

/** IFF_TAP in tun_flags (linux/if_tun.h). */
const IFF_TAP = 0x0002;

export interface ExistingDevice {
  readonly name: string;
  /** 'tun'/'tap': a TUN/TAP device; 'other': any other kind; 'unknown': sysfs does not show it (mounted for another namespace). */
  readonly kind: 'tun' | 'tap' | 'other' | 'unknown';
  /** For 'other': the kernel's DEVTYPE (bridge, vlan, wlan, ...) when it has one. */
  readonly devtype?: string;
}

/**
 * The device names of this process's network namespace. /proc/net follows
 * the caller's namespace; /sys/class/net follows the namespace sysfs was
 * mounted in, which differs after `unshare -n` or `nsenter` without a remount.
 */
export function deviceNames(procNetDev = '/proc/net/dev'): Set<string> {
  const names = new Set<string>();
  let text: string;
  try {
    text = readFileSync(procNetDev, 'utf8');
  } catch {
    return names;
  }
  for (const line of text.split('\n').slice(2)) {
    const i = line.indexOf(':');
    if (i > 0) names.add(line.slice(0, i).trim());
  }
  return names;
}

/** The device of that name in this namespace, if there is one, and its kind. */
export function existingDevice(name: string, root = { procNetDev: '/proc/net/dev', sysClassNet: '/sys/class/net' }): ExistingDevice | undefined {
  if (!deviceNames(root.procNetDev).has(name)) return undefined;
  const dir = `${root.sysClassNet}/${name}`;
  if (!existsSync(dir)) return { name, kind: 'unknown' };
  try {
    const flags = Number(readFileSync(`${dir}/tun_flags`, 'utf8').trim());
    return { name, kind: (flags & IFF_TAP) !== 0 ? 'tap' : 'tun' };
  } catch {
    // Not a TUN/TAP device: only those have tun_flags.
  }
  let devtype: string | undefined;
  try {
    devtype = /^DEVTYPE=(.+)$/m.exec(readFileSync(`${dir}/uevent`, 'utf8'))?.[1];
  } catch {
    devtype = undefined;
  }
  return devtype === undefined ? { name, kind: 'other' } : { name, kind: 'other', devtype };
}

/**
 * One line for a name that is taken. `byDpTcp`: another dp-tcp in this
 * namespace serves its control socket under that name.
 */
export function nameTakenError(d: ExistingDevice, byDpTcp: boolean): DpError {
  const n = d.name;
  const fix = `choose another tunnel_device.name, or remove the device (ip link del ${n})`;
  let msg: string;
  if (byDpTcp) msg = `TUN device '${n}' already exists and is in use by another dp-tcp in this namespace (dp-tcp status shows it): choose another tunnel_device.name`;
  else if (d.kind === 'tun' || d.kind === 'tap') {
    msg =
      `${d.kind === 'tun' ? 'a TUN' : 'a TAP'} device named '${n}' already exists (a persistent one, e.g. from 'ip tuntap add', or another program's): ` +
      `dp-tcp makes its own device and leaves this one as it is; ${fix}`;
  } else if (d.kind === 'other') msg = `a network device named '${n}' already exists and is not a TUN device${d.devtype ? ` (it is a ${d.devtype})` : ''}: ${fix}`;
  else msg = `a network device named '${n}' already exists: ${fix}`;
  return new DpError('ERR_TUN', msg, { exitCode: 2 });
}
