// The shipped four-link examples (config/*.links4.yaml, run by scripts/demo.sh)
// load and describe one matching pair: four links, each client link dialling
// the server listener of the same position, and a client whose tunnel
// addresses are exactly what the server allows it.
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { ClientConfig, ServerConfig } from '../../src/config/types.js';
import { publicKeyOf } from '../../src/secure/primitives.js';
import { removeDir, tempDir } from '../helpers/tmp.js';

const root = new URL('../../', import.meta.url).pathname;
// The examples carry RFC 7748's test public keys as placeholders (refused as shipped: their private
// halves are published); keys of this test's own go in their place, as scripts/demo.sh puts fresh ones.
const PLACEHOLDER = { server: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=', client: '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=' };
const SERVER_PRIVATE = Buffer.alloc(32, 0x61);
const CLIENT_PRIVATE = Buffer.alloc(32, 0x62);

describe('config/*.links4.yaml', () => {
  const dir = tempDir('dptcp-links4-');
  after(() => removeDir(dir));

  function load<T>(side: 'server' | 'client'): T {
    const key = join(dir, `${side}.key`);
    writeFileSync(key, `${(side === 'server' ? SERVER_PRIVATE : CLIENT_PRIVATE).toString('base64')}\n`, { mode: 0o600 });
    chmodSync(key, 0o600);
    const text = readFileSync(join(root, `config/${side}.links4.yaml`), 'utf8');
    assert.ok(text.includes(`private_key_file: /etc/dp-tcp/${side}.key`), 'the example names its key file under /etc/dp-tcp');
    const file = join(dir, `${side}.yaml`);
    assert.ok(text.includes(side === 'server' ? PLACEHOLDER.client : PLACEHOLDER.server), 'the example names the other side by its placeholder');
    writeFileSync(
      file,
      text
        .replaceAll('/etc/dp-tcp/', `${dir}/`)
        .replaceAll(PLACEHOLDER.server, publicKeyOf(SERVER_PRIVATE).toString('base64'))
        .replaceAll(PLACEHOLDER.client, publicKeyOf(CLIENT_PRIVATE).toString('base64')),
    );
    return loadConfig(file, side) as T;
  }

  it('four links on each side, pairwise matching; the peer allows exactly the client addresses', () => {
    const s = load<ServerConfig>('server');
    const c = load<ClientConfig>('client');
    assert.equal(s.links.length, 4, 'the server listens on four links');
    assert.equal(c.links.length, 4, 'the client dials four links');
    c.links.forEach((l, i) => {
      const listen = s.links[i]!;
      assert.equal(l.name, listen.name, `link ${i} has one name on both sides`);
      assert.equal(`${l.remoteAddress}:${l.remotePort}`, `${listen.listenAddress}:${listen.listenPort}`, `client link ${i} dials the server's link ${i}`);
      assert.ok(l.localAddress !== undefined, `client link ${i} leaves through its own source address`);
    });
    assert.equal(new Set(c.links.map((l) => l.localAddress)).size, 4, 'four different source addresses');
    assert.equal(s.limits.maxLinksPerSession, 4, 'the server takes four links per client');
    assert.deepEqual(c.security.serverPublicKey, publicKeyOf(SERVER_PRIVATE), 'the client trusts this server');
    const peer = s.security.peers[0]!;
    assert.deepEqual(peer.publicKey, publicKeyOf(CLIENT_PRIVATE), 'the server lists this client');
    assert.deepEqual(
      peer.allowedIps.map((p) => `${p.address}/${p.prefix}`),
      c.tunnel.addresses.map((a) => `${a.address}/${a.family === 4 ? 32 : 128}`),
      "the client's tunnel addresses are what the server allows it",
    );
  });
});
