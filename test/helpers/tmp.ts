// Temporary directories for tests: under the system's tmpdir, named for what
// made them, and removed when the test process exits however the tests ended
// (an after() hook does not run when a file is cut short by a timeout or a
// crash, and the suite must leave nothing in /tmp).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];
process.on('exit', () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A new directory `<tmpdir>/<prefix>XXXXXX`, gone at exit at the latest. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Removes it now (idempotent). */
export function removeDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
}
