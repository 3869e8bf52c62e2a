// What a client says when it cannot reach its server (fake TUN, loopback):
// a warning per link at once, with the address and the reason, then silence
// at the default level until the rate limit allows another; one info line
// when the link comes up; and status lists the links that never connected.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { formatStatus, type StatusDocument } from '../../src/ops/format.js';
import { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import { dialClient, FAST_TIMING, NO_SECURITY, pskSecurity, startServer, stop, until, type Side } from '../helpers/harness.js';

let client: Side<ClientRole> | undefined;
let server: Side<ServerRole> | undefined;

afterEach(() => {
  stop(client, server);
  client = server = undefined;
});

/** Ports nothing listens on (bound, then closed: loopback answers them with RST). */
async function closedPorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    ports.push((s.address() as { port: number }).port);
    await new Promise((r) => s.close(r));
  }
  return ports;
}

const atLevel = (c: Side<ClientRole>, level: string): string[] => c.log.lines.filter((l) => l.split(' ')[1] === level);

function statusOf(c: Side<ClientRole>): StatusDocument {
  return { role: 'client', version: 'test', pid: 1, tunName: 'fake-c', ...c.tunnel.snapshot(), links: c.role.dialStatus() };
}

describe('a client that cannot reach its server', () => {
  it('warns once per link at once (address, reason), then stays quiet at warn while it retries', async () => {
    const ports = await closedPorts(2);
    const t0 = Date.now();
    client = dialClient(ports);
    const c = client;
    // "At once": each link's warning is logged on its first failure, not after a few.
    const failuresAtWarning = new Map<number, number>();
    const lines = c.log.lines;
    const push = lines.push.bind(lines);
    lines.push = (...ls: string[]): number => {
      for (const l of ls) {
        const i = Number(/\[test\/l(\d+)\]/.exec(l)?.[1]);
        if (l.split(' ')[1] === 'WARN' && !failuresAtWarning.has(i)) failuresAtWarning.set(i, c.role.dialStatus()[i]!.failures);
      }
      return push(...ls);
    };
    await until(() => atLevel(c, 'WARN').length >= 2, 'a warning per link', 5000);
    assert.deepEqual([...failuresAtWarning].sort(), [[0, 1], [1, 1]], 'each warned on its first failure');
    assert.ok(Date.now() - t0 < 5000, 'within 5 s of the start');
    for (const [i, port] of ports.entries()) {
      const w = atLevel(c, 'WARN').filter((l) => l.includes(`[test/l${i}]`));
      assert.equal(w.length, 1, `one warning for l${i}`);
      assert.match(w[0]!, new RegExp(`link l${i} cannot connect to 127\\.0\\.0\\.1:${port}: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}`), 'address and reason');
      assert.match(w[0]!, /error=ECONNREFUSED/, 'the code as a field');
      assert.match(w[0]!, /hint="nothing listens there/, 'what it usually means');
    }
    // FAST_TIMING redials every 200 ms at most: many failures, still one warning each.
    await until(() => c.role.dialStatus().every((d) => d.failures >= 5), 'five failures per link', 5000);
    assert.equal(atLevel(c, 'WARN').length, 2, 'no more warnings within the 30 s window');
    assert.ok(atLevel(c, 'DEBUG').some((l) => /link still cannot connect/.test(l)), 'the rest at debug');
    assert.equal(atLevel(c, 'ERROR').length, 0, 'nothing at error');

    // Status lists both links, though neither ever connected, with the error and the next attempt.
    const dial = c.role.dialStatus();
    assert.deepEqual(dial.map((d) => [d.name, d.remote, d.ups]), [['l0', `127.0.0.1:${ports[0]}`, 0], ['l1', `127.0.0.1:${ports[1]}`, 0]], 'every configured link');
    assert.ok(dial.every((d) => /ECONNREFUSED/.test(d.lastError ?? '')), 'with its last error');
    const text = formatStatus(statusOf(c));
    for (const [i, port] of ports.entries()) {
      assert.match(
        text,
        new RegExp(`^ {2}l${i} +down .* 127\\.0\\.0\\.1:${port} \\(never connected: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}, \\d+ failures(, retry in [\\d.]+ s| ?, connecting now)?`, 'm'),
        `l${i} in the table:\n${text}`,
      );
    }

    // The server comes: one info line per link says it recovered, after how many failures.
    server = await startServer(2, FAST_TIMING, NO_SECURITY, ports);
    await until(() => c.role.session.upLinks().length === 2, 'both links up', 5000);
    const recovered = atLevel(c, 'INFO').filter((l) => /link up, after failing/.test(l));
    assert.equal(recovered.length, 2, 'one recovery line per link');
    assert.ok(recovered.every((l) => /failures=\d+ failing_for_ms=\d+/.test(l)), 'with the failures it took');
    assert.match(formatStatus(statusOf(c)), /^ {2}l0 +up /m, 'up in the table');
  });

  it('a server that refuses the handshake: one warning with its reason, no error on every retry', async () => {
    // The server wants a psk; the client comes in open mode (HELLO): refused every time.
    server = await startServer(2, FAST_TIMING, pskSecurity(Buffer.from('a group key, at least 16 bytes')));
    const ports = server.role.listening().map((l) => l.port);
    client = dialClient(ports);
    const c = client;
    await until(() => c.role.dialStatus().every((d) => d.failures >= 4), 'four refusals per link', 5000);
    assert.equal(atLevel(c, 'ERROR').length, 0, 'no error per retry');
    const warns = atLevel(c, 'WARN');
    assert.equal(warns.length, 2, `one warning per link:\n${warns.join('')}`);
    assert.ok(warns.every((l) => /cannot connect to 127\.0\.0\.1:\d+: /.test(l)), 'each names the address');
    assert.ok(c.role.dialStatus().every((d) => d.lastError !== null && d.ups === 0), 'status has the reason');
  });
});
