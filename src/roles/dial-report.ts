// What one client link's dialer tells the operator: a link that cannot
// connect is reported at warn with the address and the reason at once, then
// at most once per DIAL_WARN_INTERVAL_MS with the number of failures left
// unsaid in between (a redial every 2 s would otherwise fill the log); when
// it comes up after failing, one info line says so. The same state feeds
// `dp-tcp status`: links that never connected are listed with their last
// error and when the next attempt is due.

/** After the first warning about a failing link, at most one more per this interval. */
export const DIAL_WARN_INTERVAL_MS = 30_000;

export type DialPhase = 'connecting' | 'handshaking' | 'up' | 'waiting' | 'stopped';

/** A link as its dialer sees it, for the status document (`dial` of a client). */
export interface DialStatus {
  id: number;
  name: string;
  remote: string;
  local: string | null;
  state: DialPhase;
  /** Attempts that failed since the link was last up (or since start). */
  failures: number;
  lastError: string | null;
  /** Seconds since the last failure; null: none since the link was last up. */
  lastErrorAgoS: number | null;
  /** Milliseconds until the next attempt, while waiting for it. */
  nextRetryInMs: number | null;
  /** Connections that reached the handshake's end under this link since start. */
  ups: number;
}

/** What the socket error codes of a dial usually mean, for the warning. */
const HINTS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'nothing listens there: is the server running, and listening on this address and port?',
  EHOSTUNREACH: 'no route to the server from this source address (is the uplink up?)',
  ENETUNREACH: 'no route to the server from this source address (is the uplink up?)',
  EADDRNOTAVAIL: "the link's local address is not an address of this host",
  ETIMEDOUT: 'no answer: a firewall dropping the packets, or a wrong address',
  ECONNRESET: 'the connection was reset: a firewall, or not a dp-tcp server',
};

export function dialHint(code: string | undefined): string | undefined {
  return code === undefined ? undefined : HINTS[code];
}

export class DialReport {
  phase: DialPhase = 'waiting';
  failures = 0;
  ups = 0;
  lastError: string | undefined;
  private lastErrorAtMs = NaN;
  private lastWarnAtMs = -Infinity;
  private suppressed = 0;
  private firstFailureAtMs = NaN;
  private nextRetryAtMs = NaN;

  constructor(private readonly intervalMs = DIAL_WARN_INTERVAL_MS) {}

  attempt(): void {
    this.phase = 'connecting';
    this.nextRetryAtMs = NaN;
  }

  /**
   * An attempt ended without the link coming up. `warn`: say so now (the first
   * failure, or the first after `intervalMs` of silence); `suppressed`: how
   * many failures were not reported since the last warning.
   */
  failed(reason: string, nowMs: number): { warn: boolean; suppressed: number } {
    this.failures++;
    this.lastError = reason;
    this.lastErrorAtMs = nowMs;
    if (Number.isNaN(this.firstFailureAtMs)) this.firstFailureAtMs = nowMs;
    if (nowMs - this.lastWarnAtMs < this.intervalMs) {
      this.suppressed++;
      return { warn: false, suppressed: this.suppressed };
    }
    const suppressed = this.suppressed;
    this.suppressed = 0;
    this.lastWarnAtMs = nowMs;
    return { warn: true, suppressed };
  }

  /** The next attempt is due in `delayMs`. */
  waiting(delayMs: number, nowMs: number): void {
    this.phase = 'waiting';
    this.nextRetryAtMs = nowMs + delayMs;
  }

  /**
   * The link is up. Returns the failures it took and for how long they went
   * on, if there were any (one info line then), and starts over: a later
   * failure is reported at once.
   */
  up(nowMs: number): { failures: number; forMs: number } | undefined {
    this.phase = 'up';
    this.ups++;
    const r = this.failures > 0 ? { failures: this.failures, forMs: Math.round(nowMs - this.firstFailureAtMs) } : undefined;
    this.failures = 0;
    this.suppressed = 0;
    this.lastWarnAtMs = -Infinity;
    this.firstFailureAtMs = NaN;
    this.lastErrorAtMs = NaN;
    this.lastError = undefined;
    return r;
  }

  /** The link that was up went down: the next failure is news again. */
  down(): void {
    this.phase = 'waiting';
  }

  snapshot(nowMs: number): Pick<DialStatus, 'state' | 'failures' | 'lastError' | 'lastErrorAgoS' | 'nextRetryInMs' | 'ups'> {
    return {
      state: this.phase,
      failures: this.failures,
      lastError: this.lastError ?? null,
      lastErrorAgoS: Number.isNaN(this.lastErrorAtMs) ? null : Math.round((nowMs - this.lastErrorAtMs) / 100) / 10,
      nextRetryInMs: this.phase === 'waiting' && !Number.isNaN(this.nextRetryAtMs) ? Math.max(0, Math.round(this.nextRetryAtMs - nowMs)) : null,
      ups: this.ups,
    };
  }
}
