// What the user is told when the TUN device cannot be made: opening the device
// node and creating the interface are refused for different reasons, each
// with its own remedy.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DpError } from '../../src/errors.js';
import { describeOpenError, modePermitsReadWrite, type OpenErrorContext, type Opener } from '../../src/tun/native-device.js';

const systemError = (code: string, syscall: string): Error => Object.assign(new Error(`${syscall} failed`), { code, syscall });

function ctx(netAdmin: boolean | undefined, modeAllows = false, root = false): OpenErrorContext {
  return {
    mode: () => (modeAllows ? 'mode 0666, owner uid 0 gid 0' : 'mode 0600, owner uid 0 gid 0'),
    modeAllows: () => modeAllows,
    netAdmin: () => netAdmin,
    root: () => root,
  };
}

describe('describeOpenError', () => {
  it('open refused by the permission bits, with CAP_NET_ADMIN: names the device and its mode, not the capability', () => {
    const e = describeOpenError(systemError('EACCES', 'open'), 'dptcp0', ctx(true));
    assert.ok(e instanceof DpError);
    assert.equal(e.exitCode, 2);
    assert.equal(e.code, 'ERR_PRIVILEGE');
    assert.match(e.message, /may not open \/dev\/net\/tun \(EACCES; the device is mode 0600, owner uid 0 gid 0\): run dp-tcp as root/);
    assert.match(e.message, /udev makes it mode 0666/);
    assert.doesNotMatch(e.message, /CAP_NET_ADMIN/);
  });

  it('open refused although the bits allow it: a nodev mount or a security module, no chmod advice', () => {
    const e = describeOpenError(systemError('EACCES', 'open'), 'dptcp0', ctx(true, true));
    assert.match(e.message, /the device is mode 0666.*not its permission bits: a nodev mount or a security module/);
    assert.doesNotMatch(e.message, /udev makes it/);
  });

  it('without CAP_NET_ADMIN the capability comes first, whatever refused', () => {
    for (const [code, syscall] of [['EACCES', 'open'], ['EPERM', 'open'], ['EPERM', 'ioctl(TUNSETIFF)']] as const) {
      const e = describeOpenError(systemError(code, syscall), 'dptcp0', ctx(false));
      assert.match(e.message, /creating TUN device 'dptcp0' needs CAP_NET_ADMIN: run dp-tcp as root/, `${code} at ${syscall}`);
      assert.doesNotMatch(e.message, /--cap-add/, 'not root: no container hint');
      assert.equal(e.exitCode, 2);
    }
    // A root without the capability: a container started without it.
    assert.match(describeOpenError(systemError('EPERM', 'ioctl(TUNSETIFF)'), 'dptcp0', ctx(false, false, true)).message, /this root lacks it: in a container, --cap-add NET_ADMIN/);
  });

  it('open refused by a device cgroup (EPERM): points at DeviceAllow, not the mode', () => {
    const e = describeOpenError(systemError('EPERM', 'open'), 'dptcp0', { ...ctx(true), mode: () => assert.fail('the mode is not the reason') });
    assert.match(e.message, /opening \/dev\/net\/tun is not permitted \(EPERM: a device cgroup refuses it\)/);
    assert.match(e.message, /DeviceAllow=\/dev\/net\/tun rw/);
  });

  it('TUNSETIFF: EPERM asks for CAP_NET_ADMIN; EACCES with the capability is a security module', () => {
    assert.match(describeOpenError(systemError('EPERM', 'ioctl(TUNSETIFF)'), 'dptcp0', ctx(undefined)).message, /needs CAP_NET_ADMIN/);
    assert.match(describeOpenError(systemError('EACCES', 'ioctl(TUNSETIFF)'), 'dptcp0', ctx(true)).message, /refused \(EACCES\) with CAP_NET_ADMIN: a security module/);
  });

  it('a missing device asks for the module; a busy name says so', () => {
    assert.match(describeOpenError(systemError('ENOENT', 'open'), 'x', ctx(true)).message, /modprobe tun/);
    assert.match(describeOpenError(systemError('EBUSY', 'ioctl(TUNSETIFF)'), 'x', ctx(true)).message, /already exists and is in use/);
  });
});

describe('modePermitsReadWrite', () => {
  const who = (o: Partial<Opener> = {}): Opener => ({ euid: 65534, egid: 65534, groups: [], dacOverride: false, ...o });
  const node = (mode: number, uid = 0, gid = 0): { mode: number; uid: number; gid: number } => ({ mode: 0o20000 | mode, uid, gid });

  it('owner, group, others: each by its own bits', () => {
    assert.equal(modePermitsReadWrite(node(0o600), who()), false, 'others of 0600');
    assert.equal(modePermitsReadWrite(node(0o666), who()), true, 'others of 0666');
    assert.equal(modePermitsReadWrite(node(0o600, 65534), who()), true, 'the owner of 0600');
    assert.equal(modePermitsReadWrite(node(0o066, 65534), who()), false, 'the owner of 0066: its own bits, not the others');
    assert.equal(modePermitsReadWrite(node(0o660, 0, 44), who({ groups: [44] })), true, 'a supplementary member of the group of 0660');
    assert.equal(modePermitsReadWrite(node(0o660, 0, 44), who({ egid: 44 })), true, 'the effective group of 0660');
    assert.equal(modePermitsReadWrite(node(0o606, 0, 44), who({ groups: [44] })), false, 'a member of the group of 0606: the group bits, not the others');
    assert.equal(modePermitsReadWrite(node(0o640), who({ euid: 0, egid: 0 })), true, 'root as owner with rw');
    assert.equal(modePermitsReadWrite(node(0o400), who({ euid: 0 })), false, 'root without CAP_DAC_OVERRIDE is held to the bits');
  });

  it('CAP_DAC_OVERRIDE passes whatever the bits', () => {
    assert.equal(modePermitsReadWrite(node(0o000), who({ dacOverride: true })), true);
  });
});
