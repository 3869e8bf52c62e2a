// OpenVPN over TCP on link 1 of the testbed, the comparison the benchmarks
// run: static key (`openvpn --genkey secret`), point-to-point 10.8.0.1 (server)
// <-> 10.8.0.2 (client), with or without a cipher. The processes belong to the
// testbed (killed by its destroy()).
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Testbed } from './netns.js';

export interface OpenVpnOptions {
  /** The static key file. */
  key: string;
  cipher: 'none' | 'AES-256-CBC';
  /** TCP_NODELAY on its link (as the acceptance checks run it); off by default. */
  nodelay?: boolean;
}

export const OPENVPN_SERVER = '10.8.0.1';

/** Makes a static key in the testbed's directory; its path. */
export async function openVpnKey(tb: Testbed): Promise<string> {
  const key = join(tb.dir, 'ovpn.key');
  await tb.run('client', 'openvpn', ['--genkey', 'secret', key]);
  return key;
}

/** Starts the server and the client; ping 10.8.0.1 from the client until it answers before use. */
export function startOpenVpn(tb: Testbed, o: OpenVpnOptions): ChildProcess[] {
  const crypto = o.cipher === 'none' ? ['--cipher', 'none', '--auth', 'none'] : ['--cipher', o.cipher, '--auth', 'SHA256'];
  const common = ['--dev', 'ovpn0', '--dev-type', 'tun', '--secret', o.key, ...crypto, ...(o.nodelay ? ['--tcp-nodelay'] : []), '--verb', '1'];
  return [
    tb.spawn('server', 'openvpn', [...common, '--proto', 'tcp-server', '--local', '10.0.1.1', '--lport', '1194', '--ifconfig', '10.8.0.1', '10.8.0.2'], {
      stdout: join(tb.dir, `openvpn-server-${o.cipher}.log`),
    }),
    tb.spawn('client', 'openvpn', [...common, '--proto', 'tcp-client', '--remote', '10.0.1.1', '1194', '--ifconfig', '10.8.0.2', '10.8.0.1'], {
      stdout: join(tb.dir, `openvpn-client-${o.cipher}.log`),
    }),
  ];
}
