import type { LogLevel } from '../log.js';
import type { Encryption, SchedulingMode, TunnelAddress } from '../protocol/handshake.js';

export type Role = 'client' | 'server';

export interface ClientLinkConfig {
  readonly id: number;
  readonly name: string;
  /** Server address and port this link dials. */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Source address the link binds to (selects the interface); undefined: any. */
  readonly localAddress: string | undefined;
  /** The configured link this connection belongs to (connections_per_link > 1: several share it); default: id. */
  readonly path?: number;
  /**
   * This connection's share, in kbit/s, of the link's `upload_mbit`: the
   * client paces its sends on it at most at this rate. Undefined: no pacing.
   */
  readonly uploadKbit?: number | undefined;
  /** This connection's share of the link's `download_mbit`, which the server is asked to pace its sends at. */
  readonly downloadKbit?: number | undefined;
}

export interface ServerLinkConfig {
  readonly id: number;
  readonly name: string;
  readonly listenAddress: string;
  readonly listenPort: number;
}

export interface TunnelDeviceConfig {
  readonly name: string;
  readonly mtu: number;
  /** TSO/USO and checksum offload through IFF_VNET_HDR; must match on both sides. */
  readonly offload: boolean;
  readonly addresses: readonly TunnelAddress[];
}

export interface TimingConfig {
  /** Elimination: copies later than this behind a newer packet are stale. */
  readonly eliminationTtlMs: number;
  /** Elimination ring size in sequence numbers (a power of two). */
  readonly eliminationWindowPackets: number;
  /** Per-link send queue bound in bytes, and in age: older data is dropped. */
  readonly queueMaxBytes: number;
  readonly queueMaxAgeMs: number;
  /** Kernel unsent-data bound per link socket (TCP_NOTSENT_LOWAT). */
  readonly socketNotsentLowatBytes: number;
  readonly keepaliveIntervalMs: number;
  /** A link that hears nothing for this long is closed (and redialled by the client). */
  readonly deadIntervalMs: number;
  readonly handshakeTimeoutMs: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly statsIntervalMs: number;
  readonly maxFrameBytes: number;
  readonly batchPackets: number;
  /** Server: a session with no link for this long is removed. */
  readonly sessionIdleMs: number;
}

/** One configured client of a server in the peer-key form. */
export interface PeerConfig {
  /** For logs and status; defaults to the first 8 characters of the public key. */
  readonly name: string;
  /** X25519 public key, 32 bytes. */
  readonly publicKey: Buffer;
  /** Inner addresses this peer may use as source (and, later, routes to it). */
  readonly allowedIps: readonly Prefix[];
}

/**
 * How links are secured:
 * - 'open': no key and no psk (the original's files): anyone can join; a warning at start.
 * - 'psk': one pre-shared key for the whole group (psk or psk_file): a Noise handshake
 *   keyed by the psk; members cannot be told apart or isolated from each other.
 * - 'keys': X25519 peer keys (private_key_file, server_public_key / peers), the psk
 *   (if any) mixed in as an extra secret, as WireGuard's preshared key.
 */
export type SecurityMode = 'open' | 'psk' | 'keys';

export interface SecurityConfig {
  readonly mode: SecurityMode;
  /** 'keys': this side's X25519 private key (32 bytes). */
  readonly privateKey: Buffer | undefined;
  /** 'psk': the group key; 'keys': the optional extra secret. Raw bytes of the file or field. */
  readonly psk: Buffer | undefined;
  /** AEAD of every frame after the handshake; 'none' only (and always) in the open mode. */
  readonly encryption: Encryption;
  /** Client, 'keys': the server's public key (32 bytes). */
  readonly serverPublicKey: Buffer | undefined;
  /** Server, 'keys': the clients allowed in. Empty otherwise. */
  readonly peers: readonly PeerConfig[];
}

export interface HostPort {
  readonly address: string;
  readonly port: number;
}

/** A network in the same form as a tunnel address: address and prefix length. */
export type Prefix = TunnelAddress;

interface CommonConfig {
  readonly file: string;
  readonly security: SecurityConfig;
  /** HTTP /status and /metrics; undefined: off. */
  readonly statusListen: HostPort | undefined;
  readonly tunnel: TunnelDeviceConfig;
  readonly timing: TimingConfig;
  readonly logLevel: LogLevel;
  /** The tunnel's nice value, -20 .. 19 (src/cli/priority.ts); 0 leaves it as started. */
  readonly nice: number;
}

