// Runs a real ServerRole and ClientRole over loopback TCP with fake TUNs:
// the whole tunnel core without root.
import type { ClientConfig, PeerConfig, SecurityConfig, ServerConfig, TimingConfig } from '../../src/config/types.js';
import type { CipherName, SchedulingMode } from '../../src/protocol/handshake.js';
import { DEFAULT_SERVER_LIMITS, DEFAULT_TIMING } from '../../src/config/types.js';
import { Tunnel } from '../../src/core/tunnel.js';
import { memoryLogger, type Logger } from '../../src/log.js';
import { ClientRole } from '../../src/roles/client.js';
import { ServerRole, type ServerLimits } from '../../src/roles/server.js';
import { FakeTun } from './fake-tun.js';

export const FAST_TIMING: TimingConfig = Object.freeze({
  ...DEFAULT_TIMING,
  keepaliveIntervalMs: 50,
  deadIntervalMs: 400,
  handshakeTimeoutMs: 1000,
  reconnectMinMs: 20,
  reconnectMaxMs: 200,
  statsIntervalMs: 0,
  eliminationTtlMs: 1000,
});

export interface Side<R> {
  tun: FakeTun;
  tunnel: Tunnel;
  role: R;
  log: Logger & { lines: string[] };
}

export const NO_SECURITY: SecurityConfig = Object.freeze({
  mode: 'open',
  privateKey: undefined,
  psk: undefined,
  encryption: 'none',
  serverPublicKey: undefined,
  peers: [],
});

/** The shared-key form: every side holds `psk`. */
export function pskSecurity(psk: Buffer, encryption: CipherName = 'chacha20-poly1305'): SecurityConfig {
  return Object.freeze({ ...NO_SECURITY, mode: 'psk', psk, encryption });
}

/** A server in the peer-key form that admits `peers`. */
export function serverKeys(privateKey: Buffer, peers: readonly PeerConfig[], psk?: Buffer, encryption: CipherName = 'chacha20-poly1305'): SecurityConfig {
  return Object.freeze({ ...NO_SECURITY, mode: 'keys', privateKey, psk, encryption, peers });
}

/** A client in the peer-key form that trusts `serverPublicKey`. */
export function clientKeys(privateKey: Buffer, serverPublicKey: Buffer, psk?: Buffer, encryption: CipherName = 'chacha20-poly1305'): SecurityConfig {
  return Object.freeze({ ...NO_SECURITY, mode: 'keys', privateKey, psk, encryption, serverPublicKey });
}

export async function startServer(
  linkCount = 2,
  timing = FAST_TIMING,
  security: SecurityConfig = NO_SECURITY,
  ports: readonly number[] = [],
  limits?: ServerLimits,
): Promise<Side<ServerRole>> {
  const config: ServerConfig = {
    role: 'server',
    nice: 0,
    security,
    statusListen: undefined,
    natOutInterface: undefined,
    limits: limits ?? DEFAULT_SERVER_LIMITS,
    file: 'server.test',
    logLevel: 'debug',
    timing,
    tunnel: {
      name: 'fake-s',
      mtu: 1400,
      offload: false,
      addresses: [
        { family: 4, address: '10.0.0.1', prefix: 24 },
        { family: 6, address: 'fd00:dd::1', prefix: 64 },
      ],
    },
    links: Array.from({ length: linkCount }, (_, i) => ({
      id: i,
      name: `l${i}`,
      listenAddress: '127.0.0.1',
      listenPort: ports[i] ?? 0,
    })),
  };
  const log = memoryLogger('debug');
  const tun = new FakeTun('fake-s');
  const tunnel = new Tunnel(tun, timing, log);
  const role = new ServerRole(config, tunnel, log, limits);
  await role.start();
  tunnel.start();
  return { tun, tunnel, role, log };
}

export function startClient(
  server: Side<ServerRole>,
  timing = FAST_TIMING,
  address = '10.0.0.2',
  ports = server.role.listening().map((l) => l.port),
  security: SecurityConfig = NO_SECURITY,
): Side<ClientRole> {
  return dialClient(ports, timing, address, security);
}

/** A client dialling 127.0.0.1 at `ports` (one link each), whether anything listens there or not. */
export function dialClient(
  ports: readonly number[],
  timing = FAST_TIMING,
  address = '10.0.0.2',
  security: SecurityConfig = NO_SECURITY,
  mode: SchedulingMode = 'duplicate',
  /** Per link: the configured link (path) it is a connection of (connections_per_link); default its own. */
  paths?: readonly number[],
): Side<ClientRole> {
  const config: ClientConfig = {
    role: 'client',
    nice: 0,
    mode,
    security,
    statusListen: undefined,
    routes: [],
    file: 'client.test',
    logLevel: 'debug',
    timing,
    tunnel: {
      name: 'fake-c',
      mtu: 1400,
      offload: false,
      addresses: [
        { family: 4, address, prefix: 24 },
        { family: 6, address: `fd00:dd::${address.split('.')[3]}`, prefix: 64 },
      ],
    },
    links: ports.map((port, i) => ({
      id: i,
      name: `l${i}`,
      remoteAddress: '127.0.0.1',
      remotePort: port,
      localAddress: undefined,
      path: paths?.[i],
    })),
  };
  const log = memoryLogger('debug');
  const tun = new FakeTun('fake-c');
  const tunnel = new Tunnel(tun, timing, log);
  const role = new ClientRole(config, tunnel, log);
  role.start();
  tunnel.start();
  return { tun, tunnel, role, log };
}

export async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function stop(...sides: Array<Side<ClientRole> | Side<ServerRole> | undefined>): void {
  for (const s of sides) {
    if (!s) continue;
    s.role.close();
    s.tunnel.close();
  }
}
