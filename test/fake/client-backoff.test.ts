// A server that completes the handshake and then drops the link at once
// (a middlebox that passes the small handshake frames but blackholes data, a
// server that closes after WELCOME) must not be redialled at reconnect_min_ms
// forever: the backoff must grow while links do not stay up.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { encodeWelcome } from '../../src/protocol/handshake.js';
import { dialClient, stop, type Side } from '../helpers/harness.js';
import type { ClientRole } from '../../src/roles/client.js';

describe('client backoff against a link that comes up and drops at once', () => {
  let client: Side<ClientRole> | undefined;
  after(() => stop(client));

  it('does not redial at the minimum delay forever', async () => {
    let accepted = 0;
    const acceptedAt: number[] = [];
    const sockets = new Set<Socket>();
    const server = createServer((s) => {
      accepted++;
      acceptedAt.push(performance.now());
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
      s.once('data', () => {
        // Handshake answered: the link is up for the client...
        s.write(encodeWelcome({ epoch: randomBytes(8), linkId: 0 }));
        // ...and dropped 5 ms later.
        setTimeout(() => s.destroy(), 5);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    // FAST_TIMING: reconnect 20 .. 200 ms. With backoff growing to 200 ms, 3 s hold at most ~20 dials.
    client = dialClient([port]);
    await new Promise((r) => setTimeout(r, 3000));
    const c = client;
    stop(client);
    client = undefined;
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    const downs = c.log.lines.filter((l) => / WARN .*link down/.test(l)).length;
    assert.ok(accepted <= 30, `${accepted} connections in 3 s (reconnect_max_ms 200: expected at most ~20)`);
    // It does keep redialling (every 100-200 ms once the backoff is at its top), and the gaps grew to get there.
    assert.ok(accepted >= 10, `${accepted} connections in 3 s: it kept redialling`);
    const gaps = acceptedAt.slice(1).map((t, i) => t - (acceptedAt[i] as number));
    assert.ok(Math.max(...gaps.slice(-3)) > 2 * Math.min(...gaps.slice(0, 2)), `gaps grew: ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
    assert.ok(downs <= 30, `${downs} 'link down' warnings in 3 s`);
  });
});
