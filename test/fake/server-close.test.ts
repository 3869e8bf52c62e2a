// a connection still in its handshake when the server stops (SIGTERM
// while a client is dialling) is left open by ServerRole.close(); its HELLO,
// arriving after the stop, creates a session and an up link in the closed
// tunnel, which then holds the process (keepalive timers, socket) open.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { encodeHello } from '../../src/protocol/handshake.js';
import { startServer, stop } from '../helpers/harness.js';

describe('server stop with a connection in its handshake', () => {
  it('closes the pending connection; a HELLO after the stop makes no session', async () => {
    const server = await startServer(1);
    const port = server.role.listening()[0]!.port;
    const sock = connect({ host: '127.0.0.1', port });
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    await new Promise((r) => setTimeout(r, 50)); // accepted by the server: pending in admission
    let closedByServer = false;
    sock.once('close', () => (closedByServer = true));
    stop(server); // role.close() then tunnel.close(), as run.ts does on SIGTERM
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(closedByServer, 'the pending connection was closed by the stop, before it sent anything more');
    const hello = encodeHello({
      sessionId: randomBytes(16),
      offload: false,
      mode: 'duplicate',
      encryption: 'none',
      linkId: 0,
      linkCount: 1,
      addresses: [{ family: 4, address: '10.0.0.9', prefix: 24 }],
    });
    if (!sock.destroyed) sock.write(hello);
    await new Promise((r) => setTimeout(r, 200));
    const sessions = server.tunnel.registry.size;
    const up = server.log.lines.filter((l) => /link up/.test(l)).length;
    sock.destroy();
    for (const s of [...server.tunnel.registry.sessions]) server.tunnel.removeSession(s, 0 as never, 'test cleanup');
    assert.equal(up, 0, 'no link comes up after the server stopped');
    assert.equal(sessions, 0, 'no session is made in the closed tunnel');
  });
});
