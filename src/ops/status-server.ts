// The operator's window: GET /status (JSON) and GET /metrics (Prometheus), on
// status_listen (TCP) and on the control socket `dp-tcp status` finds by
// itself (an abstract unix socket named after the TUN: src/ops/discovery.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { DpError, errorMessage, isSystemError } from '../errors.js';
import type { Logger } from '../log.js';
import { TokenBucket } from '../token-bucket.js';

/**
 * Connections each of the two servers holds at once; beyond, a new one is
 * closed at once. The servers run in the tunnel's process and the control
 * socket is open to every local user of the namespace (an abstract socket has
 * no permissions): without a bound, connections that send nothing would pile
 * up descriptors and memory in the tunnel until it could accept no link.
 */
export const STATUS_MAX_CONNECTIONS = 32;
/**
 * A request's headers must arrive within this time (Node's default is 60 s,
 * checked every 30 s), and a connection that sends nothing is closed after it
 * too (Node's default: never), so none holds a slot for long.
 */
const HEADERS_TIMEOUT_MS = 5000;
/**
 * Requests each of the two servers answers per second (a burst of as many is
 * allowed); beyond, the connection is closed unanswered. Any local user can
 * reach them, and they run on the tunnel's event loop: a client pipelining
 * thousands of requests must not take the turns the links need (a link whose
 * PINGs wait past dead_interval_ms is closed by its peer). Each server has its
 * own budget: a flood on status_listen does not lock the administrator's
 * `dp-tcp status` out of the control socket.
 */
export const STATUS_MAX_REQUESTS_PER_S = 100;
/** A /status or /metrics body is built at most once in this time; requests in between get that one. */
export const STATUS_CACHE_MS = 100;

/** What the servers answered and refused (over the rate), for the status document. */
export interface StatusServerStats {
  requests: number;
  refused: number;
}

interface Cached {
  atMs: number;
  body: Promise<string>;
}

export class StatusServer {
  private server: Server | undefined;
  private control: Server | undefined;
  readonly stats: StatusServerStats = { requests: 0, refused: 0 };
  private lastRefusalLogMs = -Infinity;
  private readonly cache = new Map<string, Cached>();

  constructor(
    private readonly status: () => unknown,
    private readonly registry: Registry,
    private readonly log: Logger,
  ) {}

  /** An HTTP server for `handle`, with the bounds above. */
  private create(): Server {
    const budget = new TokenBucket(STATUS_MAX_REQUESTS_PER_S, STATUS_MAX_REQUESTS_PER_S / 1000);
    const server = createServer(
      { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: 2 * HEADERS_TIMEOUT_MS, connectionsCheckingInterval: 1000 },
      (req, res) => this.handle(req, res, budget),
    );
    server.maxConnections = STATUS_MAX_CONNECTIONS;
    server.setTimeout(HEADERS_TIMEOUT_MS);
    return server;
  }

  /** The body of `url`, built afresh only when the last one is older than STATUS_CACHE_MS. */
  private body(url: string, nowMs: number, build: () => Promise<string>): Promise<string> {
    const c = this.cache.get(url);
    if (c !== undefined && nowMs - c.atMs < STATUS_CACHE_MS) return c.body;
    const body = build();
    this.cache.set(url, { atMs: nowMs, body });
    return body;
  }

  private handle(req: IncomingMessage, res: ServerResponse, budget: TokenBucket): void {
    const now = performance.now();
    if (!budget.take(1, now)) {
      this.stats.refused++;
      if (now - this.lastRefusalLogMs >= 60_000) {
        this.lastRefusalLogMs = now;
        this.log.warn('status requests over the rate: connections closed unanswered', { limitPerS: STATUS_MAX_REQUESTS_PER_S, refused: this.stats.refused });
      }
      req.socket.destroy();
      return;
    }
    this.stats.requests++;
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/status' || url === '/metrics') {
      const metrics = url === '/metrics';
      // A document that fails to build is a 500 (for at most STATUS_CACHE_MS), not an exception in the tunnel.
      const build = metrics ? () => this.registry.metrics() : () => new Promise<string>((resolve) => resolve(JSON.stringify(this.status())));
      this.body(url, now, build).then(
        (text) => res.writeHead(200, { 'content-type': metrics ? this.registry.contentType : 'application/json' }).end(text),
        (e: unknown) => res.writeHead(500).end(errorMessage(e)),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('dp-tcp status: try /status or /metrics\n');
    }
  }

  /**
   * The control socket (an abstract unix address: see src/ops/discovery.ts).
   * Not being able to take it is no reason to stop a tunnel: a warning, and
   * status_listen still answers.
   */
  async listenControl(path: string): Promise<boolean> {
    const server = this.create();
    this.control = server;
    return await new Promise<boolean>((resolve) => {
      server.once('error', (e) => {
        this.control = undefined;
        this.log.warn('cannot serve the control socket: dp-tcp status will not find this instance by itself', {
          socket: `@${path.slice(1)}`,
          error: isSystemError(e) && e.code === 'EADDRINUSE' ? 'the name is taken' : errorMessage(e),
        });
        resolve(false);
      });
      server.listen({ path }, () => {
        this.log.debug('control socket up', { socket: `@${path.slice(1)}` });
        resolve(true);
      });
    });
  }

  /**
   * status_listen. A port already taken is no reason to stop a tunnel either
   * (any local user can take 9400 first, and a unit that exits 2 is not
   * restarted): a warning, undefined, and the control socket still answers.
   * An address no interface has (yet) can pass, as at boot: exit 1, which
   * the systemd units restart after. Any other failure is the config's: exit 2.
   */
  async listen(address: string, port: number): Promise<{ address: string; port: number } | undefined> {
    const server = this.create();
    this.server = server;
    const up = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e) => {
        if (isSystemError(e) && e.code === 'EADDRINUSE') {
          this.server = undefined;
          this.log.warn('cannot serve status: the port is already in use; running without it (dp-tcp status still finds this instance by its control socket)', {
            status_listen: `${address}:${port}`,
            remedy: 'another process has it (ss -ltnp): give this instance another status_listen, or off',
          });
          resolve(false);
          return;
        }
        // An address not there yet can pass (see the links' listeners): exit 1, which systemd restarts after.
        const passing = isSystemError(e) && e.code === 'EADDRNOTAVAIL';
        reject(new DpError('ERR_LISTEN', `cannot serve status on ${address}:${port}: ${passing ? 'no interface has that address (yet?)' : errorMessage(e)}`, { exitCode: passing ? 1 : 2 }));
      });
      server.listen({ host: address, port }, () => resolve(true));
    });
    if (!up) return undefined;
    const a = server.address();
    const bound = { address, port: typeof a === 'object' && a ? a.port : port };
    this.log.info('status endpoint up', { url: `http://${address.includes(':') ? `[${address}]` : address}:${bound.port}/status` });
    return bound;
  }

  close(): void {
    for (const s of [this.server, this.control]) {
      s?.close();
      s?.closeAllConnections();
    }
  }
}
