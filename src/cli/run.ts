// Starts one side of the tunnel and owns its lifetime: signals, ordered
// teardown, the stats file and the exit code.
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { loadConfig, weakPskWarning } from '../config/load.js';
import { resolveNames } from '../config/resolve.js';
import type { Role } from '../config/types.js';
import { Tunnel } from '../core/tunnel.js';
import { tuneHeap } from './memory.js';
import { currentNice, setProcessNice } from './priority.js';
import { DpError, errorMessage } from '../errors.js';
import { createLogger, type LogFormat, type LogLevel } from '../log.js';
import { controlSocketPath, listInstances } from '../ops/discovery.js';
import { buildRegistry, type RoleSources } from '../ops/metrics.js';
import { processMemory } from '../ops/format.js';
import { NetworkSetup } from '../ops/routing.js';
import { StatsFile } from '../ops/stats-file.js';
import { StatusServer } from '../ops/status-server.js';
import { DATA_HEADER_BYTES } from '../protocol/frame.js';
import { ClientRole } from '../roles/client.js';
import { ServerRole } from '../roles/server.js';
import { existingDevice, nameTakenError } from '../tun/existing.js';
import { NativeTunDevice } from '../tun/native-device.js';

/** A second SIGINT/SIGTERM within this time of the first is the same request delivered twice. */
const REPEATED_SIGNAL_MS = 1000;
/** How often a dp-tcp started by npm checks that npm is still its parent. */
const PARENT_WATCH_MS = 1000;

export interface RunOptions {
  readonly config: string;
  readonly logLevel?: LogLevel;
  readonly logFormat?: LogFormat;
  readonly statsFile?: string;
  /** Drop root to this user (and its group, or `user:group`) once the TUN is open and the sockets are bound. */
  readonly user?: string;
}

/** uid and gid of `user` or `user:group`, from the system's databases. */
function lookupUser(spec: string): { uid: number; gid: number } {
  const [user = '', group] = spec.split(':');
  const id = (args: string[]): number => Number(execFileSync('id', args, { encoding: 'utf8' }).trim());
  try {
    const uid = id(['-u', user]);
    const gid = group === undefined ? id(['-g', user]) : Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('not a number');
    return { uid, gid };
  } catch {
    throw new DpError('ERR_CONFIG', `--user ${spec}: no such user or group`, { exitCode: 2 });
  }
}

let packageVersion: string | undefined;

/** The package's version, read once (the status document and the stats file carry it). */
export function version(): string {
  if (packageVersion === undefined) {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    packageVersion = pkg.version;
  }
  return packageVersion;
}

