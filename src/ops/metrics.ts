// Prometheus exposition of the tunnel's counters (prom-client). Every metric
// reads the live counters at scrape time; nothing is double-counted or cached.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { TunnelSnapshot } from '../core/tunnel.js';
import type { ServerStats } from '../roles/server.js';
import type { AdmissionStats } from '../secure/admission.js';

type Labels = Record<string, string>;
type Sample = [Labels, number];

/** What the role adds to the tunnel's snapshot (run.ts); read at each scrape, so it may be set after buildRegistry. */
export interface RoleSources {
  /**
   * Client: its session (full id) and every configured link, connected or not. A link that never
   * completed a handshake is in no snapshot; it is shown as down (dptcp_link_up 0).
   */
  configuredLinks?: () => { session: string; links: ReadonlyArray<{ id: number; name: string }> };
  /** Server: its handshake and admission counters (the status document's `server`). */
  server?: () => ServerSource;
}

interface ServerSource {
  stats: ServerStats;
  admission: AdmissionStats;
}

/** How often the event-loop delay histogram (dptcp_nodejs_eventloop_lag_*) takes a sample, ms. */
export const EVENT_LOOP_SAMPLE_MS = 100;

export function buildRegistry(snapshot: () => TunnelSnapshot, role: string, sources: RoleSources = {}): Registry {
  const reg = new Registry();
  reg.setDefaultLabels({ role });
  // The event-loop delay histogram samples on a timer of its own: prom-client's 10 ms default
  // woke an idle tunnel 100 times a second (0.7 % of a CPU per side here, and its wakeups sit
  // between packets); every 100 ms it runs beside the tunnel's own tick.
  collectDefaultMetrics({ register: reg, prefix: 'dptcp_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });

  // Every metric is refilled from a fresh read of its source when scraped (prom-client's collect()).
  const defineFrom =
    <T>(read: () => T) =>
    (kind: 'counter' | 'gauge') =>
    (name: string, help: string, labelNames: string[], samples: (s: T) => Sample[]): void => {
      const fill = (m: Counter | Gauge): void => {
        m.reset();
        for (const [labels, v] of samples(read())) {
          if (m instanceof Counter) m.inc(labels, v);
          else m.set(labels, v);
        }
      };
      const config = { name, help, labelNames, registers: [reg] };
      if (kind === 'counter') new Counter({ ...config, collect: function (this: Counter) { fill(this); } });
      else new Gauge({ ...config, collect: function (this: Gauge) { fill(this); } });
    };
  const define = defineFrom(snapshot);
  const counter = define('counter');
  const gauge = define('gauge');
  const perLink = (f: (l: TunnelSnapshot['sessions'][number]['links'][number]) => number | null) => (s: TunnelSnapshot): Sample[] =>
    s.sessions.flatMap((sess) =>
      sess.links.flatMap((l): Sample[] => {
        const v = f(l);
        return v === null ? [] : [[{ session: sess.id.slice(0, 8), link: l.name }, v]];
      }),
    );
  const perSession = (f: (s: TunnelSnapshot['sessions'][number]) => number) => (s: TunnelSnapshot): Sample[] =>
    s.sessions.map((sess) => [{ session: sess.id.slice(0, 8) }, f(sess)]);
  const LINK = ['session', 'link'];

  // A client's configured link that never connected is in no snapshot: it is down, not absent.
  const neverConnected = (s: TunnelSnapshot): Sample[] => {
    if (sources.configuredLinks === undefined) return [];
    const { session, links } = sources.configuredLinks();
    const known = new Set(s.sessions.find((sess) => sess.id === session)?.links.map((l) => l.id));
    return links.filter((l) => !known.has(l.id)).map((l): Sample => [{ session: session.slice(0, 8), link: l.name }, 0]);
  };
  gauge('dptcp_link_up', 'Whether the link is up (1) or down (0); a client shows every configured link, connected or not', LINK, (s) => [
    ...perLink((l) => (l.state === 'up' ? 1 : 0))(s),
    ...neverConnected(s),
  ]);
  gauge('dptcp_link_rtt_seconds', 'Smoothed round-trip time of the link (PING/PONG)', LINK, perLink((l) => (l.rttMs === null ? null : l.rttMs / 1000)));
  gauge('dptcp_link_path_rtt_seconds', "The path's round trip the striping scheduler counts with (least recent PING sample less our queue; before the first, the TCP connection's or the last connection's)", LINK, perLink((l) => l.pathRttMs / 1000));
  gauge('dptcp_link_pace_bits_per_second', 'The rate this side paces the link at (upload_mbit / download_mbit); absent: not paced', LINK, perLink((l) => (l.paceMbit === null ? null : l.paceMbit * 1e6)));
  gauge('dptcp_link_queue_bytes', 'Bytes waiting in the link send queue', LINK, perLink((l) => l.queueBytes));
  gauge('dptcp_link_queue_delay_seconds', 'How long data waited in the link send queue before the socket took it (smoothed)', LINK, perLink((l) => l.queueDelayMs / 1000));
  gauge('dptcp_link_queue_delay_max_seconds', 'The longest any data waited in the link send queue', LINK, perLink((l) => l.queueDelayMaxMs / 1000));
  counter('dptcp_link_sent_packets_total', 'Packet copies handed to the link', LINK, perLink((l) => l.txPackets));
  counter('dptcp_link_sent_bytes_total', 'Bytes handed to the link socket', LINK, perLink((l) => l.txBytes));
  counter('dptcp_link_received_bytes_total', 'Bytes read from the link socket', LINK, perLink((l) => l.rxBytes));
  counter('dptcp_link_first_copies_total', 'Packets whose first copy arrived on this link', LINK, perLink((l) => l.firstCopies));
  counter('dptcp_link_native_sent_frames_total', 'DATA frames the native send path sent on this link (open mode, duplicate scheduling, one session)', LINK, perLink((l) => l.nativeSentFrames));
  counter('dptcp_link_native_frames_total', 'DATA frames on this link that the native receive path took (open mode, duplicate scheduling)', LINK, perLink((l) => l.nativeFrames));
  counter('dptcp_link_dropped_unread_total', 'Copies on this link that another link had delivered, dropped in the kernel without being read (the native receive path, while the link lags)', LINK, perLink((l) => l.droppedUnread));
  counter('dptcp_link_eliminated_total', 'Copies on this link eliminated because another link was first', LINK, perLink((l) => l.duplicates));
  counter('dptcp_link_duplicate_records_total', 'Sealed records dropped on this link because their copy on another link came first', LINK, perLink((l) => l.duplicateRecords));
  counter('dptcp_link_urgent_passed_total', 'Packets of sparse flows (ping, DNS, calls) sent ahead of bulk data queued on this link', LINK, perLink((l) => l.urgentPassed));
  counter('dptcp_link_pongs_unanswered_total', 'PINGs left unanswered because the link send queue was full (a peer that sends and does not read)', LINK, perLink((l) => l.pongsDropped));
  counter('dptcp_link_pings_over_rate_total', 'PINGs left unanswered because the peer sent them faster than 16 in a burst and one per 5 ms (a flood, or PINGs bunched up behind a stalled path)', LINK, perLink((l) => l.pingsOverRate));
  counter('dptcp_link_stale_total', 'Copies on this link that arrived after the elimination window', LINK, perLink((l) => l.stale));
  counter('dptcp_link_stalls_total', 'Aggregate/adaptive: times striped data waited unacknowledged on this link too long (it was sent again on the others)', LINK, perLink((l) => l.stalls));
  counter('dptcp_link_reclaimed_packets_total', 'Aggregate/adaptive: packets taken back from this link (stalled or closed) and sent on the others', LINK, perLink((l) => l.reclaimed));
  counter('dptcp_link_connects_total', 'Connections of this link that completed the handshake', LINK, perLink((l) => l.connects));
  counter('dptcp_link_dropped_packets_total', 'Packet copies dropped on the link, by reason', [...LINK, 'reason'], (s) =>
    s.sessions.flatMap((sess) =>
      sess.links.flatMap((l) =>
        Object.entries(l.drops).map(([reason, v]): Sample => [{ session: sess.id.slice(0, 8), link: l.name, reason }, v]),
      ),
    ),
  );
  counter('dptcp_session_sent_packets_total', 'Packets read from the TUN and sent (one sequence number each)', ['session'], perSession((s) => s.txPackets));
  counter('dptcp_session_delivered_packets_total', 'Packets written to the TUN after elimination', ['session'], perSession((s) => s.rxPackets));
  counter('dptcp_session_dropped_packets_total', 'Packets dropped by the session, by reason', ['session', 'reason'], (s) =>
    s.sessions.flatMap((sess): Sample[] => [
      [{ session: sess.id.slice(0, 8), reason: 'no_link' }, sess.dropsNoLink],
      [{ session: sess.id.slice(0, 8), reason: 'spoofed' }, sess.dropsSpoofed],
      [{ session: sess.id.slice(0, 8), reason: 'link_local' }, sess.dropsLinkLocal],
      [{ session: sess.id.slice(0, 8), reason: 'no_key' }, sess.dropsNoKey],
    ]),
  );
  counter('dptcp_session_records_dropped_total', 'Sealed records dropped, by reason (tampered closes its link; duplicate is normal: one copy per link)', ['session', 'reason'], (s) =>
    s.sessions.flatMap((sess): Sample[] => [
      [{ session: sess.id.slice(0, 8), reason: 'tampered' }, sess.tampered],
      ...Object.entries(sess.records).map(([reason, v]): Sample => [{ session: sess.id.slice(0, 8), reason }, v]),
    ]),
  );
  counter('dptcp_session_late_responses_total', 'Client: handshake RESPONSEs on an up link answering no rekey under way (late, or replayed on the path): ignored', ['session'], perSession((s) => s.lateResponses));
  counter('dptcp_session_misdirected_frames_total', 'CLOSE and ACK frames that named another link than the one that carried them (ignored: moved by someone on the path)', ['session'], perSession((s) => s.misdirected));
  gauge('dptcp_session_mode_info', 'The session\'s scheduling mode (duplicate, aggregate, adaptive)', ['session', 'mode'], (s) =>
    s.sessions.map((sess): Sample => [{ session: sess.id.slice(0, 8), mode: sess.mode }, 1]),
  );
  counter('dptcp_session_scheduled_packets_total', 'Aggregate/adaptive: packets sent on one link (striped) or on every link (duplicated), and striped packets sent again', ['session', 'how'], (s) =>
    s.sessions.flatMap((sess): Sample[] => [
      [{ session: sess.id.slice(0, 8), how: 'striped' }, sess.stripedPackets],
      [{ session: sess.id.slice(0, 8), how: 'duplicated' }, sess.duplicatedPackets],
      [{ session: sess.id.slice(0, 8), how: 'resent' }, sess.resentPackets],
    ]),
  );
  counter('dptcp_session_duplicated_bytes_total', 'Aggregate/adaptive: bytes of the extra copies of packets sent on every link', ['session'], perSession((s) => s.duplicatedBytes));
  counter('dptcp_session_degraded_total', 'Adaptive: times the session began duplicating everything (a link stalled, slowed or went down)', ['session'], perSession((s) => s.degradedEntered));
  counter('dptcp_session_reorder_packets_total', 'Aggregate/adaptive receive side: packets that waited for a predecessor, numbers released past (given up), packets that came after that', ['session', 'what'], (s) =>
    s.sessions.flatMap((sess): Sample[] =>
      sess.reorder === null
        ? []
        : [
            [{ session: sess.id.slice(0, 8), what: 'waited' }, sess.reorder.waited],
            [{ session: sess.id.slice(0, 8), what: 'released_past' }, sess.reorder.releasedPast],
            [{ session: sess.id.slice(0, 8), what: 'late' }, sess.reorder.late],
          ],
    ),
  );
  gauge('dptcp_session_reorder_bound_seconds', 'Aggregate/adaptive: how long a packet may wait for its predecessor now', ['session'], (s) =>
    s.sessions.flatMap((sess): Sample[] => (sess.reorder === null ? [] : [[{ session: sess.id.slice(0, 8) }, sess.reorder.boundMs / 1000]])),
  );
  gauge('dptcp_session_retained_bytes', 'Aggregate/adaptive: striped bytes the session\'s links keep until the peer acknowledges them (at most 32 MiB a session; past 256 MiB in all, each its fair share)', ['session'], (s) =>
    s.sessions.flatMap((sess): Sample[] => (sess.mode === 'duplicate' ? [] : [[{ session: sess.id.slice(0, 8) }, sess.retainedBytes]])),
  );
  counter('dptcp_session_resend_deferred_packets_total', 'Aggregate/adaptive: packets a link gave back that waited to be sent again: for a link to be up, or, keyed, to be sealed (past 32 MiB in a burst and 8 MiB/s)', ['session'], perSession((s) => s.resendDeferred));
  counter('dptcp_session_handshakes_total', 'Handshakes completed on the session (connections and rekeys)', ['session'], perSession((s) => s.handshakes));
  // Info metric: join on `session` to see per-peer figures (one series per session: bounded by server.limits).
  gauge('dptcp_session_peer_info', 'The peer (name, key prefix) a session belongs to (peer keys)', ['session', 'peer', 'key'], (s) =>
    s.sessions.flatMap((sess): Sample[] => (sess.peer ? [[{ session: sess.id.slice(0, 8), peer: sess.peer.name, key: sess.peer.key }, 1]] : [])),
  );
  gauge('dptcp_session_last_handshake_age_seconds', 'Seconds since the session last completed a handshake', ['session'], (s) =>
    s.sessions.flatMap((sess): Sample[] => (sess.lastHandshakeAgoS === null ? [] : [[{ session: sess.id.slice(0, 8) }, sess.lastHandshakeAgoS]])),
  );
  gauge('dptcp_sessions', 'Sessions (clients) known to this side', [], (s) => [[{}, s.sessions.length]]);
  counter('dptcp_tun_read_packets_total', 'Packets read from the TUN device', [], (s) => [[{}, s.tun.tunRxPackets]]);
  counter('dptcp_tun_written_packets_total', 'Packets written to the TUN device', [], (s) => [[{}, s.tun.written.packets]]);
  counter('dptcp_tun_dropped_packets_total', 'Packets dropped at the TUN device, by reason', ['reason'], (s) => [
    [{ reason: 'no_session' }, s.tun.dropsNoSession],
    [{ reason: 'backlog_full' }, s.tun.written.backlogFull],
    // bad_vnet_hdr: a peer's offload header no kernel would write (dropped before the TUN);
    // errno_N: the kernel refused the write.
    ...Object.entries(s.tun.written.refused).map(([reason, v]): Sample => [{ reason }, v]),
    [{ reason: 'bad_read' }, s.tun.readDiscards],
  ]);
  if (role === 'server') {
    // The server's handshake and admission counters (src/roles/server.ts, src/secure/admission.ts),
    // read at each scrape; none until the role has started.
    const server = defineFrom(() => sources.server?.());
    const serverCounter = (name: string, help: string, labelNames: string[], samples: (v: ServerSource) => Sample[]): void =>
      server('counter')(name, help, labelNames, (v) => (v === undefined ? [] : samples(v)));
    serverCounter('dptcp_server_handshakes_refused_total', 'Handshakes the server refused, by reason (bad_mac1, unknown_peer, replay, malformed: not authentic or not understood; mismatch, address, full: a peer told why; timeout: the handshake not done in time; rekey_rate: a rekey INITIATION too soon after the last, ignored; handshake_rate: a peer making more than a burst of 64 and 20 a second; cookie_rounds: too many COOKIEs on one connection)', ['reason'], (v) =>
      Object.entries(v.stats.refused).map(([reason, n]): Sample => [{ reason }, n]),
    );
    serverCounter('dptcp_server_handshakes_completed_total', 'Handshakes the server completed (connections and rekeys, all sessions)', [], (v) => [[{}, v.stats.handshakesCompleted]]);
    serverCounter('dptcp_server_connections_blocked_total', 'Connections closed at once because their source address failed too many handshakes (blocked for a while)', [], (v) => [[{}, v.admission.rateLimited]]);
    serverCounter('dptcp_server_connections_evicted_total', 'Connections in their handshake evicted to make room for a newcomer, by the bound reached (pending_full, source_full, prefix_full)', ['reason'], (v) =>
      Object.entries(v.admission.evicted).map(([reason, n]): Sample => [{ reason }, n]),
    );
    serverCounter('dptcp_server_cookies_sent_total', 'INITIATIONs answered with a COOKIE (the server is under load: the client must prove its address)', [], (v) => [[{}, v.admission.cookiesSent]]);
  }
  gauge('dptcp_uptime_seconds', 'Seconds since the tunnel started', [], (s) => [[{}, s.uptimeMs / 1000]]);
  return reg;
}
