// A link whose round trip is longer than dead_interval_ms (a geostationary
// satellite hop, a bloated queue): once up, keepalives arrive a one-way delay
// apart in steady state, so only the first exchange after the handshake could
// look like silence. It must not close the link.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import type { SecurityConfig } from '../../src/config/types.js';
import { DelayingProxies } from '../helpers/delay-proxy.js';
import { dialClient, FAST_TIMING, NO_SECURITY, pskSecurity, startServer, stop, until, type Side } from '../helpers/harness.js';
import { numbered, packetNumber } from '../helpers/packets.js';

let server: Side<ServerRole> | undefined;
let client: Side<ClientRole> | undefined;
const proxies = new DelayingProxies();

afterEach(() => {
  stop(client, server);
  client = server = undefined;
  proxies.close();
});

describe('a link with a round trip longer than dead_interval_ms', () => {
  const modes: [string, SecurityConfig][] = [
    ['open mode', NO_SECURITY],
    ['psk form, sealed', pskSecurity(Buffer.alloc(32, 7))],
  ];
  for (const [name, security] of modes) {
    it(`stays up after the handshake (${name}) and carries packets`, async () => {
      // FAST_TIMING: dead_interval_ms 400, keepalive 50 ms. Round trip through the relay: 500 ms.
      const timing = { ...FAST_TIMING, handshakeTimeoutMs: 1500 };
      server = await startServer(1, timing, security);
      const port = await proxies.add(server.role.listening()[0]!.port, 250);
      client = dialClient([port], timing, '10.0.0.2', security);
      const serverLinks = (): number => [...server!.tunnel.sessions].reduce((n, s) => n + s.upLinks().length, 0);
      await until(() => client!.role.session.upLinks().length === 1 && serverLinks() === 1, 'the link up on both sides', 5000);
      // Past the point where a side that had heard nothing since its handshake message closed it.
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(serverLinks(), 1, 'still up on the server');
      assert.doesNotMatch(server.log.lines.join('\n'), /dead: nothing heard/, 'the server never declared it dead');
      assert.doesNotMatch(client.log.lines.join('\n'), /dead: nothing heard|link down/, 'the client never lost it');
      client.tun.inject([numbered(1), numbered(2)]);
      await server.tun.waitFor(2, 3000);
      assert.deepEqual(server.tun.written.map(packetNumber), [1, 2]);
    });
  }
});
