import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, listensOverlap, loadConfig, parseConfig, weakPskWarning, type ParseOptions } from '../../src/config/load.js';
import { DEFAULT_NICE, DEFAULT_TIMING, type ClientLinkConfig, type Role } from '../../src/config/types.js';
import { publicKeyOf } from '../../src/secure/primitives.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const root = new URL('../../', import.meta.url).pathname;

// Every file a test writes lives here, and goes with it.
const tmp = tempDir('dptcp-config-');
after(() => removeDir(tmp));
let dirs = 0;
/** A fresh directory under `tmp` (mode 700, as a key directory should be). */
function newDir(): string {
  const d = join(tmp, `d${++dirs}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

function writeFile(path: string, content: string | Buffer, mode = 0o600): string {
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

function fails(yaml: string, role: Role, message: RegExp, file = 'test.yaml', opts?: ParseOptions): ConfigError {
  let error: ConfigError | undefined;
  assert.throws(
    () => parseConfig(yaml, file, role, opts),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
      assert.equal(e.exitCode, 2);
      assert.equal(e.code, 'ERR_CONFIG');
      assert.match(e.message, message);
      assert.ok(!e.message.includes('\n'), 'one line');
      error = e;
      return true;
    },
  );
  return error as ConfigError;
}

// Fixed keys of this test's own (RFC 7748's test keys, the examples' placeholders, are refused).
const SERVER_PRIVATE = Buffer.alloc(32, 0x51);
const SERVER_PUBLIC = publicKeyOf(SERVER_PRIVATE).toString('base64');
const CLIENT_PRIVATE = Buffer.alloc(32, 0x52);
const CLIENT_PUBLIC = publicKeyOf(CLIENT_PRIVATE).toString('base64');
// RFC 7748 section 6.1: the shipped examples' placeholders (Alice: server, Bob: client), with their published private halves.
const RFC7748_SERVER = { private: Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex'), public: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=' };
const RFC7748_CLIENT = { private: Buffer.from('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb', 'hex'), public: '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=' };
const OTHER_PUBLIC = Buffer.alloc(32, 9).toString('base64');

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

  it("takes what the original took: its logger's 'test' level (below trace), IPv6 addresses in brackets", () => {
    const legacy = (extra: string): string =>
      `client:\n  tcp1_dial_addr: "[fd00::1]"\n  tcp1_dial_port: 31411\n  tcp1_conn_addr: "[fd00::2]"\n  tcp1_conn_port: 31412\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n${extra}`;
    const c = parseConfig(legacy('logger:\n  level: test\n'), 'test.yaml', 'client');
    assert.equal(c.logLevel, 'trace');
    assert.equal(c.role === 'client' && c.links[0]?.remoteAddress, 'fd00::1');
    assert.equal(c.role === 'client' && c.links[0]?.localAddress, 'fd00::2');
    const s = parseConfig('server:\n  tcp1_listen_addr: "[::]"\n  tcp1_listen_port: 31411\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n', 'test.yaml', 'server');
    assert.equal(s.role === 'server' && s.links[0]?.listenAddress, '::');
    fails(legacy('logger:\n  level: verbose\n'), 'client', /logger\.level: must be one of error, warn, info, debug, trace, got 'verbose'$/);
    fails(legacy('').replace('"[fd00::1]"', '"[10.0.1.1]"'), 'client', /client\.tcp1_dial_addr: must be an IP address or a host name, got '\[10\.0\.1\.1\]'$/);
  });

  it('reads the shipped modern examples, which describe one matching pair once their placeholder keys are replaced', () => {
    // The examples carry RFC 7748's test keys as placeholders: as shipped they are refused (their
    // private halves are published); with keys of one's own in their place (as scripts/demo.sh
    // puts them) the two files load and name each other.
    const dir = newDir();
    writeFile(join(dir, 'server.key'), `${SERVER_PRIVATE.toString('base64')}\n`);
    writeFile(join(dir, 'client.key'), `${CLIENT_PRIVATE.toString('base64')}\n`);
    const text = (side: Role): string => {
      const t = readFileSync(join(root, `config/${side}.modern.yaml`), 'utf8');
      assert.ok(t.includes(`private_key_file: /etc/dp-tcp/${side}.key`));
      return t.replaceAll('/etc/dp-tcp/', `${dir}/`);
    };
    for (const side of ['client', 'server'] as const) {
      assert.throws(() => loadConfig(writeFile(join(dir, `${side}.yaml`), text(side), 0o644), side), /placeholder \(an RFC 7748 test key/, `the ${side} example as shipped`);
    }
    const load = (side: Role) =>
      loadConfig(writeFile(join(dir, `${side}.yaml`), text(side).replaceAll(RFC7748_SERVER.public, SERVER_PUBLIC).replaceAll(RFC7748_CLIENT.public, CLIENT_PUBLIC), 0o644), side);
    const c = load('client');
    const s = load('server');
    assert.equal(c.tunnel.addresses.length, 2);
    assert.equal(s.links.length, 2);
    for (const sec of [c.security, s.security]) {
      assert.equal(sec.mode, 'keys');
      assert.equal(sec.encryption, 'chacha20-poly1305');
      assert.equal(sec.psk, undefined, 'the extra psk is commented out');
    }
    assert.deepEqual(c.security.serverPublicKey, publicKeyOf(s.security.privateKey as Buffer));
    assert.equal(s.security.peers.length, 1);
    const peer = s.security.peers[0]!;
    assert.deepEqual(peer.publicKey, publicKeyOf(c.security.privateKey as Buffer));
    assert.equal(peer.name, 'laptop');
    // The client's tunnel addresses are exactly what the server allows it.
    assert.deepEqual(
      peer.allowedIps.map((p) => `${p.address}/${p.prefix}`),
      c.tunnel.addresses.map((a) => `${a.address}/${a.family === 4 ? 32 : 128}`),
    );
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

  it('client.mode and client.connections_per_link: defaults, values, bounds', () => {
    const client = (extra: string): string =>
      `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { name: a, remote: "10.0.1.1:1", local: 10.0.1.2 }\n    - { name: b, remote: "10.0.2.1:2" }\n${extra}`;
    const plain = parseConfig(client(''), 'test.yaml', 'client');
    assert.equal(plain.role === 'client' && plain.mode, 'duplicate', 'duplicate by default');
    assert.equal(plain.links.length, 2, 'one connection per link by default');
    const c = parseConfig(client('  mode: adaptive\n  connections_per_link: 2\n'), 'test.yaml', 'client');
    assert.ok(c.role === 'client', 'a client config');
    assert.equal(c.mode, 'adaptive', 'mode read');
    assert.deepEqual(
      c.links.map((l) => [l.id, l.name, l.remotePort, l.localAddress, l.path]),
      [
        [0, 'a', 1, '10.0.1.2', undefined],
        [1, 'b', 2, undefined, undefined],
        [2, 'a~2', 1, '10.0.1.2', 0],
        [3, 'b~2', 2, undefined, 1],
      ],
      'each link twice; the extra connections follow, named after their link, with its path',
    );
    fails(client('  mode: striped\n'), 'client', /client\.mode: must be one of duplicate, aggregate, adaptive/);
    fails(client('  connections_per_link: 5\n'), 'client', /client\.connections_per_link: must be between 1 and 4/);
    const many = `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  connections_per_link: 4\n  links:\n${Array.from({ length: 5 }, (_, i) => `    - { remote: "10.0.1.1:${i + 1}" }\n`).join('')}`;
    fails(many, 'client', /5 links x 4 connections is more than 16/);
  });

  it('a link\'s upload_mbit and download_mbit: kbit/s, shared among its connections, bounds, both formats', () => {
    const client = (link: string, extra = ''): string =>
      `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { name: a, remote: "10.0.1.1:1"${link} }\n    - { name: b, remote: "10.0.2.1:2" }\n${extra}`;
    const rates = (text: string): Array<[string, number | undefined, number | undefined]> =>
      parseConfig(text, 'test.yaml', 'client').links.map((l) => [l.name, (l as ClientLinkConfig).uploadKbit, (l as ClientLinkConfig).downloadKbit]);
    assert.deepEqual(rates(client('')), [
      ['a', undefined, undefined],
      ['b', undefined, undefined],
    ]);
    assert.deepEqual(rates(client(', upload_mbit: 2.5, download_mbit: "45"')), [
      ['a', 2500, 45_000],
      ['b', undefined, undefined],
    ]);
    assert.deepEqual(
      rates(client(', upload_mbit: 10, download_mbit: 45', '  connections_per_link: 2\n')),
      [
        ['a', 5000, 22_500],
        ['b', undefined, undefined],
        ['a~2', 5000, 22_500],
        ['b~2', undefined, undefined],
      ],
      'each connection paces at its share',
    );
    fails(client(', upload_mbit: 0'), 'client', /client\.links\[0\]\.upload_mbit: must be between 0\.1 and 10000 Mbit\/s, got 0$/);
    fails(client(', download_mbit: 20000'), 'client', /client\.links\[0\]\.download_mbit: must be between 0\.1 and 10000 Mbit\/s, got 20000$/);
    fails(client(', upload_mbit: fast'), 'client', /client\.links\[0\]\.upload_mbit: must be a rate in Mbit\/s \(a number such as 45 or 2\.5\), got string "fast"$/);
    fails(client(', upload_mbit: 0.2', '  connections_per_link: 4\n'), 'client', /link a: 0\.2 Mbit\/s over 4 connections is less than 0\.1 Mbit\/s each/);
    const legacy = 'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_addr: 10.0.1.1\n  tcp1_dial_port: 1\n  tcp1_upload_mbit: 8\n  tcp1_download_mbit: 50\n';
    assert.deepEqual(rates(legacy), [['tcp1', 8000, 50_000]]);
  });

  it('nice: the default, a value, the bounds, on either side', () => {
    const server = (extra: string): string => `server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - listen: "10.0.1.1:1"\n${extra}`;
    assert.equal(parseConfig(server(''), 'test.yaml', 'server').nice, DEFAULT_NICE);
    assert.ok(DEFAULT_NICE < 0, 'ahead of the applications by default');
    assert.equal(parseConfig(server('  nice: 0\n'), 'test.yaml', 'server').nice, 0);
    assert.equal(parseConfig(server('  nice: 5\n'), 'test.yaml', 'server').nice, 5);
    assert.equal(parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  nice: -20\n  links:\n    - remote: "10.0.1.1:1"\n', 'test.yaml', 'client').nice, -20);
    assert.equal(parseConfig(server('  nice: 19\n'), 'test.yaml', 'server').nice, 19);
    fails(server('  nice: -21\n'), 'server', /server\.nice: must be between -20 and 19, got -21/);
    fails(server('  nice: 20\n'), 'server', /server\.nice: must be between -20 and 19, got 20/);
    fails(server('  nice: high\n'), 'server', /server\.nice: must be a whole number/);
  });

  const base = (links: string): string => `server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n${links}`;

  it('names the file and the path of a bad field', () => {
    fails(base('  links:\n    - listen: "10.0.0.1:99999"\n'), 'server', /^test\.yaml: server\.links\[0\]\.listen: port 99999 is out of range$/);
    fails(base('  links:\n    - listen: "no where:80"\n'), 'server', /server\.links\[0\]\.listen: must be address:port or name:port/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n      lisen: x\n'), 'server', /server\.links\[0\]\.lisen: is not a known field/);
    fails(base('  links: []\n'), 'server', /server\.links: must be a non-empty list/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n    - listen: "10.0.0.1:80"\n'), 'server', /server\.links\[1\]\.listen: 10\.0\.0\.1:80 overlaps links\[0\]'s 10\.0\.0\.1:80: one address and port, one link$/);
    // A wildcard takes the port on every address (:: on both families, as Node listens): the second listen would fail at start.
    fails(base('  links:\n    - listen: "[::]:80"\n    - listen: "0.0.0.0:80"\n'), 'server', /server\.links\[1\]\.listen: 0\.0\.0\.0:80 overlaps links\[0\]'s \[::\]:80/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n    - listen: "0.0.0.0:80"\n'), 'server', /server\.links\[1\]\.listen: 0\.0\.0\.0:80 overlaps/);
    fails(base('  links:\n    - listen: "[fd00::1]:80"\n    - listen: "[::]:80"\n'), 'server', /server\.links\[1\]\.listen: \[::\]:80 overlaps links\[0\]'s \[fd00::1\]:80/);
    fails(
      base('  tcp1_listen_addr: 0.0.0.0\n  tcp1_listen_port: 31411\n  tcp2_listen_addr: 10.0.1.1\n  tcp2_listen_port: 31411\n'),
      'server',
      /server\.tcp2_listen_addr: 10\.0\.1\.1:31411 overlaps tcp1's 0\.0\.0\.0:31411/,
    );
    // On a host with net.ipv6.bindv6only = 1, :: takes IPv6 only: 0.0.0.0 beside it is fine there.
    const at = (listenAddress: string, listenPort = 80) => ({ id: 0, name: 'x', listenAddress, listenPort });
    assert.equal(listensOverlap(at('::'), at('0.0.0.0'), false), false);
    assert.equal(listensOverlap(at('::'), at('10.0.0.1'), false), false);
    assert.equal(listensOverlap(at('::'), at('fd00::1'), false), true);
    assert.equal(listensOverlap(at('::'), at('0.0.0.0'), true), true);
    assert.equal(listensOverlap(at('0.0.0.0'), at('fd00::1'), true), false);
    assert.equal(listensOverlap(at('::'), at('::', 81), true), false);
    // Addresses as the kernel sees them, not as written.
    assert.equal(listensOverlap(at('FD00:0::1'), at('fd00::1'), false), true);
    assert.equal(listensOverlap(at('::ffff:10.0.1.1'), at('10.0.1.1'), false), true);
    assert.equal(listensOverlap(at('FE80::1%eth0'), at('fe80::1%eth0'), false), true, 'a scoped address: canonical, zone and all');
    assert.equal(listensOverlap(at('fe80::1%eth0'), at('fe80::1%eth1'), false), false);
    assert.equal(parseConfig(base('  links:\n    - listen: "[fe80::1%eth0]:443"\n'), 'test.yaml', 'server').links.length, 1, 'a scoped listen address loads');
    fails(base('  links:\n    - listen: "[FD00:0::1]:80"\n    - listen: "[fd00::1]:80"\n'), 'server', /server\.links\[1\]\.listen: \[fd00::1\]:80 overlaps links\[0\]'s \[FD00:0::1\]:80/);
    for (const ok of ['"10.0.0.1:80"\n    - listen: "10.0.0.2:80"', '"0.0.0.0:80"\n    - listen: "[fd00::1]:80"', '"0.0.0.0:80"\n    - listen: "0.0.0.0:81"']) {
      assert.equal(parseConfig(base(`  links:\n    - listen: ${ok}\n`), 'test.yaml', 'server').links.length, 2, ok);
    }
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n  timing: { queue_max_age_ms: -1 }\n'), 'server', /server\.timing\.queue_max_age_ms: must be between/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n  timing: { keepalive_interval_ms: 500, dead_interval_ms: 400 }\n'), 'server', /dead_interval_ms: must be longer/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\nlogger: { level: loud }\n'), 'server', /logger\.level: must be one of error, warn, info, debug, trace/);
  });

  it('each link has a name of its own (status, logs and metrics name links by it)', () => {
    const client = (links: string): string => `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n${links}`;
    fails(
      client('    - { name: a, remote: "10.0.1.1:1" }\n    - { name: a, remote: "10.0.2.1:1" }\n'),
      'client',
      /^test\.yaml: client\.links\[1\]\.name: 'a' is also the name of links\[0\]: each link needs its own$/,
    );
    fails(base('  links:\n    - { name: x, listen: "10.0.0.1:80" }\n    - { name: x, listen: "10.0.0.1:81" }\n'), 'server', /server\.links\[1\]\.name: 'x' is also the name/);
    fails(client('    - { name: "wan1~2", remote: "10.0.1.1:1" }\n'), 'client', /client\.links\[0\]\.name: 'wan1~2' has a '~': it is kept for the names of a link's connections/);
    // Unnamed links are link1, link2, ...: a link named like one of those is a clash too.
    fails(client('    - { remote: "10.0.1.1:1" }\n    - { name: link1, remote: "10.0.2.1:1" }\n'), 'client', /client\.links\[1\]\.name: 'link1' is also the name of links\[0\]/);
  });

  it('server.limits: documented defaults, each one settable, bounds checked', () => {
    const l = (extra: string) => parseConfig(base(`  links:\n    - listen: "10.0.0.1:80"\n${extra}`), 'test.yaml', 'server');
    const d = l('');
    assert.ok(d.role === 'server');
    assert.deepEqual(d.limits, { maxSessions: 1024, maxPending: 256, maxLinksPerSession: 16 });
    const c = l('  limits: { max_sessions: 100, max_pending_handshakes: 64, max_links_per_session: 4 }\n');
    assert.ok(c.role === 'server');
    assert.deepEqual(c.limits, { maxSessions: 100, maxPending: 64, maxLinksPerSession: 4 });
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n  limits: { max_links_per_session: 17 }\n'), 'server', /server\.limits\.max_links_per_session: must be between 1 and 16, got 17/);
    fails(base('  links:\n    - listen: "10.0.0.1:80"\n  limits: { max_clients: 3 }\n'), 'server', /server\.limits\.max_clients: is not a known field/);
  });

  it('a value echoed in an error is shown safely: control characters replaced, a long one cut', () => {
    const e = fails(`client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remote: "${'a'.repeat(100_000)}:1"\n`, 'client', /client\.links\[0\]\.remote: must be address:port/);
    assert.ok(e.message.length < 1200, `one line of bounded length (${e.message.length} characters)`);
    assert.match(e.message, /… \(1000\d{2} characters\) …/, 'the length of the whole problem, cut once');
    const esc = fails('client:\n  tunnel_device: { name: "t0\\e[31mRED", ip: 10.0.0.2 }\n  links:\n    - remote: "10.0.1.1:1"\n', 'client', /tunnel_device\.name/);
    assert.ok(!esc.message.includes('\u001b'), 'no escape sequence reaches the terminal');
  });

  it('rejects bad tunnel devices', () => {
    const t = (dev: string): string => `client:\n  tunnel_device: ${dev}\n  links:\n    - remote: "10.0.1.1:1"\n`;
    fails(t('{ name: "this-name-is-far-too-long", ip: 10.0.0.2 }'), 'client', /tunnel_device\.name: .* is not a valid interface name/);
    for (const dots of ['.', '..']) fails(t(`{ name: "${dots}", ip: 10.0.0.2 }`), 'client', /tunnel_device\.name: .* is not a valid interface name/);
    fails(t('{ name: t0, ip: 10.0.0.300 }'), 'client', /tunnel_device\.ip: must be an IPv4 address/);
    fails(t('{ name: t0, ip: 10.0.0.2/33 }'), 'client', /prefix length \/33 is out of range/);
    fails(t('{ name: t0 }'), 'client', /client\.tunnel_device\.ip: is required/);
    fails(t('{ name: t0, ipv6: "fd00::1", mtu: 1200 }'), 'client', /mtu: must be at least 1280/);
    fails(t('{ name: t0, ip: 10.0.0.2, ipv6: "fe80::1%eth0" }'), 'client', /tunnel_device\.ipv6: 'fe80::1%eth0' has a zone index/);
  });

  it('keeps IPv6 addresses in their canonical text (one address, one spelling: compared as text)', () => {
    const c = parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2, ipv6: "FD00:0:0::2/64" }\n  links:\n    - remote: "10.0.1.1:1"\n', 'test.yaml', 'client');
    assert.deepEqual(
      c.tunnel.addresses.map((a) => `${a.address}/${a.prefix}`),
      ['10.0.0.2/24', 'fd00::2/64'],
    );
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

  it('reports a missing legacy field by name, and a misspelt one as itself', () => {
    fails('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_addr: 10.0.1.1\n', 'client', /client\.tcp1_dial_port: is required/);
    // A required key that is missing because it is misspelt: the typo is named.
    fails('client:\n  tunel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remote: "10.0.1.1:1"\n', 'client', /client\.tunnel_device: is required \(found 'tunel_device': misspelt\?\)$/);
    fails('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remtoe: "10.0.1.1:1"\n', 'client', /client\.links\[0\]\.remote: is required \(found 'remtoe': misspelt\?\)$/);
    // At most 16 links in the original format too (it numbers them; the 17th is named).
    const many = (n: number): string => Array.from({ length: n }, (_, i) => `  tcp${i + 1}_listen_addr: 10.0.1.1\n  tcp${i + 1}_listen_port: ${30001 + i}\n`).join('');
    assert.equal(parseConfig(`server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n${many(16)}`, 'test.yaml', 'server').links.length, 16);
    fails(`server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n${many(17)}`, 'server', /server\.tcp17_listen_addr: at most 16 links are supported \(17 link numbers in the tcp<N>_\* fields\)$/);
    // Another link's field of the original format is no typo.
    fails('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_port: 1\n  tcp2_dial_addr: 10.0.1.2\n  tcp2_dial_port: 1\n', 'client', /client\.tcp1_dial_addr: is required$/);
    fails(
      'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_adr: 10.0.1.1\n  tcp1_dial_port: 1\n',
      'client',
      /^test\.yaml: client\.tcp1_dial_adr: is not a known field \(a link of the original format has tcp1_dial_addr, tcp1_dial_port, tcp1_conn_addr, tcp1_conn_port, tcp1_upload_mbit, tcp1_download_mbit\)$/,
    );
    fails('server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  tcp2_listen_adr: 10.0.1.1\n  tcp2_listen_port: 1\n', 'server', /server\.tcp2_listen_adr: is not a known field \(a link of the original format has tcp2_listen_addr, tcp2_listen_port\)$/);
  });

  it("reads YAML as the original's yaml.v2 did: `<<:` merge keys, one document (a trailing --- is none more)", () => {
    const merged = parseConfig(
      'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - &a { name: a, remote: "10.0.1.1:1", upload_mbit: 10 }\n    - { <<: *a, name: b, remote: "10.0.2.1:1" }\n',
      'test.yaml',
      'client',
    );
    assert.deepEqual(merged.role === 'client' && merged.links.map((l) => [l.name, l.remoteAddress, l.uploadKbit]), [['a', '10.0.1.1', 10_000], ['b', '10.0.2.1', 10_000]]);
    const one = 'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { remote: "10.0.1.1:1" }\n';
    assert.equal(parseConfig(`${one}---\n`, 'test.yaml', 'client').links.length, 1, 'a trailing ---');
    assert.equal(parseConfig(`---\n${one}...\n`, 'test.yaml', 'client').links.length, 1, 'a leading --- and a closing ...');
    fails(`${one}---\nclient: {}\n`, 'client', /^test\.yaml:6:1: holds a second YAML document \(after ---\): a config file is one document$/);
  });

  it('reports YAML syntax errors, duplicate keys and unreadable files in one line', () => {
    fails('client: [1, 2\n', 'client', /^test\.yaml:2:1: is not valid YAML: /);
    fails('client: 1\nclient: 2\n', 'client', /^test\.yaml:2:1: is not valid YAML: Map keys must be unique/);
    const dir = newDir();
    assert.throws(() => loadConfig(join(dir, 'missing.yaml'), 'client'), /missing\.yaml: cannot read the config file: ENOENT/);
    const f = writeFile(join(dir, 'empty.yaml'), '');
    assert.throws(() => loadConfig(f, 'client'), /empty\.yaml: must be a mapping/);
  });

  describe('security: open and psk modes', () => {
    const withSecurity = (sec: string): string =>
      `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remote: "10.0.1.1:1"\n${sec}`;
    const PSK = '0123456789abcdef0123';

    it('the original files run open: no key, no encryption', () => {
      for (const side of ['client', 'server'] as const) {
        const c = loadConfig(join(root, `config/${side}.yaml`), side);
        assert.deepEqual(c.security, { mode: 'open', privateKey: undefined, psk: undefined, encryption: 'none', serverPublicKey: undefined, peers: [] });
        assert.ok(Object.isFrozen(c.security));
      }
      assert.equal(parseConfig(withSecurity('  encryption: none\n'), 'test.yaml', 'client').security.encryption, 'none', 'none may be said');
    });

    it('a psk alone is the psk mode, with ChaCha20-Poly1305 by default or AES-256-GCM', () => {
      const c = parseConfig(withSecurity(`  psk: "${PSK}"\n`), 'test.yaml', 'client');
      assert.equal(c.security.mode, 'psk');
      assert.deepEqual(c.security.psk, Buffer.from(PSK));
      assert.equal(c.security.encryption, 'chacha20-poly1305');
      assert.equal(c.security.privateKey, undefined);
      const g = parseConfig(withSecurity(`  psk: "${PSK}"\n  encryption: aes-256-gcm\n`), 'test.yaml', 'client');
      assert.equal(g.security.encryption, 'aes-256-gcm');
      const u = parseConfig(withSecurity('  psk: "clé-partagée-ünïcødé"\n'), 'test.yaml', 'client');
      assert.deepEqual(u.security.psk, Buffer.from('clé-partagée-ünïcødé', 'utf8'), 'an inline psk is its UTF-8 bytes');
    });

    it('refuses encryption: none with a key, and encryption without one', () => {
      fails(
        withSecurity(`  psk: "${PSK}"\n  encryption: none\n`),
        'client',
        /^test\.yaml: client\.encryption: every frame is authenticated and encrypted when a key is set; remove encryption: none$/,
      );
      fails(withSecurity('  encryption: aes-256-gcm\n'), 'client', /^test\.yaml: client\.encryption: needs a key to encrypt with: private_key_file \(peer keys\) or psk_file$/);
      fails(withSecurity(`  psk: "${PSK}"\n  encryption: rot13\n`), 'client', /client\.encryption: must be chacha20-poly1305 or aes-256-gcm \(none without a key\), got 'rot13'$/);
    });

    it('refuses short keys and both psk forms', () => {
      fails(withSecurity('  psk: short\n'), 'client', /client\.psk: the key must be at least 16 bytes/);
      const warning = (psk: string): string | undefined => weakPskWarning(parseConfig(withSecurity(`  psk: "${psk}"\n`), 'test.yaml', 'client').security);
      assert.match(warning('correct horse battery') ?? '', /^a psk of 21 bytes: if it is a word or phrase, one recorded handshake lets anyone guess it offline/);
      assert.equal(warning('x'.repeat(32)), undefined, '32 bytes or more: no warning (a length, not a measure of randomness)');
      fails(withSecurity('  psk: 123456789012345678901234\n'), 'client', /client\.psk: must be a string: quote it \(unquoted, YAML reads it as a number and loses digits\)$/);
      fails(withSecurity(`  psk: "${PSK}"\n  psk_file: k\n`), 'client', /client\.psk_file: give psk or psk_file, not both/);
    });

    it('reads psk_file relative to the config as raw bytes, only if other users cannot read it', () => {
      const dir = newDir();
      const secret = Buffer.concat([Buffer.from('a-long-enough-secret-'), Buffer.from([0xff, 0xfe, 0x00, 0x80])]);
      const keyFile = writeFile(join(dir, 'psk'), Buffer.concat([secret, Buffer.from('\n')]), 0o644);
      const cfg = writeFile(join(dir, 'client.yaml'), withSecurity('  psk_file: psk\n'), 0o644);
      assert.throws(
        () => loadConfig(cfg, 'client'),
        new RegExp(`: ${esc(cfg)}: client\\.psk_file: ${esc(keyFile)} can be read or written by group or others \\(mode 644\\): chmod 600 ${esc(keyFile)}$`),
      );
      chmodSync(keyFile, 0o600);
      const c = loadConfig(cfg, 'client');
      assert.equal(c.security.mode, 'psk');
      assert.deepEqual(c.security.psk, secret, 'bytes, trimmed, not decoded');
      writeFile(cfg, withSecurity('  psk_file: missing\n'));
      assert.throws(() => loadConfig(cfg, 'client'), /client\.psk_file: cannot read .*missing: ENOENT$/);
      writeFile(join(dir, 'short'), 'tooshort\n');
      writeFile(cfg, withSecurity('  psk_file: short\n'));
      assert.throws(() => loadConfig(cfg, 'client'), /client\.psk_file: the key must be at least 16 bytes/);
    });

    it('refuses an inline psk in a config file group or others can read', () => {
      const dir = newDir();
      const cfg = writeFile(join(dir, 'client.yaml'), withSecurity(`  psk: "${PSK}"\n`), 0o644);
      const e = fails(
        readFileSync(cfg, 'utf8'),
        'client',
        new RegExp(`^${esc(cfg)}: client\\.psk: ${esc(cfg)} can be read or written by group or others \\(mode 644\\): move the key to a psk_file, or chmod 600 ${esc(cfg)}$`),
        cfg,
        { fileMode: 0o100644 },
      );
      assert.ok(!e.message.includes(PSK), 'the key is not repeated');
      assert.throws(() => loadConfig(cfg, 'client'), /client\.psk: .*\(mode 644\): move the key to a psk_file, or chmod 600/);
      chmodSync(cfg, 0o640);
      assert.throws(() => loadConfig(cfg, 'client'), /\(mode 640\)/);
      chmodSync(cfg, 0o600);
      assert.equal(loadConfig(cfg, 'client').security.mode, 'psk');
      // A world-readable config without an inline secret is fine.
      writeFile(cfg, withSecurity(''), 0o644);
      assert.equal(loadConfig(cfg, 'client').security.mode, 'open');
    });
  });

  describe('security: peer keys', () => {
    const client = (sec: string): string => `client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - remote: "10.0.1.1:1"\n${sec}`;
    const server = (sec: string): string => `server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - listen: "10.0.1.1:1"\n${sec}`;
    const peer = (pub: string, ips = '[10.0.0.2/32]', extra = ''): string => `    - { public_key: "${pub}", allowed_ips: ${ips}${extra} }\n`;

    // One directory with both keys; configs are parsed as if they lived there.
    const dir = newDir();
    const cfg = join(dir, 'test.yaml');
    writeFile(join(dir, 'server.key'), `${SERVER_PRIVATE.toString('base64')}\n`);
    writeFile(join(dir, 'client.key'), `  ${CLIENT_PRIVATE.toString('base64')}\r\n`);
    writeFile(join(dir, 'psk'), 'an-extra-secret-of-enough-bytes\n');
    writeFile(join(dir, 'open.key'), `${CLIENT_PRIVATE.toString('base64')}\n`, 0o640);
    writeFile(join(dir, 'garbage.key'), 'this is not a key\n');
    const at = (yaml: string, role: Role) => parseConfig(yaml, cfg, role).security;
    const failsAt = (yaml: string, role: Role, message: RegExp) => fails(yaml, role, message, cfg);

    it('client: private_key_file (relative to the config) and server_public_key', () => {
      const sec = at(client(`  private_key_file: client.key\n  server_public_key: ${SERVER_PUBLIC}\n`), 'client');
      assert.equal(sec.mode, 'keys');
      assert.deepEqual(sec.privateKey, CLIENT_PRIVATE);
      assert.equal(sec.serverPublicKey?.toString('base64'), SERVER_PUBLIC);
      assert.equal(sec.psk, undefined);
      assert.equal(sec.encryption, 'chacha20-poly1305');
      assert.deepEqual(sec.peers, []);
      const abs = at(client(`  private_key_file: ${join(dir, 'client.key')}\n  server_public_key: ${SERVER_PUBLIC}\n  encryption: aes-256-gcm\n`), 'client');
      assert.deepEqual(abs.privateKey, CLIENT_PRIVATE);
      assert.equal(abs.encryption, 'aes-256-gcm');
    });

    it('a key whose private half is published (RFC 7748, the examples\' placeholders) is refused wherever it stands', () => {
      writeFile(join(dir, 'rfc7748.key'), `${RFC7748_CLIENT.private.toString('base64')}\n`);
      failsAt(client(`  private_key_file: rfc7748.key\n  server_public_key: ${SERVER_PUBLIC}\n`), 'client', /client\.private_key_file: holds an RFC 7748 test key, whose private half is published: make a key of your own/);
      failsAt(client(`  private_key_file: client.key\n  server_public_key: ${RFC7748_SERVER.public}\n`), 'client', /client\.server_public_key: is the shipped example's placeholder/);
      failsAt(server(`  private_key_file: server.key\n  peers:\n${peer(RFC7748_CLIENT.public)}`), 'server', /server\.peers\[0\]\.public_key: is the shipped example's placeholder/);
      const topBit = Buffer.from(RFC7748_CLIENT.public, 'base64');
      topBit[31] = (topBit[31] as number) | 0x80; // X25519 ignores it: the same key
      failsAt(server(`  private_key_file: server.key\n  peers:\n${peer(topBit.toString('base64'))}`), 'server', /server\.peers\[0\]\.public_key: is the shipped example's placeholder/);
    });

    it('a psk with the keys is the extra secret, and keys mode stays', () => {
      const sec = at(client(`  private_key_file: client.key\n  server_public_key: ${SERVER_PUBLIC}\n  psk_file: psk\n`), 'client');
      assert.equal(sec.mode, 'keys');
      assert.deepEqual(sec.psk, Buffer.from('an-extra-secret-of-enough-bytes'));
      const s = at(server(`  private_key_file: server.key\n  psk_file: psk\n  peers:\n${peer(CLIENT_PUBLIC)}`), 'server');
      assert.equal(s.mode, 'keys');
      assert.ok(s.psk);
    });

    it('client: each half needs the other', () => {
      failsAt(
        client('  private_key_file: client.key\n'),
        'client',
        /^.*test\.yaml: client\.server_public_key: is required with private_key_file \(the server's public key: dp-tcp pubkey < server\.key\)$/,
      );
      failsAt(
        client(`  server_public_key: ${SERVER_PUBLIC}\n`),
        'client',
        /client\.private_key_file: is required with server_public_key \(this client's own key: dp-tcp genkey > client\.key\)$/,
      );
      failsAt(client(`  private_key_file: client.key\n  server_public_key: ${SERVER_PUBLIC}\n  encryption: none\n`), 'client', /client\.encryption: every frame is authenticated and encrypted when a key is set; remove encryption: none$/);
      failsAt(
        client(`  private_key_file: client.key\n  server_public_key: ${CLIENT_PUBLIC}\n`),
        'client',
        /client\.server_public_key: is this client's own public key: give the server's \(dp-tcp pubkey < server\.key, on the server\)$/,
      );
    });

    it('refuses a private key file that is open, missing, not a key, or a key pasted in place of a path', () => {
      const pub = `  server_public_key: ${SERVER_PUBLIC}\n`;
      failsAt(
        client(`  private_key_file: open.key\n${pub}`),
        'client',
        new RegExp(`client\\.private_key_file: ${esc(dir)}/open\\.key can be read or written by group or others \\(mode 640\\): chmod 600 ${esc(dir)}/open\\.key$`),
      );
      failsAt(client(`  private_key_file: nowhere.key\n${pub}`), 'client', /client\.private_key_file: cannot read .*nowhere\.key: ENOENT$/);
      const g = failsAt(
        client(`  private_key_file: garbage.key\n${pub}`),
        'client',
        /client\.private_key_file: .*garbage\.key does not hold a private key: a key is 43 characters of base64 \(32 bytes; a trailing '=' may follow\).*got 17 characters$/,
      );
      assert.ok(!g.message.includes('this is not'), 'the file content is not repeated');
      const pasted = CLIENT_PRIVATE.toString('base64');
      const e = failsAt(client(`  private_key_file: ${pasted}\n${pub}`), 'client', /client\.private_key_file: must be the path of a file that holds the key, not the key itself$/);
      assert.ok(!e.message.includes(pasted));
    });

    it('refuses a server_public_key that is not a key', () => {
      failsAt(client('  private_key_file: client.key\n  server_public_key: abc\n'), 'client', /client\.server_public_key: a key is 43 characters of base64 \(32 bytes; a trailing '=' may follow\), as 'dp-tcp genkey' or 'dp-tcp pubkey' print it; got 3 characters$/);
      failsAt(client(`  private_key_file: client.key\n  server_public_key: "${SERVER_PUBLIC.slice(0, 40)}!!!="\n`), 'client', /client\.server_public_key: .*not base64$/);
    });

    it("refuses the other role's fields", () => {
      failsAt(client(`  private_key_file: client.key\n  server_public_key: ${SERVER_PUBLIC}\n  peers:\n${peer(CLIENT_PUBLIC)}`), 'client', /client\.peers: belongs in a server config; a client names its server with server_public_key$/);
      failsAt(server(`  private_key_file: server.key\n  server_public_key: ${SERVER_PUBLIC}\n  peers:\n${peer(CLIENT_PUBLIC)}`), 'server', /server\.server_public_key: belongs in a client config; a server lists its clients under peers$/);
    });

    it('server: private_key_file and peers with names, keys and allowed_ips', () => {
      const sec = at(
        server(
          '  private_key_file: server.key\n  peers:\n' +
            peer(CLIENT_PUBLIC, '[10.0.0.2/32, "FD00:0:0::2/128"]', ', name: laptop') +
            peer(OTHER_PUBLIC, '[10.0.0.3, "fd00::3", 192.168.7.0/24, "fd00:1::/64"]'),
        ),
        'server',
      );
      assert.equal(sec.mode, 'keys');
      assert.deepEqual(sec.privateKey, SERVER_PRIVATE);
      assert.equal(sec.serverPublicKey, undefined);
      assert.equal(sec.peers.length, 2);
      assert.deepEqual(
        sec.peers.map((p) => [p.name, p.publicKey.toString('base64'), p.allowedIps.map((a) => `${a.family}:${a.address}/${a.prefix}`)]),
        [
          ['laptop', CLIENT_PUBLIC, ['4:10.0.0.2/32', '6:fd00::2/128']],
          [OTHER_PUBLIC.slice(0, 8), OTHER_PUBLIC, ['4:10.0.0.3/32', '6:fd00::3/128', '4:192.168.7.0/24', '6:fd00:1::/64']],
        ],
      );
      assert.ok(Object.isFrozen(sec.peers) && Object.isFrozen(sec.peers[0]) && Object.isFrozen(sec.peers[0]?.allowedIps));
    });

    it('server: peers and the private key need each other', () => {
      failsAt(server('  private_key_file: server.key\n'), 'server', /server\.peers: must list at least one client \(public_key and allowed_ips\) with private_key_file$/);
      failsAt(server('  private_key_file: server.key\n  peers: []\n'), 'server', /server\.peers: must list at least one client/);
      failsAt(server(`  peers:\n${peer(CLIENT_PUBLIC)}`), 'server', /server\.private_key_file: is required with peers \(this server's own key: dp-tcp genkey > server\.key\)$/);
      failsAt(server('  private_key_file: server.key\n  peers: { public_key: x }\n'), 'server', /server\.peers: must be a list of clients, each \{ public_key, allowed_ips \}$/);
    });

    it('server: every peer is valid and distinct', () => {
      const s = (peers: string): string => server(`  private_key_file: server.key\n  peers:\n${peers}`);
      // The one listed peer's own problem comes first, not "must list at least one client".
      failsAt(s(peer('nope')), 'server', /^[^\n]*server\.peers\[0\]\.public_key: a key is 43 characters of base64/);
      failsAt(s('    - { allowed_ips: [10.0.0.2/32] }\n'), 'server', /server\.peers\[0\]\.public_key: is required$/);
      failsAt(s(peer(CLIENT_PUBLIC) + peer(CLIENT_PUBLIC, '[10.0.0.3/32]')), 'server', /server\.peers\[1\]\.public_key: is also the key of peers\[0\]: each client needs its own key pair$/);
      failsAt(s(peer(SERVER_PUBLIC)), 'server', /server\.peers\[0\]\.public_key: is this server's own public key: list each client's key \(dp-tcp pubkey < client\.key\)$/);
      failsAt(s(peer(CLIENT_PUBLIC, '[10.0.0.2/32]', ', name: a') + peer(OTHER_PUBLIC, '[10.0.0.3/32]', ', name: a')), 'server', /server\.peers\[1\]\.name: 'a' is also the name of peers\[0\]$/);
      failsAt(s(peer(CLIENT_PUBLIC, '[10.0.0.2/32]', ', nmae: a')), 'server', /server\.peers\[0\]\.nmae: is not a known field$/);
    });

    it('server: allowed_ips are prefixes without host bits, each given to one peer', () => {
      const s = (ips: string, more = ''): string => server(`  private_key_file: server.key\n  peers:\n${peer(CLIENT_PUBLIC, ips)}${more}`);
      failsAt(s('[10.0.0.5/24]'), 'server', /server\.peers\[0\]\.allowed_ips\[0\]: 10\.0\.0\.5\/24 has host bits set: the network is 10\.0\.0\.0\/24, a single host \/32$/);
      failsAt(s('[10.0.0.0/24, "fd00::1/64"]'), 'server', /server\.peers\[0\]\.allowed_ips\[1\]: fd00::1\/64 has host bits set: the network is fd00::\/64, a single host \/128$/);
      failsAt(s('[10.0.0.2/33]'), 'server', /allowed_ips\[0\]: prefix length \/33 is out of range$/);
      failsAt(s('["fd00::/129"]'), 'server', /allowed_ips\[0\]: prefix length \/129 is out of range$/);
      failsAt(s('[nowhere/8]'), 'server', /allowed_ips\[0\]: must be address\/prefix, got string "nowhere\/8"$/);
      failsAt(s('["fe80::1%eth0/128"]'), 'server', /allowed_ips\[0\]: must be address\/prefix/);
      failsAt(s('[]'), 'server', /server\.peers\[0\]\.allowed_ips: must be a non-empty list of the tunnel addresses this client may use/);
      failsAt(s('10.0.0.2/32'), 'server', /server\.peers\[0\]\.allowed_ips: must be a non-empty list/);
      failsAt(s('[10.0.0.2/32, 10.0.0.2]'), 'server', /allowed_ips\[1\]: 10\.0\.0\.2\/32 is listed twice$/);
      failsAt(s('["fd00::2/128"]', peer(OTHER_PUBLIC, '["fd00:0::0002/128"]')), 'server', /server\.peers\[1\]\.allowed_ips\[0\]: fd00::2\/128 is also allowed for peers\[0\]$/);
      // Overlapping prefixes of two peers are refused (WireGuard gives the address to the most
      // specific; here the wider peer could send as the other, so it is a config error), either order.
      failsAt(s('[10.0.0.0/25]', peer(OTHER_PUBLIC, '[10.0.0.2/32]')), 'server', /server\.peers\[1\]\.allowed_ips\[0\]: 10\.0\.0\.2\/32 overlaps 10\.0\.0\.0\/25 of peers\[0\]: an address may be allowed for one peer only$/);
      failsAt(s('[10.0.0.2/32]', peer(OTHER_PUBLIC, '[10.9.0.0/16, 0.0.0.0/0]')), 'server', /server\.peers\[1\]\.allowed_ips\[1\]: 0\.0\.0\.0\/0 overlaps 10\.0\.0\.2\/32 of peers\[0\]/);
      failsAt(s('["fd00::/64"]', peer(OTHER_PUBLIC, '["fd00::8:0:0/96"]')), 'server', /peers\[1\]\.allowed_ips\[0\]: fd00::8:0:0\/96 overlaps fd00::\/64 of peers\[0\]/);
      // Neighbours, the other family, and one peer's own nested prefixes are fine.
      assert.equal(at(s('[10.0.0.0/25]', peer(OTHER_PUBLIC, '[10.0.0.128/25, "fd00::/64"]')), 'server').peers.length, 2);
      assert.equal(at(s('[10.0.0.0/24, 10.0.0.3/32]'), 'server').peers[0]?.allowedIps.length, 2);
      assert.equal(at(s('[0.0.0.0/0, "::/0"]'), 'server').peers[0]?.allowedIps.length, 2);
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
      const dual = (extra: string): string => client(extra).replace('ip: 10.0.0.2 }', 'ip: 10.0.0.2, ipv6: "fd00::2/64" }');
      const c = parseConfig(dual('  routes: [0.0.0.0/0, "::/0", 192.168.50.0/24]\n'), 'c.yaml', 'client');
      assert.deepEqual(c.role === 'client' && c.routes.map((r) => `${r.address}/${r.prefix}`), ['0.0.0.0/0', '::/0', '192.168.50.0/24']);
      fails(client('  routes: [10.0.0.0]\n'), 'client', /client\.routes\[0\]: must be address\/prefix/);
      // What `ip route add` would refuse at start, said by the config with the entry named.
      fails(client('  routes: [192.168.50.1/24]\n'), 'client', /client\.routes\[0\]: 192\.168\.50\.1\/24 has host bits set: the network is 192\.168\.50\.0\/24/);
      fails(client('  routes: [10.9.0.0/16, 192.168.0.0/16, 10.9.0.0/16]\n'), 'client', /client\.routes\[2\]: 10\.9\.0\.0\/16 is listed already \(routes\[0\]\)/);
      fails(client('  routes: [10.0.0.0/24]\n'), 'client', /client\.routes\[0\]: 10\.0\.0\.0\/24 is the tunnel's own network/);
      fails(client('  routes: [0.0.0.0/0, 128.0.0.0/1]\n'), 'client', /client\.routes\[1\]: 128\.0\.0\.0\/1 is listed already \(routes\[0\]: a \/0 is added as its two \/1 halves, and 128\.0\.0\.0\/1 is one\)/);
      fails(client('  routes: ["::/1", "::/0"]\n'), 'client', /client\.routes\[1\]: ::\/0 is listed already \(routes\[0\]: a \/0 is added as its two \/1 halves/);
      // IPv6 into an IPv4-only tunnel: allowed, it keeps IPv6 from leaking past the tunnel (start says so).
      assert.equal(parseConfig(client('  routes: [0.0.0.0/0, "::/0"]\n'), 'c.yaml', 'client').role, 'client');
      assert.equal(parseConfig(client('  routes: [10.0.0.128/25]\n'), 'c.yaml', 'client').role, 'client', 'a part of the tunnel network may be routed');
      fails(client('  routes: 10.0.0.0/8\n'), 'client', /client\.routes: must be a list/);
      const s = parseConfig(server('  nat_out_interface: eth0\n'), 's.yaml', 'server');
      assert.equal(s.role === 'server' && s.natOutInterface, 'eth0');
      fails(server('  nat_out_interface: "eth 0"\n'), 'server', /nat_out_interface: 'eth 0' is not an interface name/);
      fails(client('  nat_out_interface: eth0\n'), 'client', /client\.nat_out_interface: is not a known field/);
    });
  });
});