/** Resolves with the process exit code once the tunnel has been torn down. */
export async function run(role: Role, opts: RunOptions): Promise<number> {
  const loaded = loadConfig(opts.config, role);
  tuneHeap();
  const dropTo = opts.user === undefined ? undefined : lookupUser(opts.user);
  const log = createLogger(opts.logLevel ?? loaded.logLevel, role, { format: opts.logFormat ?? 'auto' });
  // Host names (the original's configs may have them) become addresses now, before routes are set.
  const { config, resolved } = await resolveNames(loaded);
  for (const r of resolved) log.info('resolved', { link: r.link, name: r.name, address: r.address });
  if (config.nice !== 0) {
    const { threads, error } = setProcessNice(config.nice);
    if (error !== undefined) {
      log.warn('cannot raise the tunnel\'s CPU priority: under CPU load its packets compete with other processes (it needs CAP_SYS_NICE, or LimitNICE= in its systemd unit; nice: 0 keeps the priority it was started with)', { nice: config.nice, error });
    } else {
      log.debug('CPU priority set', { nice: config.nice, threads });
    }
  }
  // Before the device is opened: opening would take over a persistent TUN of this name (and change its addresses).
  const existing = existingDevice(config.tunnel.name);
  if (existing) throw nameTakenError(existing, listInstances().includes(config.tunnel.name));
  // A stop requested while the tunnel is still starting (the device open, the sockets not yet
  // bound or the status server not yet up) is kept, not fatal: once started, it stops at once and
  // undoes what it set up. Without a terminal SIGHUP asks for a reload: the config was just read.
  const onTerminal = process.stdin.isTTY === true;
  let pendingStop: NodeJS.Signals | undefined;
  const early = (sig: NodeJS.Signals): void => {
    if (sig !== 'SIGHUP' || onTerminal || role === 'client') pendingStop ??= sig;
  };
  const earlySignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of earlySignals) process.on(sig, early);
  const tun = NativeTunDevice.open({
    name: config.tunnel.name,
    mtu: config.tunnel.mtu,
    addresses: config.tunnel.addresses,
    batchPackets: config.timing.batchPackets,
    headroom: DATA_HEADER_BYTES,
    offload: config.tunnel.offload,
  });
  log.info('TUN device up', {
    name: tun.name,
    mtu: config.tunnel.mtu,
    offload: config.tunnel.offload,
    addresses: config.tunnel.addresses.map((a) => `${a.address}/${a.prefix}`).join(','),
  });
  if (config.security.mode === 'open') {
    log.warn(
      config.role === 'server'
        ? 'open mode (no key, no psk): anyone who can reach the listen ports can join, and anyone on the path can read and inject traffic'
        : 'open mode (no key, no psk): the server is not verified, and anyone on the path can read and inject traffic',
    );
  } else if (config.security.mode === 'psk') {
    log.info('shared-key mode: every holder of the psk is the same identity (no isolation between clients; use peer keys for that)');
  }
  const tunnel = new Tunnel(tun, config.timing, log);
  const network = new NetworkSetup(log.child('net'));
  // Teardown is synchronous and idempotent (after a clean stop it has nothing left to do).
  network.teardownOnExit();
  const statusDoc = (): unknown => ({ role, version: version(), pid: process.pid, tunName: tun.name, memory: processMemory(), nice: currentNice(), ...tunnel.snapshot(), statusRequests: { ...statusServer.stats }, ...extra() });
  let extra = (): Record<string, unknown> => ({});
  // Filled in below once the role exists (a scrape before then shows the tunnel alone).
  const sources: RoleSources = {};
  const statusServer = new StatusServer(statusDoc, buildRegistry(() => tunnel.snapshot(), role, sources), log);
  let roleObj: ClientRole | ServerRole | undefined;
  try {
    if (config.role === 'client') {
      network.setupClient(config, tun.name);
      const client = new ClientRole(config, tunnel, log);
      client.beforeRedial = (linkId) => network.refreshLinkRoute(linkId);
      roleObj = client;
      // Every configured link, connected or not: its state, last error and next attempt.
      extra = () => ({ links: client.dialStatus() });
      sources.configuredLinks = () => ({ session: client.session.idHex, links: client.dialStatus() });
      client.start();
    } else {
      const server = new ServerRole(config, tunnel, log);
      roleObj = server;
      await server.start();
      const listening = config.links.map((l) => ({ id: l.id, name: l.name, listen: `${l.listenAddress.includes(':') ? `[${l.listenAddress}]` : l.listenAddress}:${l.listenPort}` }));
      extra = () => ({ links: listening, peers: server.peers(), server: { ...server.stats, admission: server.admissionStats } });
      sources.server = () => ({ stats: server.stats, admission: server.admissionStats });
      network.setupServer(config, tun.name);
    }
    const weak = weakPskWarning(config.security);
    if (weak !== undefined) log.warn(weak);
    // `dp-tcp status` without flags finds this instance by its control socket (src/ops/discovery.ts).
    await statusServer.listenControl(controlSocketPath(tun.name));
    if (config.statusListen) {
      const { address } = config.statusListen;
      const bound = await statusServer.listen(address, config.statusListen.port);
      if (bound !== undefined && !/^(127\.|::1$|::ffff:127\.)/.test(address)) {
        log.warn('the status endpoint is reachable from other hosts: it shows peers, addresses and counters (no keys); bind it to 127.0.0.1 or firewall it', { status_listen: `${address}:${config.statusListen.port}` });
      }
    }
    if (dropTo) {
      // Everything that needs privilege is done: the TUN is open, the sockets bound, routes and NAT set.
      // What stays privileged is undoing routes and NAT at exit: left to the next start's sweep.
      try {
        process.setgroups?.([dropTo.gid]);
        process.setgid?.(dropTo.gid);
        process.setuid?.(dropTo.uid);
      } catch (e) {
        throw new DpError('ERR_PRIVILEGE', `--user ${opts.user}: cannot switch to uid ${dropTo.uid} / gid ${dropTo.gid}: ${errorMessage(e)} (it takes root, or CAP_SETUID and CAP_SETGID)`, { cause: e, exitCode: 2 });
      }
      log.info('dropped root', { user: opts.user, uid: dropTo.uid, gid: dropTo.gid });
      if (config.role === 'client' ? config.routes.length > 0 : config.natOutInterface !== undefined) {
        log.warn('with --user, routes and NAT rules cannot be removed at exit: the next start removes them');
      }
    }
  } catch (e) {
    for (const sig of earlySignals) process.off(sig, early);
    roleObj?.close();
    statusServer.close();
    network.teardown();
    tunnel.close();
    throw e;
  }
  const role_ = roleObj;

  const stats = opts.statsFile ? new StatsFile(opts.statsFile, statusDoc, log) : undefined;
  const writeStats = (): void => void stats?.writeNow();
  // No stats file, no timer: an idle tunnel wakes only for what it needs.
  const statsTimer = stats ? setInterval(() => stats.writeSoon(), 1000) : undefined;
  statsTimer?.unref();

  return await new Promise<number>((resolve) => {
    let stopping = false;
    let parentWatch: NodeJS.Timeout | undefined;
    const stop = (why: string, code: number): void => {
      if (stopping) return;
      stopping = true;
      log.info('shutting down', { reason: why });
      clearInterval(statsTimer);
      clearInterval(parentWatch);
      tunnel.logStats();
      writeStats();
      // Links first (they tell the peer why), then what we added to the system, then the device.
      role_.close();
      statusServer.close();
      network.teardown();
      tunnel.close();
      resolve(code);
    };
    let firstSignalMs = NaN;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) {
        // Ctrl-C reaches the whole process group, and a wrapper (npm exec, sudo) passes it on once more:
        // the same signal twice within moments is one request. Only a later one forces the exit.
        if (performance.now() - firstSignalMs < REPEATED_SIGNAL_MS) return;
        log.warn('second signal: exiting at once', { signal: sig });
        process.exit(130);
      }
      firstSignalMs = performance.now();
      stop(sig, 0);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // On a terminal SIGHUP means the terminal went away: stop, as for SIGTERM. Without one (systemd,
    // a script's background job), a server reloads its peers (systemctl reload); a client has
    // nothing to reload, so it stops too.
    process.on('SIGHUP', () => {
      if (onTerminal || !(role_ instanceof ServerRole)) {
        onSignal('SIGHUP');
        return;
      }
      try {
        const read = loadConfig(opts.config, role);
        if (read.role !== 'server' || config.role !== 'server') return;
        // Links are not reloaded (a restart applies them), so names are not resolved again: links
        // as written before stand for the addresses they resolved to (no DNS, no false change).
        const next = JSON.stringify(read.links) === JSON.stringify(loaded.links) ? { ...read, links: config.links } : read;
        const r = role_.reload(next);
        log.info('config reloaded', { added: r.added.join(',') || '-', removed: r.removed.join(',') || '-', changed: r.changed.join(',') || '-' });
        if (r.ignored.length > 0) log.warn('changed in the file but not applied until a restart', { fields: r.ignored.join(', ') });
      } catch (e) {
        log.error('config not reloaded: the running one stays', { error: errorMessage(e) });
      }
    });
    process.on('SIGUSR1', () => {
      tunnel.logStats();
      writeStats();
    });
    tunnel.onFatal = (err) => stop(`fatal: ${err.message}`, 1);
    // Started by npm (npx, npm exec, npm run: it sets npm_command), dp-tcp runs under npm's `sh -c`.
    // Killing npm ends that shell but not dp-tcp, which would keep the TUN and its routes as an
    // orphan. So, under npm only, the parent is watched: once it is gone (this process was
    // re-parented), dp-tcp shuts down as on SIGTERM. A dp-tcp started otherwise (systemd, a
    // shell, nohup) keeps running when its parent exits, as daemons do.
    if (process.env['npm_command'] !== undefined) {
      const parent = process.ppid;
      parentWatch = setInterval(() => {
        if (process.ppid !== parent) stop(`the npm process that started dp-tcp (pid ${parent}) is gone`, 0);
      }, PARENT_WATCH_MS);
      parentWatch.unref();
    }
    for (const sig of earlySignals) process.off(sig, early);
    if (pendingStop !== undefined) {
      onSignal(pendingStop);
      return;
    }
    tunnel.start();
  });
}

export function exitCodeFor(e: unknown): number {
  return e instanceof DpError ? e.exitCode : 1;
}
