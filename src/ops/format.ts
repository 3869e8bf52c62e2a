// The per-link table `dp-tcp status` prints.
import type { TunnelSnapshot } from '../core/tunnel.js';
import type { DialStatus } from '../roles/dial-report.js';

/** A server's configured link: where it listens. */
export interface ListenStatus {
  id: number;
  name: string;
  listen: string;
}

export interface MemoryStatus {
  rssMiB: number;
  heapUsedMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
}

/** This process's memory in MiB: resident, V8 heap in use, buffers outside it. */
export function processMemory(): MemoryStatus {
  const m = process.memoryUsage();
  const mib = (n: number): number => Math.round((n / 1048576) * 10) / 10;
  return { rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), externalMiB: mib(m.external), arrayBuffersMiB: mib(m.arrayBuffers) };
}

export interface StatusDocument extends TunnelSnapshot {
  role: string;
  version: string;
  pid: number;
  tunName: string;
  /** The process's memory (older versions: absent). */
  memory?: MemoryStatus;
  /** The nice value the event loop's thread runs at: the config's `nice` when it could be set (older versions: absent). */
  nice?: number;
  /** Server, peer keys: every configured peer, with its session id if it has one. */
  peers?: Array<{ name: string; key: string; allowedIps: string[]; session: string | null }>;
  /** Every configured link: a client's as its dialer sees it (connected or not), a server's listen addresses. */
  links?: Array<DialStatus | ListenStatus>;
}

function isDial(l: DialStatus | ListenStatus): l is DialStatus {
  return 'remote' in l;
}

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** Why a client link is not up, and when it tries again: `(never connected: ..., 3 failures, retry in 0.8 s)`. */
function dialNote(d: DialStatus, lastDownReason: string, everUp: boolean): string {
  const parts: string[] = [];
  if (d.lastError !== null) parts.push(`${everUp ? 'down' : 'never connected'}: ${d.lastError}`);
  else if (lastDownReason !== '') parts.push(`down: ${lastDownReason}`);
  else parts.push(d.state === 'connecting' || d.state === 'handshaking' ? d.state : everUp ? 'down' : 'never connected');
  if (d.failures > 0) parts.push(`${d.failures} failure${d.failures === 1 ? '' : 's'}`);
  if (d.nextRetryInMs !== null) parts.push(`retry in ${seconds(d.nextRetryInMs)}`);
  else if (d.state === 'connecting' || d.state === 'handshaking') parts.push(`${d.state} now`);
  return `(${[...new Set(parts)].join(', ')})`;
}

