// A client whose links handshake at once, when the server restarts meanwhile:
// the answer a slow link brings from the server session that is gone must not
// take the client back to it from the one its other link already reached (it
// closed every healthy link, wiped the live keys and stalled the tunnel until
// a redial brought it forward again).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { encodeWelcome } from '../../src/protocol/handshake.js';
import type { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import { dialClient, FAST_TIMING, pskSecurity, startServer, stop, type Side } from '../helpers/harness.js';

describe('a late answer from a replaced server session', () => {
  let client: Side<ClientRole> | undefined;
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  let servers2: Array<Side<ServerRole> | undefined> = [];
  after(async () => {
    stop(client, ...servers2);
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
      while ((client?.role.session.links.size ?? 0) < 1) await new Promise((r) => setTimeout(r, 5));
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
    assert.match(lines, /answered by another server session/, 'the late answer was refused (not timed out)');
    assert.equal(a.closedByClient(), 0, 'link 0 was never closed');
    assert.ok(b.closedByClient() >= 1, 'the late answer\'s connection was closed by the client');
  });

  it('keyed: a RESPONSE from the server before a restart, held until link 0 is up on the one after, is refused, and the link dialled again', async () => {
    stop(client);
    const sec = pskSecurity(randomBytes(32));
    const before = await startServer(2, FAST_TIMING, sec);
    const now = await startServer(2, FAST_TIMING, sec);
    servers2 = [before, now];
    // Link 1 through a proxy: its first connection reaches the server before the restart, whose
    // answer the proxy holds until link 0 is up on the server after it; later ones reach that one.
    let n = 0;
    const proxy = createServer((down) => {
      sockets.add(down);
      const first = ++n === 1;
      const up = connect((first ? before : now).role.listening()[1]!.port, '127.0.0.1');
      sockets.add(up);
      down.on('error', () => {});
      up.on('error', () => {});
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
      down.pipe(up);
      if (!first) return void up.pipe(down);
      const held: Buffer[] = [];
      up.on('data', (b: Buffer) => held.push(b));
      const poll = setInterval(() => {
        if ((client?.role.session.links.size ?? 0) < 1) return;
        clearInterval(poll);
        setTimeout(() => held.forEach((b) => down.write(b)), 50);
      }, 5);
    });
    servers.push(proxy);
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    client = dialClient([now.role.listening()[0]!.port, (proxy.address() as { port: number }).port], FAST_TIMING, '10.0.0.2', sec);
    const s = client.role.session;
    const deadline = Date.now() + 5000;
    while (s.links.size < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300));
    const current = [...now.tunnel.registry.sessions][0]!.epoch;
    assert.ok(n >= 2, 'link 1 was dialled again');
    assert.ok(s.epoch.equals(current), 'the session is on the running server');
    assert.equal(s.links.size, 2, 'both links up');
    const lines = client.log.lines.join('\n');
    assert.doesNotMatch(lines, /server session changed/, 'the session never moved');
    assert.match(lines, /answered by another server session/, 'the late answer was refused (not timed out)');
    assert.equal(s.linkStats.get(0)?.stats.connects, 1, 'link 0 was never dialled again');
  });
});
