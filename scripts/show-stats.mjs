#!/usr/bin/env node
// Prints a dp-tcp --stats-file snapshot as a per-link table.
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: show-stats.mjs STATS_FILE');
  process.exit(2);
}
const s = JSON.parse(readFileSync(file, 'utf8'));
const pad = (v, n) => String(v).padStart(n);
for (const sess of s.sessions) {
  const e = sess.elimination;
  console.log(
    `${s.role} session ${sess.id.slice(0, 8)}: sent ${sess.txPackets} packets, delivered ${sess.rxPackets}, ` +
      `eliminated ${e.duplicates} copies, stale ${e.stale}`,
  );
  console.log(`  ${'link'.padEnd(6)} ${'state'.padEnd(6)} ${pad('rtt ms', 7)} ${pad('sent', 8)} ${pad('first', 8)} ${pad('elim.', 8)} ${pad('stale', 6)} ${pad('q.drops', 8)} ${pad('conn', 5)}`);
  for (const l of sess.links) {
    const drops = l.drops.queue_full + l.drops.queue_age;
    console.log(
      `  ${l.name.padEnd(6)} ${l.state.padEnd(6)} ${pad(l.rttMs ?? '-', 7)} ${pad(l.txPackets, 8)} ${pad(l.firstCopies, 8)} ` +
        `${pad(l.duplicates, 8)} ${pad(l.stale, 6)} ${pad(drops, 8)} ${pad(l.connects, 5)}`,
    );
  }
}
