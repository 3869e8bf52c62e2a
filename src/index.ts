// The library surface: embed the tunnel core, load configs, or drive a fake TUN.
export { loadConfig, parseConfig, ConfigError } from './config/load.js';
export type { ClientConfig, Config, ServerConfig, TimingConfig } from './config/types.js';
export { Tunnel, type TunnelSnapshot } from './core/tunnel.js';
export { Session } from './core/session.js';
export { Eliminator, Verdict } from './core/eliminator.js';
export { ClientRole } from './roles/client.js';
export { ServerRole } from './roles/server.js';
export { NativeTunDevice } from './tun/native-device.js';
export type { TunDevice, PacketBatch, TunOptions } from './tun/device.js';
export { FrameDecoder, FrameType } from './protocol/frame.js';
export { DpError, ProtocolError } from './errors.js';
export { createLogger, type Logger } from './log.js';
