// The rate limit on a failing link's warnings, and the state status shows.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DIAL_WARN_INTERVAL_MS, dialHint, DialReport } from '../../src/roles/dial-report.js';

describe('dial report', () => {
  it('warns at the first failure, then at most once per interval with the count left unsaid', () => {
    const r = new DialReport();
    // A redial every 2 s for 70 s: warnings at 0 s, 30 s and 60 s only.
    const warned: Array<{ t: number; suppressed: number }> = [];
    for (let t = 0; t <= 70_000; t += 2000) {
      r.attempt();
      const v = r.failed('connect ECONNREFUSED 10.0.1.1:31411', t);
      if (v.warn) warned.push({ t, suppressed: v.suppressed });
      r.waiting(2000, t);
    }
    assert.deepEqual(warned, [
      { t: 0, suppressed: 0 },
      { t: 30_000, suppressed: 14 },
      { t: 60_000, suppressed: 14 },
    ], 'first failure, then one warning per 30 s with the failures in between');
    assert.equal(r.failures, 36, 'every failure counted');
    assert.equal(DIAL_WARN_INTERVAL_MS, 30_000, 'the interval the README states');
  });

  it('recovery is reported once, with the failures it took, and the next failure is news again', () => {
    const r = new DialReport();
    r.failed('connect ECONNREFUSED 10.0.1.1:31411', 1000);
    r.failed('connect ECONNREFUSED 10.0.1.1:31411', 2000);
    assert.equal(r.failed('connect ECONNREFUSED 10.0.1.1:31411', 3500).warn, false, 'rate-limited');
    assert.deepEqual(r.up(4000), { failures: 3, forMs: 3000 }, 'one info line: 3 failures over 3 s');
    assert.equal(r.up(5000), undefined, 'an up without failures before it is not a recovery');
    r.down();
    assert.deepEqual(r.failed('no answer within 2000 ms (connect and handshake)', 6000), { warn: true, suppressed: 0 }, 'warned at once after being up');
  });

  it('its snapshot says why the link is down and when it tries again', () => {
    const r = new DialReport();
    assert.deepEqual(r.snapshot(0), { state: 'waiting', failures: 0, lastError: null, lastErrorAgoS: null, nextRetryInMs: null, ups: 0 }, 'before the first attempt');
    r.attempt();
    assert.equal(r.snapshot(10).state, 'connecting', 'while connecting');
    r.failed('connect EHOSTUNREACH 10.0.2.1:31413', 100);
    r.waiting(800, 100);
    assert.deepEqual(r.snapshot(600), {
      state: 'waiting',
      failures: 1,
      lastError: 'connect EHOSTUNREACH 10.0.2.1:31413',
      lastErrorAgoS: 0.5,
      nextRetryInMs: 300,
      ups: 0,
    }, 'last error, its age and the next attempt');
    r.up(1000);
    assert.deepEqual(r.snapshot(1000), { state: 'up', failures: 0, lastError: null, lastErrorAgoS: null, nextRetryInMs: null, ups: 1 }, 'up clears the error');
  });

  it('explains the common socket errors', () => {
    assert.match(dialHint('ECONNREFUSED') ?? '', /nothing listens there/, 'refused');
    assert.match(dialHint('EADDRNOTAVAIL') ?? '', /local address/, 'a local address this host lacks');
    assert.match(dialHint('ETIMEDOUT') ?? '', /firewall/, 'silence');
    assert.equal(dialHint('EWHATEVER'), undefined, 'no hint for the rest');
    assert.equal(dialHint(undefined), undefined, 'nor without a code');
  });
});
