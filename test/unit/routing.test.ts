// The server's NAT and forwarding setup and its teardown, against a fake
// iptables (a script first in PATH that records its arguments) and a fake
// /proc/sys: nothing of the machine's network is touched.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ServerConfig } from '../../src/config/types.js';
import { memoryLogger } from '../../src/log.js';
import { NetworkSetup } from '../../src/ops/routing.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const dir = tempDir('dptcp-routing-');
after(() => removeDir(dir));

/** A fake iptables in `bin` (the only directory in PATH while `f` runs): `-C` finds nothing, the rest succeeds. */
function withFakeIptables<T>(f: (calls: () => string[]) => T): T {
  const bin = join(dir, 'bin');
  const log = join(dir, 'iptables.log');
  mkdirSync(bin, { recursive: true });
  writeFileSync(log, '');
  const script = `#!/bin/sh\necho "$*" >> '${log}'\ncase " $* " in *" -C "*) exit 1;; esac\nexit 0\n`;
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
    });
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
