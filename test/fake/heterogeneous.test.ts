// Links of different delay (a fibre line beside a satellite or a congested
// mobile path): aggregate and adaptive send striped data on the link where it
// is expected through first, and a link 150 ms longer is not that link for
// being idle. Every striped packet on it would hold the receiver's in-order
// delivery for its extra delay.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { ClientRole } from '../../src/roles/client.js';
import type { ServerRole } from '../../src/roles/server.js';
import type { SchedulingMode } from '../../src/protocol/handshake.js';
import { DelayingProxies } from '../helpers/delay-proxy.js';
import { dialClient, FAST_TIMING, NO_SECURITY, startServer, stop, until, type Side } from '../helpers/harness.js';
import { numbered, packetNumber } from '../helpers/packets.js';

let server: Side<ServerRole> | undefined;
let client: Side<ClientRole> | undefined;
const proxies = new DelayingProxies();

afterEach(() => {
  stop(client, server);
  client = server = undefined;
  proxies.close();
});

describe('links of different delay', () => {
  for (const mode of ['aggregate', 'adaptive'] as SchedulingMode[]) {
    it(`${mode}: striped packets go on the short link, and arrive at its delay, not the long one's`, async () => {
      server = await startServer(2, FAST_TIMING);
      const [p0, p1] = server.role.listening().map((l) => l.port);
      // Link 0, the first the scheduler looks at, is 150 ms longer each way.
      client = dialClient([await proxies.add(p0!, 150), p1!], FAST_TIMING, '10.0.0.2', NO_SECURITY, mode);
      await until(() => client!.role.session.upLinks().length === 2, 'both links up', 5000);
      // A few keepalives (every 50 ms here) measure both paths.
      await new Promise((r) => setTimeout(r, 600));
      const tun = server.tun;
      const arrived = new Map<number, number>();
      const write = tun.write.bind(tun);
      tun.write = (packets, start) => {
        const n = write(packets, start);
        for (let i = start; i < n; i++) arrived.set(packetNumber(packets[i] as Buffer), performance.now());
        return n;
      };
      // Bursts of full-size packets (striped in both modes): 4 TUN reads of 8 at once every
      // 20 ms for 1.5 s, about 15 Mbit/s. Within a burst the short link has data in flight
      // when the next read comes: only the long link's delay tells the scheduler not to use it.
      const sent = new Map<number, number>();
      const total = 2400;
      for (let n = 1; n <= total; n += 32) {
        for (let b = 0; b < 32; b += 8) {
          client.tun.inject(Array.from({ length: 8 }, (_, i) => numbered(n + b + i, '10.0.0.2', '10.0.0.1', 1200)));
          for (let i = 0; i < 8; i++) sent.set(n + b + i, performance.now());
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      await until(() => arrived.size === total, `all ${total} through (${arrived.size})`, 5000);
      const waits = [...sent].map(([n, t]) => (arrived.get(n) as number) - t).sort((a, b) => a - b);
      const p90 = waits[Math.floor(waits.length * 0.9)] as number;
      const p50 = waits[Math.floor(waits.length / 2)] as number;
      const long = client.role.session.linkStats.get(0)!.stats;
      // Before the path's delay counted: aggregate p50 25 ms, p90 139 ms, 120 packets on the long link.
      assert.ok(p90 < 50, `p50 ${p50.toFixed(1)} ms, p90 ${p90.toFixed(1)} ms: far below the long link's 150 ms (it carried ${long.txPackets} packets)`);
      if (mode === 'aggregate') assert.ok(long.txPackets < total / 100, `the long link carried ${long.txPackets} packets`);
    });
  }
});
