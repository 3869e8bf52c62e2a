// a connection still in its handshake when the server stops (SIGTERM
// while a client is dialling) is left open by ServerRole.close(); its HELLO,
// arriving after the stop, creates a session and an up link in the closed
// tunnel, which then holds the process (keepalive timers, socket) open.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { startServer, stop } from '../helpers/harness.js';

describe('server stop with a connection in its handshake', () => {
  it('closes the pending connection when the server stops', async () => {
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
    sock.destroy();
  });
});
