// What the user is told when the TUN device cannot be made: opening the device
// node and creating the interface are refused for different reasons.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DpError } from '../../src/errors.js';
import { describeOpenError } from '../../src/tun/native-device.js';

const systemError = (code: string, syscall: string): Error => Object.assign(new Error(`${syscall} failed`), { code, syscall });

describe('describeOpenError', () => {
  it('open refused by the device node permissions (EACCES): names the device and its mode, not CAP_NET_ADMIN', () => {
    const e = describeOpenError(systemError('EACCES', 'open'), 'dptcp0', () => 'mode 0600, owner uid 0');
    assert.ok(e instanceof DpError);
    assert.equal(e.exitCode, 2);
    assert.equal(e.code, 'ERR_PRIVILEGE');
    assert.match(e.message, /may not open \/dev\/net\/tun \(EACCES; the device is mode 0600, owner uid 0\)/);
    assert.match(e.message, /chmod 0666 \/dev\/net\/tun/);
    assert.doesNotMatch(e.message, /CAP_NET_ADMIN/);
  });

  it('open refused by policy (EPERM): points at the device cgroup, not the mode', () => {
    const e = describeOpenError(systemError('EPERM', 'open'), 'dptcp0', () => assert.fail('the mode is not the reason'));
    assert.equal(e.exitCode, 2);
    assert.match(e.message, /opening \/dev\/net\/tun is not permitted \(EPERM/);
    assert.match(e.message, /DeviceAllow=\/dev\/net\/tun rw/);
  });

  it('a refused TUNSETIFF asks for CAP_NET_ADMIN', () => {
    const e = describeOpenError(systemError('EPERM', 'ioctl(TUNSETIFF)'), 'dptcp0', () => 'unused');
    assert.match(e.message, /creating TUN device 'dptcp0' needs CAP_NET_ADMIN/);
    assert.equal(e.exitCode, 2);
  });

  it('a missing device asks for the module; a busy name says so', () => {
    assert.match(describeOpenError(systemError('ENOENT', 'open'), 'x').message, /modprobe tun/);
    assert.match(describeOpenError(systemError('EBUSY', 'ioctl(TUNSETIFF)'), 'x').message, /already exists and is in use/);
  });
});
