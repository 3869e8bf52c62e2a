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
