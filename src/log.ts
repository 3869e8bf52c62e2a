// Structured logs through pino: JSON lines for machines, one readable line per
// event when stderr is a terminal (or --log-format pretty).
import { Writable } from 'node:stream';
import pino from 'pino';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  readonly level: LogLevel;
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  trace(msg: string, fields?: LogFields): void;
  enabled(level: LogLevel): boolean;
  child(scope: string): Logger;
}

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  return typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
}

/** `time LEVEL [scope] message key=value ...` from one pino JSON line. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, scope, msg, ...rest } = o;
  let line = `${String(time)} ${String(level).toUpperCase().padEnd(5)} [${String(scope)}] ${String(msg)}`;
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
  return line + '\n';
}

function prettyStream(write: (line: string) => void): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') write(prettyLine(l));
      cb();
    },
  });
}

/**
 * A logger for `scope`. Without `sink` it writes to stderr (synchronously, so
 * nothing is lost at exit): JSON lines, or pretty lines on a terminal.
 */
export function createLogger(
  level: LogLevel,
  scope = 'dp-tcp',
  opts: { format?: LogFormat; sink?: (line: string) => void } = {},
): Logger {
  const format = opts.format ?? 'auto';
  const pretty = format === 'pretty' || (format === 'auto' && process.stderr.isTTY === true);
  const sink = opts.sink;
  const dest = pretty
    ? prettyStream(sink ?? ((l) => process.stderr.write(l)))
    : sink
      ? new Writable({ write: (c: Buffer, _e, cb) => (sink(c.toString('utf8')), cb()) })
      : pino.destination({ fd: 2, sync: true });
  const root = pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
  const make = (s: string): Logger => {
    const p = root.child({ scope: s });
    const emit = (lvl: LogLevel) => (msg: string, fields?: LogFields) => {
      if (fields) p[lvl](fields, msg);
      else p[lvl](msg);
    };
    return {
      level,
      error: emit('error'),
      warn: emit('warn'),
      info: emit('info'),
      debug: emit('debug'),
      trace: emit('trace'),
      enabled: (l) => p.isLevelEnabled(l),
      child: (sub) => make(`${s}/${sub}`),
    };
  };
  return make(scope);
}

/** For tests: a logger that keeps its (pretty) lines. */
export function memoryLogger(level: LogLevel = 'debug'): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = createLogger(level, 'test', { format: 'pretty', sink: (l) => lines.push(l) });
  return Object.assign(log, { lines });
}
