// The --stats-file: the /status document, rewritten every second and on exit
// (and on SIGUSR1). Each write goes to an unpredictable name created
// exclusively (a link planted at a guessable name is never followed), then is
// renamed over the file, so a reader never sees half of one.
//
// The writes every second run in the background (libuv's thread pool), one at
// a time: the thread that would otherwise write carries the packets, and a
// write or rename can wait on a busy disk (the journal, dirty-page
// throttling). The write on exit is made at once, after a background write in
// flight, which would otherwise land after it with older counters.
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';

export class StatsFile {
  /** The background write, until its rename is done. */
  private inFlight: Promise<void> | undefined;
  private warned = false;

  constructor(
    readonly file: string,
    private readonly doc: () => unknown,
    private readonly log: Logger,
  ) {}

  /** Every second: in the background; skipped while the last one is still being written. */
  writeSoon(): void {
    if (this.inFlight) return;
    const tmp = this.tmpName();
    this.inFlight = writeFile(tmp, this.text(), { flag: 'wx', mode: 0o644 })
      .then(() => rename(tmp, this.file))
      .catch(async (e: unknown) => {
        await rm(tmp, { force: true }).catch(() => undefined);
        this.failed(e);
      })
      .finally(() => {
        this.inFlight = undefined;
      });
  }

  /**
   * On exit and SIGUSR1: the counters as they are now, written at once, or right after a
   * background write in flight. The returned promise settles once it is on disk.
   */
  writeNow(): Promise<void> {
    const text = this.text();
    if (this.inFlight) return this.inFlight.then(() => this.writeText(text));
    this.writeText(text);
    return Promise.resolve();
  }

  private writeText(text: string): void {
    const tmp = this.tmpName();
    try {
      writeFileSync(tmp, text, { flag: 'wx', mode: 0o644 });
      renameSync(tmp, this.file);
    } catch (e) {
      rmSync(tmp, { force: true });
      this.failed(e);
    }
  }

  private text(): string {
    return JSON.stringify({ time: new Date().toISOString(), ...(this.doc() as object) }, null, 1);
  }

  private tmpName(): string {
    return `${this.file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  }

  private failed(e: unknown): void {
    // Once at warn (e.g. a directory the --user cannot write), then at debug: not every second.
    this.log[this.warned ? 'debug' : 'warn']('cannot write the stats file', { file: this.file, error: errorMessage(e) });
    this.warned = true;
  }
}
