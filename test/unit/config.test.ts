import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';
import { DEFAULT_TIMING } from '../../src/config/types.js';

const root = new URL('../../', import.meta.url).pathname;

function fails(yaml: string, role: 'client' | 'server', message: RegExp): void {
  assert.throws(
    () => parseConfig(yaml, 'test.yaml', role),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
      assert.equal(e.exitCode, 2);
      assert.match(e.message, message);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    },
  );
}

const modernClient = `
client:
  tunnel_device: { name: dptcp-c, ip: 10.9.0.2/30, ipv6: "fd00::2", mtu: 1380 }
  links:
    - { name: a, remote: "10.0.1.1:4000", local: 10.0.1.2 }
    - { remote: "[fd01::1]:4001" }
  timing: { elimination_ttl_ms: 1500, dead_interval_ms: 900 }
logger: { level: debug }
`;

describe('config', () => {
  it("reads the original dp-tcp's client file unchanged", () => {
    const c = loadConfig(join(root, 'config/client.yaml'), 'client');
    assert.equal(c.role, 'client');
    assert.equal(c.tunnel.name, 'dpTcpTunClient');
    assert.deepEqual(c.tunnel.addresses, [{ family: 4, address: '10.0.0.2', prefix: 24 }]);
    assert.deepEqual(
      c.links.map((l) => [l.id, l.name, l.remoteAddress, l.remotePort, l.localAddress]),
      [
        [0, 'tcp1', '10.0.1.1', 31411, '10.0.1.2'],
        [1, 'tcp2', '10.0.2.1', 31413, '10.0.2.2'],
      ],
    );
    assert.deepEqual(c.timing, DEFAULT_TIMING);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.links) && Object.isFrozen(c.tunnel));
  });

  it("reads the original dp-tcp's server file unchanged", () => {
    const c = loadConfig(join(root, 'config/server.yaml'), 'server');
    assert.equal(c.role, 'server');
    assert.deepEqual(
      c.links.map((l) => [l.listenAddress, l.listenPort]),
      [
        ['10.0.1.1', 31411],
        ['10.0.2.1', 31413],
      ],
    );
    assert.equal(c.logLevel, 'info');
  });

  it('reads the shipped modern examples (with a key file in place of /etc/dp-tcp/psk)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dptcp-ex-'));
    writeFileSync(join(dir, 'psk'), 'example-key-example-key-example-key');
    chmodSync(join(dir, 'psk'), 0o600);
    const load = (side: 'client' | 'server') => {
      const f = join(dir, `${side}.yaml`);
      writeFileSync(f, readFileSync(join(root, `config/${side}.modern.yaml`), 'utf8').replace('psk_file: /etc/dp-tcp/psk', 'psk_file: psk'));
      return loadConfig(f, side);
    };
    const c = load('client');
    assert.equal(c.tunnel.addresses.length, 2);
    assert.equal(c.security.encryption, 'chacha20-poly1305');
    const s = load('server');
    assert.equal(s.links.length, 2);
    assert.ok(s.security.psk);
  });

  it('reads the modern form with prefixes, IPv6, timing and defaults', () => {
    const c = parseConfig(modernClient, 'test.yaml', 'client');
    assert.equal(c.role, 'client');
    assert.equal(c.tunnel.mtu, 1380);
    assert.deepEqual(c.tunnel.addresses, [
      { family: 4, address: '10.9.0.2', prefix: 30 },
      { family: 6, address: 'fd00::2', prefix: 64 },
    ]);
    assert.deepEqual(c.links[1], { id: 1, name: 'link2', remoteAddress: 'fd01::1', remotePort: 4001, localAddress: undefined });
    assert.equal(c.timing.eliminationTtlMs, 1500);
    assert.equal(c.timing.keepaliveIntervalMs, DEFAULT_TIMING.keepaliveIntervalMs);
    assert.equal(c.logLevel, 'debug');
  });

  const base = (links: string): string => `server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n${links}`;

  it('names the file and the path of a bad field', () => {
    fails(base('  links:\n    - listen: "10.0.0.1:99999"\n'), 'server', /^test\.yaml: server\.links\[0\]\.listen: port 99999 is out of range$/);
    fails(base('  links:\n    - listen: "nowhere:80"\n'), 'server', /server\.links\[0\]\.listen: must be address:port/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n      lisen: x\n'), 'server', /server\.links\[0\]\.lisen: is not a known field/);
    fails(base('  links: []\n'), 'server', /server\.links: must be a non-empty list/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n    - listen: "10.0.0.1:80"\n'), 'server', /listens on 10\.0\.0\.1:80 twice/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n  timing: { queue_max_age_ms: -1 }\n'), 'server', /server\.timing\.queue_max_age_ms: must be between/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n  timing: { keepalive_interval_ms: 500, dead_interval_ms: 400 }\n'), 'server', /dead_interval_ms: must be longer/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\nlogger: { level: loud }\n'), 'server', /logger\.level: must be one of error, warn, info, debug, trace/);
  });

  it('rejects bad tunnel devices', () => {
    const t = (dev: string): string => `client:\n  tunnel_device: ${dev}\n  links:\n    - remote: "10.0.1.1:1"\n`;
    fails(t('{ name: "this-name-is-far-too-long", ip: 10.0.0.2 }'), 'client', /tunnel_device\.name: .* is not a valid interface name/);
    fails(t('{ name: t0, ip: 10.0.0.300 }'), 'client', /tunnel_device\.ip: must be an IPv4 address/);
    fails(t('{ name: t0, ip: 10.0.0.2/33 }'), 'client', /prefix length \/33 is out of range/);
    fails(t('{ name: t0 }'), 'client', /client\.tunnel_device\.ip: is required/);
    fails(t('{ name: t0, ipv6: "fd00::1", mtu: 1200 }'), 'client', /mtu: must be at least 1280/);
  });

  it('refuses a config of the other role, or of both', () => {
    fails(readFileSync(join(root, 'config/server.yaml'), 'utf8'), 'client', /^test\.yaml: server: this is a server config, but dp-tcp was started as client$/);
    fails('client: {}\nserver: {}\n', 'client', /server: a config file describes one side/);
  });

  it('refuses mixing the original and the modern link forms', () => {
    fails(
      'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_addr: 10.0.1.1\n  tcp1_dial_port: 1\n  links: []\n',
      'client',
      /client\.links: cannot be combined/,
    );
  });

  it('reports a missing legacy field by name', () => {
    fails('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_addr: 10.0.1.1\n', 'client', /client\.tcp1_dial_port: is required/);
  });

  it('reports YAML syntax errors, duplicate keys and unreadable files in one line', () => {
    fails('client: [1, 2\n', 'client', /^test\.yaml: is not valid YAML/);
    fails('client: 1\nclient: 2\n', 'client', /is not valid YAML/);
    const dir = mkdtempSync(join(tmpdir(), 'dptcp-cfg-'));
    assert.throws(() => loadConfig(join(dir, 'missing.yaml'), 'client'), /missing\.yaml: cannot read the config file: ENOENT/);
    const f = join(dir, 'empty.yaml');
    writeFileSync(f, '');
    assert.throws(() => loadConfig(f, 'client'), /empty\.yaml: must be a mapping/);
  });

  describe('keys and encryption', () => {
    const withSecurity = (sec: string): string =>
      `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remote: "10.0.1.1:1"\n${sec}`;

    it('the original files run without a key (and so without encryption)', () => {
      const c = loadConfig(join(root, 'config/client.yaml'), 'client');
      assert.deepEqual(c.security, { psk: undefined, encryption: 'none' });
    });

    it('a psk turns on authentication and, by default, ChaCha20-Poly1305', () => {
      const c = parseConfig(withSecurity('  psk: "0123456789abcdef0123"\n'), 'test.yaml', 'client');
      assert.deepEqual(c.security.psk, Buffer.from('0123456789abcdef0123'));
      assert.equal(c.security.encryption, 'chacha20-poly1305');
      const g = parseConfig(withSecurity('  psk: "0123456789abcdef0123"\n  encryption: aes-256-gcm\n'), 'test.yaml', 'client');
      assert.equal(g.security.encryption, 'aes-256-gcm');
      const n = parseConfig(withSecurity('  psk: "0123456789abcdef0123"\n  encryption: none\n'), 'test.yaml', 'client');
      assert.equal(n.security.encryption, 'none');
    });

    it('refuses short keys, unknown ciphers, encryption without a key, and both key forms', () => {
      fails(withSecurity('  psk: short\n'), 'client', /client\.psk: the key must be at least 16 bytes/);
      fails(withSecurity('  psk: "0123456789abcdef0123"\n  encryption: rot13\n'), 'client', /client\.encryption: must be none, chacha20-poly1305 or aes-256-gcm/);
      fails(withSecurity('  encryption: aes-256-gcm\n'), 'client', /client\.encryption: needs a psk or psk_file/);
      fails(withSecurity('  psk: "0123456789abcdef0123"\n  psk_file: k\n'), 'client', /client\.psk_file: give psk or psk_file, not both/);
    });

    it('reads psk_file relative to the config, and only if other users cannot read it', () => {
      const dir = mkdtempSync(join(tmpdir(), 'dptcp-psk-'));
      const keyFile = join(dir, 'psk');
      writeFileSync(keyFile, 'a-long-enough-secret-key-for-tests\n');
      chmodSync(keyFile, 0o644);
      const cfg = join(dir, 'client.yaml');
      writeFileSync(cfg, withSecurity('  psk_file: psk\n'));
      assert.throws(() => loadConfig(cfg, 'client'), /client\.psk_file: .*psk can be read by other users \(mode 644\): chmod 600 it/);
      chmodSync(keyFile, 0o600);
      assert.deepEqual(loadConfig(cfg, 'client').security.psk, Buffer.from('a-long-enough-secret-key-for-tests'));
      writeFileSync(cfg, withSecurity('  psk_file: missing\n'));
      assert.throws(() => loadConfig(cfg, 'client'), /client\.psk_file: cannot read .*missing/);
    });
  });

  it('offload is on unless turned off, and must be a boolean', () => {
    const t = (v: string): string => `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2${v} }\n  links:\n    - remote: "10.0.1.1:1"\n`;
    assert.equal(parseConfig(t(''), 'c.yaml', 'client').tunnel.offload, true);
    assert.equal(parseConfig(t(', offload: false'), 'c.yaml', 'client').tunnel.offload, false);
    fails(t(', offload: maybe'), 'client', /client\.tunnel_device\.offload: must be true or false/);
    fails(t('') + '  timing: { max_frame_bytes: 9000 }\n', 'client', /client\.timing\.max_frame_bytes: must be at least 66000 with offload on/);
    assert.equal(parseConfig(t(', offload: false') + '  timing: { max_frame_bytes: 9000 }\n', 'c.yaml', 'client').timing.maxFrameBytes, 9000);
  });

  describe('operations fields', () => {
    const client = (extra: string): string =>
      `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remote: "10.0.1.1:1"\n${extra}`;
    const server = (extra: string): string =>
      `server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - listen: "10.0.1.1:1"\n${extra}`;

    it('status_listen defaults to loopback per role, can move or be off', () => {
      assert.deepEqual(parseConfig(client(''), 'c.yaml', 'client').statusListen, { address: '127.0.0.1', port: 9401 });
      assert.deepEqual(parseConfig(server(''), 's.yaml', 'server').statusListen, { address: '127.0.0.1', port: 9400 });
      assert.deepEqual(parseConfig(server('  status_listen: "[::1]:9500"\n'), 's.yaml', 'server').statusListen, { address: '::1', port: 9500 });
      assert.equal(parseConfig(server('  status_listen: off\n'), 's.yaml', 'server').statusListen, undefined);
      fails(server('  status_listen: 9400\n'), 'server', /server\.status_listen: must be address:port/);
    });

    it('routes are prefixes; nat_out_interface an interface name', () => {
      const c = parseConfig(client('  routes: [0.0.0.0/0, "::/0", 192.168.50.0/24]\n'), 'c.yaml', 'client');
      assert.deepEqual(c.role === 'client' && c.routes.map((r) => `${r.address}/${r.prefix}`), ['0.0.0.0/0', '::/0', '192.168.50.0/24']);
      fails(client('  routes: [10.0.0.0]\n'), 'client', /client\.routes\[0\]: must be address\/prefix/);
      fails(client('  routes: 10.0.0.0/8\n'), 'client', /client\.routes: must be a list/);
      const s = parseConfig(server('  nat_out_interface: eth0\n'), 's.yaml', 'server');
      assert.equal(s.role === 'server' && s.natOutInterface, 'eth0');
      fails(server('  nat_out_interface: "eth 0"\n'), 'server', /nat_out_interface: 'eth 0' is not an interface name/);
      fails(client('  nat_out_interface: eth0\n'), 'client', /client\.nat_out_interface: is not a known field/);
    });
  });
});
