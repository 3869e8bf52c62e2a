// config values accepted silently that cannot work.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { SEALED_OVERHEAD_BYTES } from '../../src/secure/record.js';

const client = (link: string, extra = '', tun = ''): string => `client:
  tunnel_device:
    name: dptcp-c
    ip: 10.0.0.2
${tun}  links:
${link}
${extra}`;

function refused(yaml: string, message: RegExp): void {
  assert.throws(
    () => parseConfig(yaml, 'test.yaml', 'client'),
    (e: unknown) => e instanceof ConfigError && message.test(e.message),
    'expected a ConfigError',
  );
}

describe('config values that cannot work', () => {
  it('refuses a TUN MTU larger than max_frame_bytes allows (every larger packet would kill the links)', () => {
    refused(
      client('    - remote: 127.0.0.1:5000', '  timing:\n    max_frame_bytes: 1600\n', '    mtu: 9000\n    offload: false\n'),
      /max_frame_bytes|mtu/,
    );
    // The bound the check names: a packet of the MTU in a DATA frame, sealed (record header and tag).
    refused(client('    - remote: 127.0.0.1:5000', `  timing:\n    max_frame_bytes: ${1600 + 16 + SEALED_OVERHEAD_BYTES - 1}\n`, '    mtu: 1600\n    offload: false\n'), new RegExp(`at least ${1600 + 16 + SEALED_OVERHEAD_BYTES}`));
    assert.doesNotThrow(() => parseConfig(client('    - remote: 127.0.0.1:5000', `  timing:\n    max_frame_bytes: ${1600 + 16 + SEALED_OVERHEAD_BYTES}\n`, '    mtu: 1600\n    offload: false\n'), 'test.yaml', 'client'));
  });

  it('refuses a tunnel address no host can have: unspecified, loopback, multicast, broadcast', () => {
    for (const ip of ['0.0.0.0', '127.0.0.2', '224.0.0.1', '239.1.2.3', '255.255.255.255']) {
      refused(client('    - remote: 127.0.0.1:5000').replace('ip: 10.0.0.2', `ip: ${ip}`), new RegExp(`tunnel_device.ip: ${ip.replaceAll('.', '\\.')} is`));
    }
    for (const ip of ['::', '::1', 'ff02::1']) {
      refused(client('    - remote: 127.0.0.1:5000').replace('ip: 10.0.0.2', `ip: 10.0.0.2\n    ipv6: "${ip}"`), /tunnel_device\.ipv6: .* is (the|a) /);
    }
    for (const ip of ['10.0.0.2', '192.168.255.254', '223.255.255.1']) {
      assert.doesNotThrow(() => parseConfig(client('    - remote: 127.0.0.1:5000').replace('ip: 10.0.0.2', `ip: ${ip}`), 'test.yaml', 'client'), ip);
    }
    assert.doesNotThrow(() => parseConfig(client('    - remote: 127.0.0.1:5000').replace('ip: 10.0.0.2', 'ip: 10.0.0.2\n    ipv6: "fd00::2"'), 'test.yaml', 'client'));
  });

  it('refuses a link whose local address is of the other family than its remote', () => {
    refused(client('    - remote: 127.0.0.1:5000\n      local: "::1"'), /local/);
    refused(client('    - remote: "[::1]:5000"\n      local: 127.0.0.1'), /local/);
  });
});

describe('a YAML file that cannot be expanded', () => {
  it('is a ConfigError (one line, exit 2), not an unexpected error with a stack', () => {
    const bomb =
      'a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n' +
      'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n';
    assert.throws(() => parseConfig(bomb, 'test.yaml', 'client'), (e: unknown) => e instanceof ConfigError);
  });
});
