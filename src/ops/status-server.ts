// The operator's window: GET /status (JSON) and GET /metrics (Prometheus).
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { DpError, errorMessage, isSystemError } from '../errors.js';
import type { Logger } from '../log.js';

export class StatusServer {
  private server: Server | undefined;

  constructor(
    private readonly status: () => unknown,
    private readonly registry: Registry,
    private readonly log: Logger,
  ) {}

  async listen(address: string, port: number): Promise<{ address: string; port: number }> {
    const server = createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (url === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.status()));
      } else if (url === '/metrics') {
        this.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
          (e: unknown) => res.writeHead(500).end(errorMessage(e)),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('dp-tcp status: try /status or /metrics\n');
      }
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => {
        const why = isSystemError(e) && e.code === 'EADDRINUSE' ? 'the port is already in use' : errorMessage(e);
        reject(new DpError('ERR_LISTEN', `cannot serve status on ${address}:${port}: ${why}`, { exitCode: 2 }));
      });
      server.listen({ host: address, port }, () => resolve());
    });
    const a = server.address();
    const bound = { address, port: typeof a === 'object' && a ? a.port : port };
    this.log.info('status endpoint up', { url: `http://${address.includes(':') ? `[${address}]` : address}:${bound.port}/status` });
    return bound;
  }

  close(): void {
    this.server?.close();
    this.server?.closeAllConnections();
  }
}
