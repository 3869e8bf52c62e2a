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
  /**
   * 0 (the default) or 1: a second tunnel beside the first, on port 1195, device ovpn1 and
   * 10.9.0.1 <-> 10.9.0.2 (the benchmark's control: two identical tunnels measured alike).
   */
  instance?: 0 | 1;
}

/** The server's (`side` 1) or the client's (2) tunnel address of OpenVPN `instance`. */
export function openVpnAddress(instance: 0 | 1, side: 1 | 2 = 1): string {
  return `10.${8 + instance}.0.${side}`;
}

export const OPENVPN_SERVER = openVpnAddress(0);

/** Makes a static key in the testbed's directory; its path. */
export async function openVpnKey(tb: Testbed): Promise<string> {
  const key = join(tb.dir, 'ovpn.key');
  await tb.run('client', 'openvpn', ['--genkey', 'secret', key]);
  return key;
}

/** Starts the server and the client; ping the server's tunnel address from the client until it answers before use. */
export function startOpenVpn(tb: Testbed, o: OpenVpnOptions): ChildProcess[] {
  const i = o.instance ?? 0;
  const port = String(1194 + i);
  const [server, client] = [openVpnAddress(i), openVpnAddress(i, 2)];
  const crypto = o.cipher === 'none' ? ['--cipher', 'none', '--auth', 'none'] : ['--cipher', o.cipher, '--auth', 'SHA256'];
  const common = ['--dev', `ovpn${i}`, '--dev-type', 'tun', '--secret', o.key, ...crypto, ...(o.nodelay ? ['--tcp-nodelay'] : []), '--verb', '1'];
  const log = (side: string): string => join(tb.dir, `openvpn-${side}-${o.cipher}${i === 0 ? '' : `-${i}`}.log`);
  return [
    tb.spawn('server', 'openvpn', [...common, '--proto', 'tcp-server', '--local', '10.0.1.1', '--lport', port, '--ifconfig', server, client], { stdout: log('server') }),
    tb.spawn('client', 'openvpn', [...common, '--proto', 'tcp-client', '--remote', '10.0.1.1', port, '--ifconfig', client, server], { stdout: log('client') }),
  ];
}