/**
 * The default nice value: ahead of the applications whose packets the tunnel
 * carries. Pings under a saturating iperf3 through the tunnel, loaded minus
 * idle p50 / p99 in ms, three runs each (2026-12-04): nice 0 +1.6-1.8 /
 * +6.3-9.2, -10 +1.0-1.4 / +4.9-8.1, -15 -0.1-+0.8 / +3.8-5.0, -20 the same
 * as -15. Its price (2026-12-06, native path): under iperf3 through the
 * tunnel on two vCPUs, a fifth of the machine idles (the load balancer weighs
 * by nice) and bulk moves 1.10-1.39x (median 1.18) more at 0; loaded ping at
 * 0 still within the acceptance bounds (p50 0.36-0.81, p99 1.68-3.91 ms
 * against 0.14-0.54 / 1.10-2.00), but behind two busy loops idle ping p99 up
 * to 4 ms at 0 against 0.15-0.27 at -15 (README, "Priority and throughput").
 * -5 (2026-12-07) bought the same bulk gain (median 1.26x in eight pairs) at
 * loaded ping p50/p99 0.62-0.91 / 3.17-3.41 ms against 0.17-0.65 / 1.19-2.61.
 */
export const DEFAULT_NICE = -15;

export interface ClientConfig extends CommonConfig {
  readonly role: 'client';
  readonly links: readonly ClientLinkConfig[];
  /** Prefixes routed through the tunnel (0.0.0.0/0 or ::/0: everything but the links themselves). */
  readonly routes: readonly Prefix[];
  /** How packets are spread over the links (docs/protocol.md, "Scheduling modes"); it governs both directions. */
  readonly mode: SchedulingMode;
}

/** What the server holds at most (server.limits). */
export interface ServerLimits {
  /** Sessions (clients), set up or being set up; each holds 16 KiB of elimination state and its keys. */
  readonly maxSessions: number;
  /** Connections still in their handshake (the admission table evicts the oldest, it never starves). */
  readonly maxPending: number;
  /** Links one session may have (link ids 0 .. n-1). */
  readonly maxLinksPerSession: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = Object.freeze({ maxSessions: 1024, maxPending: 256, maxLinksPerSession: 16 });

export interface ServerConfig extends CommonConfig {
  readonly role: 'server';
  readonly links: readonly ServerLinkConfig[];
  /** Masquerade the clients' tunnel traffic out of this interface; undefined: no NAT. */
  readonly natOutInterface: string | undefined;
  readonly limits: ServerLimits;
}

export const DEFAULT_STATUS_PORT = { server: 9400, client: 9401 } as const;

export type Config = ClientConfig | ServerConfig;

export const DEFAULT_TIMING: TimingConfig = Object.freeze({
  eliminationTtlMs: 2000,
  eliminationWindowPackets: 131_072,
  // 4 MiB: a few milliseconds of a saturated link. A link's queue fills while the peer's side is
  // busy a moment (a collection, a timer's turn); what does not fit is dropped on every link at
  // once (they fill together), a 64 KiB offload packet each time, and the inner TCP halves its
  // window. iperf3 through peer keys, AES-256-GCM (2026-12-06, same hour): 1 MiB 3594/4087 Mbit/s
  // c->s/s->c, 16388/10764 retransmits, 30-49 % of the machine idle; 2 MiB 6244-7476, 1-192
  // retransmits; 4 MiB 5779-6796, 0-1 retransmits, no drops. Bulk data waits longer (its own
  // round trip); sparse flows pass it (urgent lane), and age still bounds it (queue_max_age_ms).
  queueMaxBytes: 4_194_304,
  queueMaxAgeMs: 200,
  socketNotsentLowatBytes: 131_072,
  keepaliveIntervalMs: 200,
  deadIntervalMs: 800,
  handshakeTimeoutMs: 2000,
  reconnectMinMs: 100,
  reconnectMaxMs: 2000,
  statsIntervalMs: 30_000,
  maxFrameBytes: 66_000,
  // Packets handed to JavaScript per TUN callback (the reads stay one per packet). 16 against 64,
  // 5 A/B pairs under a saturating iperf3 (2026-12-04): loaded ping p99 0.7-2.0 ms lower in all
  // five, the same throughput. 8 against 16 (2026-12-05, interleaved, 10 loaded runs each): loaded
  // p99 within idle p99 + 5 ms in 10 of 10 against 5 of 10, TCP throughput 3-4 % lower (within
  // the runs' spread), 100-byte datagrams 68-83 against 57-79 k/s.
  batchPackets: 8,
  sessionIdleMs: 120_000,
});

export const DEFAULT_MTU = 1400;
