// Measures the receive-side elimination structures side by side: the
// sequence-number ring dp-tcp uses, and a TTL LRU set (lru-cache) keyed the
// same way, as the design card proposed. Prints checks per second.
//   node --import tsx scripts/bench-elimination.ts [packets]
import { LRUCache } from 'lru-cache';
import { performance } from 'node:perf_hooks';
import { Eliminator } from '../src/core/eliminator.js';

const packets = Number(process.argv[2] ?? 2_000_000);
// Two links: link B's copy of seq s arrives 64 packets after link A's.
const LAG = 64;

function run(name: string, check: (seq: number) => boolean): void {
  let delivered = 0;
  const t0 = performance.now();
  for (let s = 1; s <= packets; s++) {
    if (check(s)) delivered++;
    if (s > LAG && check(s - LAG)) delivered++;
  }
  const ms = performance.now() - t0;
  const checks = 2 * packets - LAG;
  if (delivered !== packets) throw new Error(`${name}: delivered ${delivered} of ${packets}`);
  console.log(`${name.padEnd(34)} ${((checks / ms) * 1000 / 1e6).toFixed(2).padStart(7)} M checks/s  (${(ms * 1e6 / checks).toFixed(0)} ns each)`);
}

const ring = new Eliminator({ windowPackets: 131_072, ttlMs: 2000 });
run('seq ring (dp-tcp)', (s) => ring.check(s) === 0);

const lru = new LRUCache<number, true>({ max: 131_072, ttl: 2000, ttlAutopurge: false });
run('lru-cache has+set, ttl 2 s', (s) => {
  if (lru.has(s)) return false;
  lru.set(s, true);
  return true;
});
