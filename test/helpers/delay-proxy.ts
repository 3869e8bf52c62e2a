// A TCP relay on loopback that holds every chunk a fixed time each way: a long
// path (a satellite hop, an intercontinental link) for the fake-TUN tier.
import { createServer, connect, type Server, type Socket } from 'node:net';

export class DelayingProxies {
  private readonly proxies: Server[] = [];
  private readonly sockets = new Set<Socket>();

  /** A relay to 127.0.0.1:`port` holding every chunk `oneWayMs` in each direction; resolves with its port. */
  async add(port: number, oneWayMs: number): Promise<number> {
    const proxy = createServer((inbound) => {
      const outbound = connect(port, '127.0.0.1');
      for (const s of [inbound, outbound]) {
        this.sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          inbound.destroy();
          outbound.destroy();
        });
      }
      const relay = (from: Socket, to: Socket): void => {
        from.on('data', (chunk: Buffer) => setTimeout(() => to.destroyed || to.write(chunk), oneWayMs));
      };
      relay(inbound, outbound);
      relay(outbound, inbound);
    });
    this.proxies.push(proxy);
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    return (proxy.address() as { port: number }).port;
  }

  /** Closes every relay and connection. */
  close(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    for (const p of this.proxies.splice(0)) p.close();
  }
}
