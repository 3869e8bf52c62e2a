// A client whose links handshake at once, when the server restarts meanwhile:
// the answer a slow link brings from the server session that is gone must not
// take the client back to it from the one its other link already reached (it
// closed every healthy link, wiped the live keys and stalled the tunnel until
// a redial brought it forward again).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { encodeWelcome } from '../../src/protocol/handshake.js';
import type { ClientRole } from '../../src/roles/client.js';
import { dialClient, stop, type Side } from '../helpers/harness.js';

describe('a late answer from a replaced server session', () => {
  let client: Side<ClientRole> | undefined;
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  after(async () => {
    stop(client);
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  /** A listener that answers each HELLO with WELCOME(link `linkId`) of the epoch `answer` gives (after it resolves). */
  async function listener(linkId: number, answer: (n: number) => Promise<Buffer>): Promise<{ port: number; closedByClient: () => number }> {
    let n = 0;
    let closed = 0;
    const server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
      s.on('end', () => closed++);
      s.on('close', () => sockets.delete(s));
      const k = ++n;
      s.once('data', () => void answer(k).then((epoch) => s.destroyed || s.write(encodeWelcome({ epoch, linkId }))));
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as { port: number }).port, closedByClient: () => closed };
  }

  it('is refused and the link dialled again; the session keeps its epoch and its healthy link', async () => {
    const current = randomBytes(8);
    const gone = randomBytes(8);
    let up0 = (): void => {};
    const link0Up = new Promise<void>((r) => (up0 = r));
    // Link 0 reaches the server that runs now.
    const a = await listener(0, async () => {
      setImmediate(up0);
      return current;
    });
    // Link 1's first handshake was answered by the server session before it, its answer late: it
    // comes once link 0 is up. Its redial reaches the server that runs now.
    const b = await listener(1, async (k) => {
      if (k > 1) return current;
      await link0Up;
      await new Promise((r) => setTimeout(r, 50));
      return gone;
    });
    client = dialClient([a.port, b.port]);
    const s = client.role.session;
    const deadline = Date.now() + 5000;
    while (!(s.links.size === 2 && s.epoch.equals(current)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200));
    const lines = client.log.lines.join('\n');
    assert.ok(s.epoch.equals(current), `the session kept the running server's epoch (${s.epoch.toString('hex')})`);
    assert.equal(s.links.size, 2, 'both links up: link 1 after its redial');
    assert.doesNotMatch(lines, /server session changed/, 'the session never moved');
    assert.equal(a.closedByClient(), 0, 'link 0 was never closed');
    assert.ok(b.closedByClient() >= 1, 'the late answer\'s connection was closed by the client');
  });
});
