// The status server's exposure: it runs in the tunnel's process, on a control
// socket every local user of the namespace can reach (abstract unix sockets
// have no permissions) and on status_listen, so a client that opens
// connections and sends nothing must not be able to pile up descriptors and
// memory in the tunnel.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { memoryLogger } from '../../src/log.js';
import { buildRegistry } from '../../src/ops/metrics.js';
import { STATUS_MAX_CONNECTIONS, StatusServer } from '../../src/ops/status-server.js';
import { FakeTun } from '../helpers/fake-tun.js';

/** Resolves true when the server ends the connection within `ms`, false when it is still open. */
function endedWithin(s: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

describe('status server', () => {
  it('holds a bounded number of connections: idle ones beyond the bound are closed at once', async () => {
    const log = memoryLogger('warn');
    const tunnel = new Tunnel(new FakeTun('ut-cap'), DEFAULT_TIMING, log);
    const server = new StatusServer(() => ({ role: 'server', ...tunnel.snapshot() }), buildRegistry(() => tunnel.snapshot(), 'server'), log);
    const sockets: Socket[] = [];
    try {
      const { port } = await server.listen('127.0.0.1', 0);
      const open = async (): Promise<Socket> => {
        const s = connect({ host: '127.0.0.1', port });
        s.on('error', () => {});
        sockets.push(s);
        await new Promise((r) => s.once('connect', r));
        return s;
      };
      for (let i = 0; i < STATUS_MAX_CONNECTIONS; i++) await open();
      const extra = await open();
      assert.equal(await endedWithin(extra, 1000), true, `connection ${STATUS_MAX_CONNECTIONS + 1}, idle, is closed`);
      assert.equal(await endedWithin(sockets[0] as Socket, 50), false, 'the first ones are kept (until their header timeout)');
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
      tunnel.close();
    }
  });
});
