// The status server's exposure: it runs in the tunnel's process, on a control
// socket every local user of the namespace can reach (abstract unix sockets
// have no permissions) and on status_listen, so a client that opens
// connections and sends nothing must not be able to pile up descriptors and
// memory in the tunnel.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import type { Registry } from 'prom-client';
import { DEFAULT_TIMING } from '../../src/config/types.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { DpError } from '../../src/errors.js';
import { memoryLogger } from '../../src/log.js';
import { buildRegistry } from '../../src/ops/metrics.js';
import { STATUS_CACHE_MS, STATUS_MAX_CONNECTIONS, STATUS_MAX_REQUESTS_PER_S, StatusServer } from '../../src/ops/status-server.js';
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

/** A status server over an idle tunnel on a fake TUN; `close` ends both. */
function testServer(
  tunName: string,
  opts: { status?: (tunnel: Tunnel) => unknown; registry?: (tunnel: Tunnel) => Registry } = {},
): { log: ReturnType<typeof memoryLogger>; server: StatusServer; close: () => void } {
  const log = memoryLogger('warn');
  const tunnel = new Tunnel(new FakeTun(tunName), DEFAULT_TIMING, log);
  const status = opts.status ?? ((t: Tunnel) => ({ role: 'server', ...t.snapshot() }));
  const registry = opts.registry?.(tunnel) ?? buildRegistry(() => tunnel.snapshot(), 'server');
  const server = new StatusServer(() => status(tunnel), registry, log);
  return {
    log,
    server,
    close: () => {
      server.close();
      tunnel.close();
    },
  };
}

describe('status server', () => {
  it('holds a bounded number of connections: idle ones beyond the bound are closed at once', async () => {
    const { server, close } = testServer('ut-cap');
    const sockets: Socket[] = [];
    try {
      const bound = await server.listen('127.0.0.1', 0);
      assert.ok(bound, 'listening');
      const { port } = bound;
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
      close();
    }
  });

  it('a client pipelining hundreds of requests gets at most the rate, /metrics is built at most once per cache window, and the event loop keeps turning', async () => {
    let builds = 0;
    const { server, close } = testServer('ut-flood', {
      registry: (tunnel) => {
        const registry = buildRegistry(() => tunnel.snapshot(), 'server');
        const metrics = registry.metrics.bind(registry);
        registry.metrics = () => {
          builds++;
          return metrics();
        };
        return registry;
      },
    });
    let s: Socket | undefined;
    try {
      const bound = await server.listen('127.0.0.1', 0);
      assert.ok(bound, 'listening');
      const { port } = bound;
      let maxLagMs = 0;
      let last = performance.now();
      const tick = setInterval(() => {
        const now = performance.now();
        maxLagMs = Math.max(maxLagMs, now - last - 5);
        last = now;
      }, 5);
      const started = performance.now();
      let answered = 0;
      const sock = connect({ host: '127.0.0.1', port });
      s = sock;
      sock.on('error', () => {});
      sock.on('data', (d: Buffer) => (answered += (d.toString('latin1').match(/HTTP\/1\.1 200/g) ?? []).length));
      await new Promise((r) => sock.once('connect', r));
      sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3 * STATUS_MAX_REQUESTS_PER_S));
      const closed = await endedWithin(sock, 5000);
      const elapsedMs = performance.now() - started;
      clearInterval(tick);
      assert.equal(closed, true, 'the connection is closed once it is over the rate');
      assert.ok(answered <= STATUS_MAX_REQUESTS_PER_S * (1 + elapsedMs / 1000), `answered ${answered} in ${elapsedMs.toFixed(0)} ms`);
      assert.ok(builds <= 1 + Math.ceil(elapsedMs / STATUS_CACHE_MS), `${builds} builds of /metrics in ${elapsedMs.toFixed(0)} ms`);
      assert.ok(server.stats.refused >= 1, 'the refusal is counted');
      assert.ok(maxLagMs < 500, `the event loop kept turning (longest timer delay ${maxLagMs.toFixed(0)} ms)`);
      // The budget refills: a second later, requests one after the other are answered.
      await new Promise((r) => setTimeout(r, 1000));
      for (let i = 0; i < 10; i++) {
        const res = await fetch(`http://127.0.0.1:${port}/status`);
        assert.equal(res.status, 200);
        assert.equal(((await res.json()) as { role: string }).role, 'server');
      }
    } finally {
      s?.destroy();
      close();
    }
  });

  it('a status_listen port someone else holds is a warning, not a stop: the tunnel runs on, with its control socket', async () => {
    const { log, server, close } = testServer('ut-busy');
    const squatter = createServer();
    try {
      await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
      const port = (squatter.address() as AddressInfo).port;
      assert.equal(await server.listen('127.0.0.1', port), undefined);
      assert.ok(log.lines.some((l) => /cannot serve status: the port is already in use; running without it/.test(l)), log.lines.join('\n'));
      // An address not on this host may be one not there yet (at boot): exit 1, which the systemd units restart after.
      await assert.rejects(
        server.listen('192.0.2.77', 9400),
        (e: unknown) => e instanceof DpError && e.exitCode === 1 && /cannot serve status on 192\.0\.2\.77:9400: no interface has that address \(yet\?\)/.test(e.message),
      );
    } finally {
      squatter.close();
      close();
    }
  });

  it('a flood on status_listen leaves the control socket its own budget', async () => {
    const { server, close } = testServer('ut-budget');
    const path = `\0dp-tcp/ut-budget-${process.pid}`;
    let sock: Socket | undefined;
    try {
      const bound = await server.listen('127.0.0.1', 0);
      assert.ok(bound);
      assert.equal(await server.listenControl(path), true);
      // The flood goes on (a new connection each time one is cut off) while the control socket is asked.
      let flooding = true;
      const flooder = (async (): Promise<void> => {
        while (flooding) {
          const flood = connect({ host: '127.0.0.1', port: bound.port });
          sock = flood;
          flood.on('error', () => {});
          await new Promise((r) => flood.once('connect', r));
          flood.write('GET /status HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3 * STATUS_MAX_REQUESTS_PER_S));
          await endedWithin(flood, 5000);
        }
      })();
      const answers: (number | string)[] = [];
      for (let i = 0; i < 8; i++) {
        await new Promise((r) => setTimeout(r, 50));
        answers.push(
          await new Promise<number | string>((resolve) => {
            const req = request({ socketPath: path, path: '/status' }, (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            });
            req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
            req.end();
          }),
        );
      }
      flooding = false;
      await flooder;
      assert.ok(server.stats.refused >= 1, 'the flood was refused');
      assert.deepEqual(answers, Array.from({ length: 8 }, () => 200), 'the control socket answered every time');
    } finally {
      sock?.destroy();
      close();
    }
  });

  it('a status document that fails to build is a 500, not an exception in the tunnel', async () => {
    const { server, close } = testServer('ut-500', {
      status: () => {
        throw new Error('snapshot failed');
      },
    });
    try {
      const bound = await server.listen('127.0.0.1', 0);
      assert.ok(bound);
      const res = await fetch(`http://127.0.0.1:${bound.port}/status`);
      assert.equal(res.status, 500);
      assert.match(await res.text(), /snapshot failed/);
    } finally {
      close();
    }
  });
});
