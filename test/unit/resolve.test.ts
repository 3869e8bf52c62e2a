// Host names in a config become addresses at start (config/resolve.ts); the
// loader accepts them where the original dp-tcp did (the server's address, a
// listen address), never for a source address or the tunnel's own.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHostName, parseConfig } from '../../src/config/load.js';
import { ResolveErrors, resolveNames, type Lookup } from '../../src/config/resolve.js';
import { DpError } from '../../src/errors.js';

const table: Record<string, string[]> = {
  'vpn.example.com': ['203.0.113.10', '2001:db8::10'],
  localhost: ['127.0.0.1', '::1'],
};
const asked: Array<[string, number]> = [];
const lookup: Lookup = async (name, family) => {
  asked.push([name, family]);
  const found = (table[name] ?? []).find((a) => family === 0 || (family === 4) === !a.includes(':'));
  if (found === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND', errno: -3008, syscall: 'getaddrinfo' });
  return found;
};

describe('host names in a config', () => {
  it('are read where the original read them, and only there', () => {
    for (const s of ['vpn.example.com', 'localhost', 'a-b.c', 'host.', 'x1.example']) assert.ok(isHostName(s), s);
    for (const s of ['10.0.0.1', '::1', '1.2.3', 'a..b', '-a.b', 'a b', 'a_b.c', '', 'x'.repeat(64)]) assert.ok(!isHostName(s), s);
    const c = parseConfig(
      'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  tcp1_dial_addr: vpn.example.com\n  tcp1_dial_port: 31411\n  tcp2_dial_addr: 10.0.2.1\n  tcp2_dial_port: 31413\n',
      'test.yaml',
      'client',
    );
    assert.deepEqual(c.role === 'client' && c.links.map((l) => l.remoteAddress), ['vpn.example.com', '10.0.2.1']);
    const m = parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { remote: "vpn.example.com:31411", local: 192.0.2.10 }\n', 'test.yaml', 'client');
    assert.equal(m.role === 'client' && m.links[0]?.remoteAddress, 'vpn.example.com');
    const s = parseConfig('server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  tcp1_listen_addr: localhost\n  tcp1_listen_port: 31411\n', 'test.yaml', 'server');
    assert.equal(s.links[0] && 'listenAddress' in s.links[0] && s.links[0].listenAddress, 'localhost');
    assert.throws(
      () => parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { remote: "vpn.example.com:1", local: gateway.lan }\n', 'test.yaml', 'client'),
      /client\.links\[0\]\.local: must be an IP address, got 'gateway\.lan'/,
    );
    assert.throws(
      () => parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { remote: "not a name:1" }\n', 'test.yaml', 'client'),
      /client\.links\[0\]\.remote: must be address:port or name:port \(IPv6 as \[address\]:port\), got 'not a name:1'/,
    );
  });

  it('become addresses at start: of the source address family, each name asked once', async () => {
    asked.length = 0;
    const c = parseConfig(
      'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  connections_per_link: 2\n  links:\n    - { name: a, remote: "vpn.example.com:1", local: "2001:db8::2" }\n    - { name: b, remote: "vpn.example.com:2" }\n    - { name: c, remote: "10.0.3.1:3" }\n',
      'test.yaml',
      'client',
    );
    const { config, resolved } = await resolveNames(c, lookup);
    assert.ok(config.role === 'client' && Object.isFrozen(config) && Object.isFrozen(config.links));
    assert.deepEqual(
      config.links.map((l) => [l.name, 'remoteAddress' in l ? l.remoteAddress : '']),
      c.links.map((l) => [l.name, l.name.startsWith('a') ? '2001:db8::10' : l.name.startsWith('b') ? '203.0.113.10' : '10.0.3.1']),
    );
    assert.deepEqual(asked.sort(), [['vpn.example.com', 0], ['vpn.example.com', 6]], 'once per name and family, though each link has two connections');
    assert.ok(resolved.some((r) => r.name === 'vpn.example.com' && r.address === '203.0.113.10'));
    const s = parseConfig('server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - { listen: "localhost:31411" }\n', 'test.yaml', 'server');
    const rs = (await resolveNames(s, lookup)).config;
    assert.equal(rs.role === 'server' && rs.links[0]?.listenAddress, '127.0.0.1');
  });

  it('a listen name that resolves to where another link listens stops the start (EADDRINUSE would read as another program)', async () => {
    const s = parseConfig('server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - { listen: "127.0.0.1:31411" }\n    - { name: b, listen: "localhost:31411" }\n', 'test.yaml', 'server');
    await assert.rejects(resolveNames(s, lookup), (e: unknown) => {
      assert.ok(e instanceof DpError);
      assert.equal(e.exitCode, 2);
      assert.match(e.message, /^test\.yaml: link b \(localhost\): 127\.0\.0\.1:31411 overlaps 127\.0\.0\.1:31411: one address and port, one link, of link /);
      return true;
    });
    const fine = parseConfig('server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - { listen: "127.0.0.1:31411" }\n    - { listen: "localhost:31412" }\n', 'test.yaml', 'server');
    assert.equal((await resolveNames(fine, lookup)).config.links.length, 2);
  });

  it('a name that does not resolve stops the start, naming the link, the name and the answer', async () => {
    const c = parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { name: isp-a, remote: "nowhere.example:1" }\n', 'test.yaml', 'client');
    await assert.rejects(resolveNames(c, lookup), (e: unknown) => {
      assert.ok(e instanceof DpError);
      assert.equal(e.code, 'ERR_CONFIG');
      assert.equal(e.exitCode, 2);
      assert.equal(e.message, "test.yaml: link isp-a: cannot resolve the server's name 'nowhere.example': ENOTFOUND");
      return true;
    });
    // A resolver that did not answer is no config error: exit 1, so that systemd starts it again
    // (its units do not restart on exit 2).
    const flaky: Lookup = async (name) => {
      throw Object.assign(new Error(`getaddrinfo EAI_AGAIN ${name}`), { code: 'EAI_AGAIN', errno: -3001, syscall: 'getaddrinfo' });
    };
    await assert.rejects(resolveNames(c, flaky), (e: unknown) => {
      assert.ok(e instanceof DpError);
      assert.equal(e.code, 'ERR_RESOLVE');
      assert.equal(e.exitCode, 1);
      assert.match(e.message, /link isp-a: cannot resolve the server's name 'nowhere\.example': EAI_AGAIN$/);
      return true;
    });
    const v4only = parseConfig('client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n    - { name: l, remote: "localhost:1", local: "2001:db8::2" }\n', 'test.yaml', 'client');
    table['localhost'] = ['127.0.0.1'];
    await assert.rejects(resolveNames(v4only, lookup), /link l: cannot resolve the server's name 'localhost' to an IPv6 address \(its local address is one\): ENOTFOUND/);
  });

  it('every name that does not resolve is reported at once, in the order of the links', async () => {
    const yaml = (names: string[]): string =>
      'client:\n  tunnel_device: { name: t0, ip: 10.0.0.2 }\n  links:\n' + names.map((n, i) => `    - { name: l${i}, remote: "${n}:${i + 1}" }\n`).join('');
    // The second lookup fails first: the order is the links', not the answers'.
    const slowFirst: Lookup = async (name, family) => {
      if (name === 'first.example') await new Promise((r) => setTimeout(r, 20));
      if (name === 'later.example') throw Object.assign(new Error(`getaddrinfo EAI_AGAIN ${name}`), { code: 'EAI_AGAIN' });
      return lookup(name, family);
    };
    const c = parseConfig(yaml(['first.example', 'vpn.example.com', 'later.example']), 'test.yaml', 'client');
    await assert.rejects(resolveNames(c, slowFirst), (e: unknown) => {
      assert.ok(e instanceof ResolveErrors, String(e));
      assert.deepEqual(
        e.errors.map((x) => x.message),
        ["test.yaml: link l0: cannot resolve the server's name 'first.example': ENOTFOUND", "test.yaml: link l2: cannot resolve the server's name 'later.example': EAI_AGAIN"],
      );
      assert.equal(e.message, e.errors.map((x) => x.message).join('\n'), 'the message holds each');
      assert.equal(e.code, 'ERR_CONFIG', 'a name that does not exist makes it a config error');
      assert.equal(e.exitCode, 2);
      return true;
    });
    // Only resolvers that did not answer: exit 1, as for one.
    const down: Lookup = async (name) => {
      throw Object.assign(new Error(`getaddrinfo EAI_AGAIN ${name}`), { code: 'EAI_AGAIN' });
    };
    await assert.rejects(resolveNames(parseConfig(yaml(['a.example', 'b.example']), 'test.yaml', 'client'), down), (e: unknown) => {
      assert.ok(e instanceof ResolveErrors);
      assert.equal(e.errors.length, 2);
      assert.equal(e.code, 'ERR_RESOLVE');
      assert.equal(e.exitCode, 1);
      return true;
    });
    // One name: its own error, as before.
    await assert.rejects(resolveNames(parseConfig(yaml(['a.example', '10.0.0.9']), 'test.yaml', 'client'), down), (e: unknown) => {
      assert.ok(e instanceof DpError && !(e instanceof ResolveErrors));
      return true;
    });
    const s = parseConfig('server:\n  tunnel_device: { name: t0, ip: 10.0.0.1 }\n  links:\n    - { name: a, listen: "x.example:1" }\n    - { name: b, listen: "y.example:2" }\n', 'test.yaml', 'server');
    await assert.rejects(resolveNames(s, lookup), (e: unknown) => e instanceof ResolveErrors && e.errors.length === 2 && /link b: cannot resolve the listen name 'y\.example'/.test(e.message));
  });
});
