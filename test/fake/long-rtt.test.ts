// A link whose round trip is longer than dead_interval_ms (a geostationary
// satellite hop, a bloated queue): once up, keepalives arrive a one-way delay
// apart in steady state, so only the first exchange after the handshake could
// look like silence. It must not close the link.
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import type { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import type { SecurityConfig } from '../../src/config/types.js';
import { dialClient, FAST_TIMING, NO_SECURITY, pskSecurity, startServer, stop, until, type Side } from '../helpers/harness.js';
import { numbered, packetNumber } from '../helpers/packets.js';

let server: Side<ServerRole> | undefined;
let client: Side<ClientRole> | undefined;
const proxies: Server[] = [];
const sockets = new Set<Socket>();

afterEach(() => {
  stop(client, server);
  client = server = undefined;
  for (const s of sockets) s.destroy();
  sockets.clear();
  for (const p of proxies.splice(0)) p.close();
});

/** A TCP relay to 127.0.0.1:`port` that holds every chunk `oneWayMs` in each direction. */
async function delayingProxy(port: number, oneWayMs: number): Promise<number> {
  const proxy = createServer((inbound) => {
    const outbound = connect(port, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    const relay = (from: Socket, to: Socket): void => {
      from.on('data', (chunk: Buffer) => setTimeout(() => to.destroyed || to.write(chunk), oneWayMs));
    };
    relay(inbound, outbound);
    relay(outbound, inbound);
  });
  proxies.push(proxy);
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return (proxy.address() as { port: number }).port;
}

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
      const port = await delayingProxy(server.role.listening()[0]!.port, 250);
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