function bytes(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

const pad = (v: unknown, n: number): string => String(v).padStart(n);

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

type SessionView = StatusDocument['sessions'][number];

/** Aggregate/adaptive: each link's share of the bytes sent, the copies, resends and the reorder buffer. */
function modeLine(s: SessionView): string {
  const r = s.reorder;
  if (r === null) return ': every packet on every link';
  const total = s.links.reduce((n, l) => n + l.txBytes, 0);
  const share = s.links.map((l) => `${l.name} ${total === 0 ? 0 : Math.round((100 * l.txBytes) / total)}%`).join(' ');
  return (
    `: share ${share}; striped ${s.stripedPackets}, on every link ${s.duplicatedPackets} (${bytes(s.duplicatedBytes)} of copies), ` +
    `resent ${s.resentPackets}, stalls ${s.links.reduce((n, l) => n + l.stalls, 0)}` +
    (s.mode === 'adaptive' ? `, degraded ${s.degradedEntered}×${s.degradedReason === '' ? '' : ` (last: ${s.degradedReason})`}` : '') +
    `; reorder: waiting ${r.waiting}, waited ${r.waited}, released past ${r.releasedPast}, late ${r.late}, bound ${r.boundMs} ms`
  );
}

export function formatStatus(d: StatusDocument): string {
  const out: string[] = [];
  out.push(
    `dp-tcp ${d.version} ${d.role} (pid ${d.pid}), TUN ${d.tunName}, up ${duration(d.uptimeMs)}, ${d.sessions.length} session(s)` +
      (d.memory ? `, RSS ${d.memory.rssMiB} MiB` : '') +
      (d.nice !== undefined ? `, nice ${d.nice}` : ''),
  );
  if (d.peers && d.peers.length > 0) {
    // As `wg show`: every configured peer, connected or not.
    out.push(`peers (${d.peers.filter((p) => p.session).length} of ${d.peers.length} connected):`);
    for (const p of d.peers) {
      const s = d.sessions.find((x) => x.id === p.session);
      const state = s
        ? `session ${s.id.slice(0, 8)}, ${s.links.filter((l) => l.state === 'up').length}/${s.links.length} links up, ` +
          `last handshake ${s.lastHandshakeAgoS === null ? 'never' : `${s.lastHandshakeAgoS} s ago`}, ` +
          `received ${bytes(s.rxBytes)}, sent ${bytes(s.txBytes)}`
        : 'not connected';
      out.push(`  ${p.name} (${p.key}…) allowed ${p.allowedIps.join(' ')}: ${state}`);
    }
  }
  const dial = (d.links ?? []).filter(isDial);
  const listen = (d.links ?? []).filter((l): l is ListenStatus => !isDial(l));
  if (listen.length > 0) out.push(`listening: ${listen.map((l) => `${l.name} ${l.listen}`).join(', ')}`);
  if (d.sessions.length === 0) out.push('  no session yet');
  for (const s of d.sessions) {
    const e = s.elimination;
    if (s.peer) out.push(`peer ${s.peer.name} (${s.peer.key}…), allowed ${s.peer.allowedIps.join(' ')}`);
    out.push(
      `session ${s.id.slice(0, 8)} [${s.peerAddresses.join(' ')}]${s.encrypted ? ' encrypted' : ''}: ` +
        `sent ${s.txPackets}, delivered ${s.rxPackets}, eliminated ${e.duplicates + s.records.duplicate}, stale ${e.stale}, ` +
        `no link ${s.dropsNoLink}, spoofed ${s.dropsSpoofed}, link-local ${s.dropsLinkLocal}, tampered ${s.tampered}, handshakes ${s.handshakes}` +
        (s.lastHandshakeAgoS === null ? '' : ` (last ${s.lastHandshakeAgoS} s ago)`),
    );
    out.push(`  mode ${s.mode}${modeLine(s)}`);
    // The name column fits the longest link name (at least 8).
    const w = Math.max(8, ...s.links.map((l) => l.name.length), ...dial.map((x) => x.name.length));
    out.push(
      `  ${'link'.padEnd(w)} ${'state'.padEnd(5)} ${pad('rtt ms', 7)} ${pad('sent', 9)} ${pad('first', 9)} ${pad('elim.', 9)} ` +
        `${pad('stale', 6)} ${pad('q.bytes', 8)} ${pad('q.drops', 8)} ${pad('conn', 5)}  remote`,
    );
    for (const l of s.links) {
      const drops = Object.values(l.drops).reduce((a, b) => a + b, 0);
      const dialer = dial.find((x) => x.id === l.id);
      const where = l.remote ?? (dialer ? `${dialer.remote} ${dialNote(dialer, l.lastDownReason, l.connects > 0)}` : `(${l.lastDownReason || 'down'})`);
      out.push(
        `  ${l.name.padEnd(w)} ${l.state.padEnd(5)} ${pad(l.rttMs === null ? '-' : l.rttMs.toFixed(2), 7)} ${pad(l.txPackets, 9)} ` +
          `${pad(l.firstCopies, 9)} ${pad(l.duplicates + l.duplicateRecords, 9)} ${pad(l.stale, 6)} ${pad(l.queueBytes, 8)} ${pad(drops, 8)} ` +
          `${pad(l.connects, 5)}  ${where}`,
      );
    }
    // A client's links that never reached the session (never connected): listed too, with why.
    for (const x of dial) {
      if (s.links.some((l) => l.id === x.id)) continue;
      out.push(
        `  ${x.name.padEnd(w)} ${'down'.padEnd(5)} ${pad('-', 7)} ${pad(0, 9)} ${pad(0, 9)} ${pad(0, 9)} ${pad(0, 6)} ${pad(0, 8)} ${pad(0, 8)} ` +
          `${pad(0, 5)}  ${x.remote} ${dialNote(x, '', false)}`,
      );
    }
  }
  return out.join('\n') + '\n';
}
