// YAML config -> a validated, frozen Config. Two forms are accepted: the
// original dp-tcp's (tcp1_dial_addr, ...) and the modern one (a `links:` list).
// A bad field is reported as `file: path.to.field: problem`.
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isIP } from 'node:net';
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, parseDocument, type Document } from 'yaml';
import { DpError, errorMessage } from '../errors.js';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../log.js';
import { addressBytes, CIPHERS, formatAddress, SCHEDULING_MODES, type Encryption, type SchedulingMode, type TunnelAddress } from '../protocol/handshake.js';
import { decodeKey, isPublishedKey, looksLikeKey, readPrivateKeyFile, readSecretFile } from '../secure/keys.js';
import { equalConstantTime, publicKeyOf } from '../secure/primitives.js';
import { SEALED_OVERHEAD_BYTES } from '../secure/record.js';
import { inPrefix } from '../core/ip.js';
import { DATA_HEADER_BYTES, sanitizeText } from '../protocol/frame.js';
import {
  DEFAULT_MTU,
  DEFAULT_NICE,
  DEFAULT_SERVER_LIMITS,
  DEFAULT_TIMING,
  type ServerLimits,
  type ClientLinkConfig,
  type Config,
  type PeerConfig,
  type Role,
  type SecurityConfig,
  type ServerLinkConfig,
  type TimingConfig,
  type TunnelDeviceConfig,
  DEFAULT_STATUS_PORT,
  type HostPort,
  type Prefix,
} from './types.js';

/** A place in the YAML text, both 1-based (as editors and compilers count). */
export interface TextPosition {
  readonly line: number;
  readonly col: number;
}

/** The most of a problem's text a message shows: values are echoed, and a value may be 100 KB (a path or two fit). */
const PROBLEM_MAX_CHARS = 1000;

/**
 * A problem as a terminal may show it: control and bidi characters (an escape
 * sequence in a value, say) replaced, and cut in the middle past PROBLEM_MAX_CHARS.
 */
function shown(problem: string): string {
  const clean = sanitizeText(problem, Infinity);
  if (clean.length <= PROBLEM_MAX_CHARS) return clean;
  return `${clean.slice(0, PROBLEM_MAX_CHARS - 60)}… (${clean.length} characters) …${clean.slice(-40)}`;
}

export class ConfigError extends DpError {
  /**
   * `at`: where in the file, when known. A problem without a field path (a
   * YAML syntax error) has only its position, so the message leads with it:
   * `file:line:col: problem`; a field's message leads with its path.
   */
  constructor(
    readonly file: string,
    readonly path: string,
    readonly problem: string,
    readonly at?: TextPosition,
  ) {
    const text = shown(problem);
    super('ERR_CONFIG', path === '' && at ? `${file}:${at.line}:${at.col}: ${text}` : `${file}: ${path === '' ? '' : `${path}: `}${text}`, {
      exitCode: 2,
    });
    this.name = 'ConfigError';
  }

  /** `file:line:col: path: problem` (the position where known): one line of `dp-tcp check`. */
  located(): string {
    const where = this.at ? `${this.file}:${this.at.line}:${this.at.col}` : this.file;
    return `${where}: ${this.path === '' ? '' : `${this.path}: `}${shown(this.problem)}`;
  }

  withPosition(at: TextPosition | undefined): ConfigError {
    return at === undefined || this.at !== undefined ? this : new ConfigError(this.file, this.path, this.problem, at);
  }
}

/**
 * Where problems go while a file is checked: with a sink, a section that
 * fails is recorded and the next one is read (`dp-tcp check` lists them all);
 * without, the first problem is thrown (starting a tunnel stops at it).
 */
type Sink = ConfigError[] | undefined;

type Yaml = unknown;

/** Levenshtein distance: how many one-character edits turn `a` into `b`. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row.push(Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1)));
    }
    prev = row;
  }
  return prev[b.length] as number;
}

/** Walks a YAML mapping, remembering the path and which keys were read. */
class Node {
  private readonly used = new Set<string>();
  constructor(
    readonly file: string,
    readonly path: string,
    private readonly obj: Record<string, Yaml>,
    readonly sink: Sink,
  ) {}

  static of(file: string, path: string, v: Yaml, sink: Sink): Node {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      throw new ConfigError(file, path, `must be a mapping, got ${describe(v)}`);
    }
    return new Node(file, path, v as Record<string, Yaml>, sink);
  }

  /** A mapping inside this one (an item of a list this node holds). */
  nested(path: string, v: Yaml): Node {
    return Node.of(this.file, path, v, this.sink);
  }

  /**
   * Runs one part of the reading; with a sink, a problem is recorded and
   * `fallback` returned, and the keys the part owns count as read (so that a
   * failed section is not reported again as unknown fields).
   */
  part<T>(owned: (key: string) => boolean, read: () => T, fallback: T): T {
    try {
      return read();
    } catch (e) {
      if (!(e instanceof ConfigError) || this.sink === undefined) throw e;
      this.sink.push(e);
      for (const k of Object.keys(this.obj)) if (owned(k)) this.used.add(k);
      return fallback;
    }
  }

  fail(key: string, problem: string): never {
    throw new ConfigError(this.file, this.sub(key), problem);
  }

  sub(key: string): string {
    return this.path === '' ? key : `${this.path}.${key}`;
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  keys(): string[] {
    return Object.keys(this.obj);
  }

  raw(key: string): Yaml {
    this.used.add(key);
    return this.obj[key];
  }

  child(key: string): Node {
    if (this.raw(key) === undefined) this.fail(key, this.missing(key));
    return Node.of(this.file, this.sub(key), this.raw(key), this.sink);
  }

  /** 'is required', naming a key of this mapping that looks like a misspelling of it (a typo would show only as "unknown field" later, or not at all). */
  private missing(key: string): string {
    // The original's link keys of another link (tcp2_dial_addr beside tcp1_dial_addr) are fields, not typos.
    const legacyField = /^tcp\d+_((dial|conn|listen)_(addr|port)|(upload|download)_mbit)$/;
    const near = Object.keys(this.obj).find((k) => k !== key && !this.used.has(k) && !legacyField.test(k) && editDistance(k, key) <= 2);
    return near === undefined ? 'is required' : `is required (found '${near}': misspelt?)`;
  }

  optChild(key: string): Node | undefined {
    return this.has(key) ? this.child(key) : (this.raw(key), undefined);
  }

  string(key: string): string {
    const v = this.raw(key);
    if (v === undefined || v === null) this.fail(key, v === undefined ? this.missing(key) : 'is required');
    if (typeof v !== 'string' && typeof v !== 'number') this.fail(key, `must be a string, got ${describe(v)}`);
    const s = String(v).trim();
    if (s === '') this.fail(key, 'must not be empty');
    return s;
  }

  optString(key: string): string | undefined {
    return this.has(key) ? this.string(key) : (this.raw(key), undefined);
  }

  int(key: string, min: number, max: number): number {
    const v = this.raw(key);
    if (v === undefined || v === null) this.fail(key, v === undefined ? this.missing(key) : 'is required');
    const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) this.fail(key, `must be a whole number, got ${describe(v)}`);
    if (n < min || n > max) this.fail(key, `must be between ${min} and ${max}, got ${n}`);
    return n;
  }

  /** A rate in Mbit/s (a whole or decimal number), in kbit/s. */
  mbit(key: string, min: number, max: number): number {
    const v = this.raw(key);
    if (v === undefined || v === null) this.fail(key, v === undefined ? this.missing(key) : 'is required');
    const n = typeof v === 'string' && /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n)) this.fail(key, `must be a rate in Mbit/s (a number such as 45 or 2.5), got ${describe(v)}`);
    if (n < min || n > max) this.fail(key, `must be between ${min} and ${max} Mbit/s, got ${n}`);
    return Math.round(n * 1000);
  }

  /** Rejects keys nobody read: a typo must not silently fall back to a default. With a sink: every one of them. */
  done(): void {
    for (const k of Object.keys(this.obj)) {
      if (this.used.has(k)) continue;
      const e = new ConfigError(this.file, this.sub(k), 'is not a known field');
      if (this.sink === undefined) throw e;
      this.sink.push(e);
    }
  }
}

function describe(v: Yaml): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** server.limits: YAML key, ServerLimits field, bounds. */
const LIMIT_FIELDS: ReadonlyArray<readonly [string, keyof ServerLimits, number, number]> = [
  ['max_sessions', 'maxSessions', 1, 1 << 20],
  ['max_pending_handshakes', 'maxPending', 4, 1 << 16],
  ['max_links_per_session', 'maxLinksPerSession', 1, 16],
];

/** A mapping of whole numbers (`fields`: YAML key, field, bounds) over `defaults`; unknown keys refused. */
function readNumbers<T extends object>(n: Node | undefined, fields: ReadonlyArray<readonly [string, keyof T, number, number]>, defaults: T): Record<string, number> {
  const out: Record<string, number> = { ...(defaults as Record<string, number>) };
  if (n) {
    for (const [key, field, min, max] of fields) if (n.has(key)) out[field as string] = n.int(key, min, max);
    n.done();
  }
  return out;
}

function readLimits(n: Node | undefined): ServerLimits {
  return Object.freeze(readNumbers(n, LIMIT_FIELDS, DEFAULT_SERVER_LIMITS) as unknown as ServerLimits);
}

/** The timing fields: YAML key, TimingConfig field, bounds. */
const TIMING_FIELDS: ReadonlyArray<readonly [string, keyof TimingConfig, number, number]> = [
  ['elimination_ttl_ms', 'eliminationTtlMs', 10, 600_000],
  ['elimination_window_packets', 'eliminationWindowPackets', 1024, 1 << 24],
  ['queue_max_bytes', 'queueMaxBytes', 16_384, 1 << 30],
  ['queue_max_age_ms', 'queueMaxAgeMs', 1, 60_000],
  ['socket_notsent_lowat_bytes', 'socketNotsentLowatBytes', 4096, 1 << 26],
  ['keepalive_interval_ms', 'keepaliveIntervalMs', 10, 60_000],
  ['dead_interval_ms', 'deadIntervalMs', 50, 600_000],
  ['handshake_timeout_ms', 'handshakeTimeoutMs', 100, 60_000],
  ['reconnect_min_ms', 'reconnectMinMs', 10, 60_000],
  ['reconnect_max_ms', 'reconnectMaxMs', 10, 600_000],
  ['stats_interval_ms', 'statsIntervalMs', 0, 86_400_000],
  ['max_frame_bytes', 'maxFrameBytes', 1600, 1 << 20],
  ['batch_packets', 'batchPackets', 1, 1024],
  ['session_idle_ms', 'sessionIdleMs', 1000, 86_400_000],
];

function readTiming(n: Node | undefined): TimingConfig {
  const t = readNumbers(n, TIMING_FIELDS, DEFAULT_TIMING);
  if (n) {
    if (t['deadIntervalMs']! <= t['keepaliveIntervalMs']!) {
      n.fail('dead_interval_ms', 'must be longer than keepalive_interval_ms');
    }
    if (t['reconnectMaxMs']! < t['reconnectMinMs']!) n.fail('reconnect_max_ms', 'must be at least reconnect_min_ms');
  }
  return Object.freeze(t as unknown as TimingConfig);
}

/**
 * An IPv6 address in its one canonical text (RFC 5952: lower case, zeros
 * compressed), so that comparing addresses as text compares the addresses:
 * FD00:0::1 and fd00::1 are one host. IPv4 text has only one form.
 */
export function canonicalAddress(address: string): string {
  return isIP(address) === 6 ? new URL(`http://[${address}]`).hostname.slice(1, -1) : address;
}

export function parseAddressWithPrefix(n: Node, key: string, family: 4 | 6, defaultPrefix: number): TunnelAddress {
  const s = n.string(key);
  const m = /^(.+?)(?:\/(\d+))?$/.exec(s);
  const typed = m?.[1] ?? '';
  if (isIP(typed) !== family) n.fail(key, `must be an IPv${family} address (optionally with /prefix), got '${s}'`);
  if (typed.includes('%')) n.fail(key, `'${s}' has a zone index (%...): it has no meaning for a tunnel address`);
  const address = canonicalAddress(typed);
  const prefix = m?.[2] === undefined ? defaultPrefix : Number(m[2]);
  if (prefix < 1 || prefix > (family === 4 ? 32 : 128)) n.fail(key, `prefix length /${prefix} is out of range`);
  return Object.freeze({ family, address, prefix });
}

/** A tunnel address is a host's own: not unspecified, loopback, multicast or the broadcast address. */
function hostAddress(n: Node, key: string, a: TunnelAddress): TunnelAddress {
  const what = notAHostAddress(a);
  if (what !== undefined) n.fail(key, `${a.address} is ${what}, not one a host can have on the tunnel`);
  return a;
}

function notAHostAddress(a: TunnelAddress): string | undefined {
  const b = addressBytes(a);
  const first = b[0] as number;
  if (b.every((x) => x === 0)) return 'the unspecified address';
  if (a.family === 4) {
    if (first === 127) return 'a loopback address';
    if (first >= 224 && first < 240) return 'a multicast address';
    if (b.every((x) => x === 255)) return 'the broadcast address';
    return undefined;
  }
  if (first === 0xff) return 'a multicast address';
  if (b.subarray(0, 15).every((x) => x === 0) && b[15] === 1) return 'the loopback address';
  return undefined;
}

function readTunnel(n: Node): TunnelDeviceConfig {
  const name = n.string('name');
  // The kernel's rule (dev_valid_name): also not `.` or `..`, which it refuses at start.
  if (name.length > 15 || !/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..') {
    n.fail('name', `'${name}' is not a valid interface name (at most 15 of A-Z a-z 0-9 _ . -)`);
  }
  const addresses: TunnelAddress[] = [];
  // The original wrote a bare address; a /24 around it lets the two ends reach
  // each other without the default route it used to install.
  if (n.has('ip')) addresses.push(hostAddress(n, 'ip', parseAddressWithPrefix(n, 'ip', 4, 24)));
  else n.raw('ip');
  if (n.has('ipv6')) addresses.push(hostAddress(n, 'ipv6', parseAddressWithPrefix(n, 'ipv6', 6, 64)));
  else n.raw('ipv6');
  if (addresses.length === 0) n.fail('ip', 'is required (or ipv6)');
  const mtu = n.has('mtu') ? n.int('mtu', 576, 65_000) : (n.raw('mtu'), DEFAULT_MTU);
  if (addresses.some((a) => a.family === 6) && mtu < 1280) n.fail('mtu', 'must be at least 1280 when IPv6 is used');
  let offload = true;
  if (n.has('offload')) {
    const v = n.raw('offload');
    if (typeof v !== 'boolean') n.fail('offload', `must be true or false, got ${describe(v)}`);
    offload = v;
  } else n.raw('offload');
  n.done();
  return Object.freeze({ name, mtu, offload, addresses: Object.freeze(addresses) });
}

/** A DNS name (RFC 1123 labels, an optional final dot). */
const HOST_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** Is `s` a host name rather than an address (resolved at start: config/resolve.ts)? */
export function isHostName(s: string): boolean {
  return isIP(s) === 0 && HOST_NAME.test(s) && !/^[\d.]+$/.test(s);
}

/** `address:port` or `[v6]:port`; with `names`, `name:port` too (the original resolved names). */
function parseHostPort(n: Node, key: string, names = false): { address: string; port: number } {
  const s = n.string(key);
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const host = m?.[1] ?? '';
  if (!m || (isIP(host) === 0 && !(names && isHostName(host)))) {
    n.fail(key, `must be ${names ? 'address:port or name:port' : 'address:port'} (IPv6 as [address]:port), got '${s}'`);
  }
  const port = Number(m[2]);
  if (port < 1 || port > 65_535) n.fail(key, `port ${port} is out of range`);
  return { address: host, port };
}

/** An IP address; with `names`, a host name too. */
function ipString(n: Node, key: string, names = false): string {
  let s = n.string(key);
  // The original joined address and port as "%s:%d", so its IPv6 addresses were written in brackets.
  const bracketed = /^\[([^\]]+)\]$/.exec(s);
  if (bracketed && isIP(bracketed[1] as string) === 6) s = bracketed[1] as string;
  if (isIP(s) === 0 && !(names && isHostName(s))) n.fail(key, `must be an IP address${names ? ' or a host name' : ''}, got '${s}'`);
  return s;
}

/** Links a config may name, in either form (a session's link ids are 0 .. 15). */
const MAX_LINKS = 16;

/** The original's tcp<N>_* keys, for N = 1, 2, ... */
function legacyLinkNumbers(n: Node): number[] {
  const found = new Set<number>();
  for (const k of n.keys()) {
    const m = /^tcp(\d+)_/.exec(k);
    if (m) found.add(Number(m[1]));
  }
  return [...found].sort((a, b) => a - b);
}

/**
 * The links of either role: the original's tcp<N>_* fields (`legacy`, called
 * with N and the link id) or the modern `links:` list (`modern`, called with
 * the item's node, id and name). Not both.
 */
function readLinks<T>(n: Node, legacy: (num: number, id: number) => T, modern: (l: Node, id: number, name: string) => T): T[] {
  const numbers = legacyLinkNumbers(n);
  if (numbers.length > 0) {
    if (n.has('links')) n.fail('links', 'cannot be combined with the tcp<N>_* fields of the original format');
    n.raw('links');
    if (numbers.length > MAX_LINKS) {
      const extra = n.keys().find((k) => k.startsWith(`tcp${numbers[MAX_LINKS]}_`)) as string;
      n.fail(extra, `at most ${MAX_LINKS} links are supported (${numbers.length} link numbers in the tcp<N>_* fields)`);
    }
    // Checked one link at a time: a problem in one does not hide the next one's.
    return present(numbers.map((num, id) => n.part((k) => k.startsWith(`tcp${num}_`), () => Object.freeze(legacy(num, id)), undefined)));
  }
  const list = n.raw('links');
  if (!Array.isArray(list) || list.length === 0) n.fail('links', 'must be a non-empty list of links');
  if (list.length > MAX_LINKS) n.fail('links', `at most ${MAX_LINKS} links are supported`);
  const names = new Map<string, number>();
  return present(
    list.map((item: Yaml, id) =>
      n.part(
        () => false,
        () => {
          const l = n.nested(`${n.sub('links')}[${id}]`, item);
          const name = l.optString('name') ?? `link${id + 1}`;
          // connections_per_link names a link's further connections name~2, name~3, ...
          if (name.includes('~')) l.fail('name', `'${name}' has a '~': it is kept for the names of a link's connections (name~2, ...)`);
          // Status, logs and metrics name a link by it: a second one would hide the first.
          const first = names.get(name);
          if (first !== undefined) l.fail('name', `'${name}' is also the name of links[${first}]: each link needs its own`);
          names.set(name, id);
          const link = modern(l, id, name);
          l.done();
          return Object.freeze(link);
        },
        undefined,
      ),
    ),
  );
}

/**
 * A tcp<N>_ key the original format does not have is a typo: named first, or the missing
 * field it was meant to be would be reported alone (`tcp1_dial_adr` gave "tcp1_dial_addr: is required").
 */
function knownLegacyFields(n: Node, prefix: string, known: readonly string[]): void {
  for (const k of n.keys()) {
    if (k.startsWith(prefix) && !known.includes(k.slice(prefix.length))) {
      n.fail(k, `is not a known field (a link of the original format has ${known.map((f) => prefix + f).join(', ')})`);
    }
  }
}

/** The items that were read (a check goes on past a bad one; the config is then not used). */
function present<T>(items: Array<T | undefined>): T[] {
  return items.filter((x): x is T => x !== undefined);
}

function readClientLinks(n: Node): ClientLinkConfig[] {
  return readLinks<ClientLinkConfig>(
    n,
    (num, id) => {
      const p = `tcp${num}_`;
      knownLegacyFields(n, p, ['dial_addr', 'dial_port', 'conn_addr', 'conn_port', 'upload_mbit', 'download_mbit']);
      const remoteAddress = ipString(n, `${p}dial_addr`, true);
      const remotePort = n.int(`${p}dial_port`, 1, 65_535);
      const localAddress = n.has(`${p}conn_addr`) ? ipString(n, `${p}conn_addr`) : (n.raw(`${p}conn_addr`), undefined);
      sameFamily(n, `${p}conn_addr`, localAddress, remoteAddress);
      // The source port of the original is accepted but not bound: a fixed
      // source port would make a quick redial collide with its own TIME_WAIT.
      if (n.has(`${p}conn_port`)) n.int(`${p}conn_port`, 0, 65_535);
      else n.raw(`${p}conn_port`);
      return { id, name: `tcp${num}`, remoteAddress, remotePort, localAddress, ...readRates(n, p) };
    },
    (l, id, name) => {
      const { address, port } = parseHostPort(l, 'remote', true);
      const localAddress = l.has('local') ? ipString(l, 'local') : (l.raw('local'), undefined);
      sameFamily(l, 'local', localAddress, address);
      return { id, name, remoteAddress: address, remotePort: port, localAddress, ...readRates(l, '') };
    },
  );
}

/**
 * A link's source address must be of its remote's family: connect() would fail on every dial (EINVAL).
 * (A name is resolved to an address of the source's family: config/resolve.ts.)
 */
function sameFamily(n: Node, key: string, local: string | undefined, remote: string): void {
  if (local !== undefined && isIP(remote) !== 0 && isIP(local) !== isIP(remote)) {
    n.fail(key, `${local} is an IPv${isIP(local)} address, but the link dials the IPv${isIP(remote)} address ${remote}`);
  }
}

/** The lowest and highest `upload_mbit` / `download_mbit` of a link (per connection at least 0.1). */
export const MIN_LINK_MBIT = 0.1;
export const MAX_LINK_MBIT = 10_000;

/** A link's `upload_mbit` and `download_mbit` (`prefix`: the original format's `tcp<N>_`), in kbit/s. */
function readRates(n: Node, prefix: string): { uploadKbit?: number; downloadKbit?: number } {
  const out: { uploadKbit?: number; downloadKbit?: number } = {};
  for (const [key, field] of [
    ['upload_mbit', 'uploadKbit'],
    ['download_mbit', 'downloadKbit'],
  ] as const) {
    if (n.has(prefix + key)) out[field] = n.mbit(prefix + key, MIN_LINK_MBIT, MAX_LINK_MBIT);
    else n.raw(prefix + key);
  }
  return out;
}

/** Connections one configured link may open (client.connections_per_link). */
export const MAX_CONNECTIONS_PER_LINK = 4;

/**
 * `perLink` connections for every configured link: the first keeps the
 * link's id and name, the others follow all configured ones (ids n, n+1, ...)
 * named `<name>~2`, `<name>~3`. Each is a link of the protocol of its own; they
 * share a path (the same addresses), which the session sees.
 */
function withConnections(links: readonly ClientLinkConfig[], perLink: number): ClientLinkConfig[] {
  // Each connection paces at its share of the link's rates: bulk data takes the least-queued
  // connection of a path, so together they fill the link.
  const share = (kbit: number | undefined): number | undefined => (kbit === undefined ? undefined : Math.floor(kbit / perLink));
  const first = links.map((l) => (perLink === 1 ? l : Object.freeze({ ...l, uploadKbit: share(l.uploadKbit), downloadKbit: share(l.downloadKbit) })));
  const out = [...first];
  for (let k = 1; k < perLink; k++) {
    for (const l of first) out.push(Object.freeze({ ...l, id: out.length, name: `${l.name}~${k + 1}`, path: l.id }));
  }
  return out;
}

function readServerLinks(n: Node): ServerLinkConfig[] {
  return readLinks<ServerLinkConfig>(
    n,
    (num, id) => {
      knownLegacyFields(n, `tcp${num}_`, ['listen_addr', 'listen_port']);
      return {
        id,
        name: `tcp${num}`,
        listenAddress: ipString(n, `tcp${num}_listen_addr`, true),
        listenPort: n.int(`tcp${num}_listen_port`, 1, 65_535),
      };
    },
    (l, id, name) => {
      const { address, port } = parseHostPort(l, 'listen', true);
      return { id, name, listenAddress: address, listenPort: port };
    },
  );
}

/** Does a listener on :: take IPv4 too (net.ipv6.bindv6only 0, the default: Node sets no IPV6_V6ONLY)? */
function dualStack(): boolean {
  try {
    return readFileSync('/proc/sys/net/ipv6/bindv6only', 'utf8').trim() !== '1';
  } catch {
    return true;
  }
}

/**
 * Whether two listeners would take the same port: the same address, or a wildcard
 * (0.0.0.0 takes every IPv4 address; :: every IPv6 one, and every IPv4 one unless this
 * host has net.ipv6.bindv6only = 1).
 */
export function listensOverlap(a: ServerLinkConfig, b: ServerLinkConfig, v4OnV6: boolean): boolean {
  if (a.listenPort !== b.listenPort) return false;
  // As the kernel sees them: FD00:0::1 is fd00::1, ::ffff:10.0.1.1 is 10.0.1.1.
  const x = listenedAddress(a.listenAddress);
  const y = listenedAddress(b.listenAddress);
  if (x === y) return true;
  const v4 = (s: string): boolean => isIP(s) === 4;
  const takes = (wild: string, other: string): boolean =>
    (wild === '0.0.0.0' && v4(other)) || (wild === '::' && (v4OnV6 || !v4(other)));
  return takes(x, y) || takes(y, x);
}

function listenedAddress(address: string): string {
  if (isIP(address) !== 6) return address;
  // A scoped address (fe80::1%eth0): the address canonical, the zone as written.
  const zone = address.indexOf('%');
  const bare = zone < 0 ? address : address.slice(0, zone);
  const b = addressBytes({ family: 6, address: bare, prefix: 128 });
  const v4Mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (v4Mapped) return [...b.subarray(12)].join('.');
  return canonicalAddress(bare) + (zone < 0 ? '' : address.slice(zone));
}

/** A listener as a message names it: address:port, IPv6 in brackets. */
export function listenText(c: ServerLinkConfig): string {
  return `${c.listenAddress.includes(':') ? `[${c.listenAddress}]` : c.listenAddress}:${c.listenPort}`;
}

/** The first pair of `links` that would listen on one address and port (undefined: none). */
export function overlappingListeners(links: readonly ServerLinkConfig[]): { link: ServerLinkConfig; other: ServerLinkConfig } | undefined {
  const v4OnV6 = links.some((l) => listenedAddress(l.listenAddress) === '::') && dualStack();
  for (const [i, link] of links.entries()) {
    const other = links.slice(0, i).find((o) => listensOverlap(o, link, v4OnV6));
    if (other !== undefined) return { link, other };
  }
  return undefined;
}

export const MIN_PSK_BYTES = 16;
/** Below this a psk is warned about at start: it may be a passphrase, open to offline guessing (docs/security.md). */
export const STRONG_PSK_BYTES = 32;

/**
 * The warning for a short psk in the shared-key form, which derives both static
 * keys from the psk alone: one recorded INITIATION lets anyone test guesses
 * offline, a hash and an X25519 each. (Beside peer keys a psk is a second
 * secret, not the only one.)
 */
export function weakPskWarning(security: SecurityConfig): string | undefined {
  const psk = security.psk;
  if (security.mode !== 'psk' || psk === undefined || psk.length >= STRONG_PSK_BYTES) return undefined;
  return `a psk of ${psk.length} bytes: if it is a word or phrase, one recorded handshake lets anyone guess it offline; use ${STRONG_PSK_BYTES} random bytes (head -c ${STRONG_PSK_BYTES} /dev/urandom | base64 > psk_file)`;
}

/** A 32-byte key given as base64 in the config (a public key). */
function keyField(n: Node, key: string): Buffer {
  const text = n.string(key);
  let k: Buffer;
  try {
    k = decodeKey(text);
  } catch (e) {
    n.fail(key, errorMessage(e));
  }
  if (isPublishedKey(k)) {
    n.fail(key, "is the shipped example's placeholder (an RFC 7748 test key, whose private half is published: anyone could hold it): put the real key here (dp-tcp pubkey < the other side's key file)");
  }
  return k;
}

/** The secret-file readers throw DpErrors naming the file; here they gain the field's path. */
function secretFile<T>(n: Node, key: string, read: (path: string) => T): T {
  const text = n.string(key);
  // A key pasted in place of its path would otherwise end up in a 'cannot read' message.
  if (looksLikeKey(text)) n.fail(key, 'must be the path of a file that holds the key, not the key itself');
  try {
    return read(resolve(dirname(n.file), text));
  } catch (e) {
    n.fail(key, errorMessage(e));
  }
}

/** psk (inline, in a config only its owner can read) or psk_file: the raw bytes, at least 16. */
function readPsk(n: Node, fileMode: number | undefined): Buffer | undefined {
  if (n.has('psk') && n.has('psk_file')) n.fail('psk_file', 'give psk or psk_file, not both');
  let psk: Buffer | undefined;
  if (n.has('psk')) {
    // YAML reads unquoted digits as a number: 123456789012345678901234 would become '1.2345678901234569e+23'.
    if (typeof n.raw('psk') !== 'string') n.fail('psk', 'must be a string: quote it (unquoted, YAML reads it as a number and loses digits)');
    psk = Buffer.from(n.string('psk'), 'utf8');
    if (fileMode !== undefined && (fileMode & 0o077) !== 0) {
      n.fail(
        'psk',
        `${n.file} can be read or written by group or others (mode ${(fileMode & 0o777).toString(8)}): move the key to a psk_file, or chmod 600 ${n.file}`,
      );
    }
    n.raw('psk_file');
  } else if (n.has('psk_file')) {
    psk = secretFile(n, 'psk_file', readSecretFile);
    n.raw('psk');
  } else {
    n.raw('psk');
    n.raw('psk_file');
  }
  if (psk !== undefined && psk.length < MIN_PSK_BYTES) {
    n.fail(n.has('psk') ? 'psk' : 'psk_file', `the key must be at least ${MIN_PSK_BYTES} bytes (use e.g. 'openssl rand -base64 32')`);
  }
  return psk;
}

/**
 * One prefix of a list: `address/length`; with `strict` (allowed_ips) also a
 * bare address (a host prefix, as wg accepts it), and no bits set past the
 * length: 10.0.0.5/24 is a typo for a host or for a network, and guessing
 * which would widen or narrow what a peer may send.
 */
function parsePrefix(n: Node, path: string, item: Yaml, strict: boolean): Prefix {
  const text = typeof item === 'string' ? item.trim() : '';
  const m = /^([^/%]+)(?:\/(\d+))?$/.exec(text);
  const family = isIP(m?.[1] ?? '');
  if (!m || family === 0 || (!strict && m[2] === undefined)) n.fail(path, `must be address/prefix, got ${describe(item)}`);
  const max = family === 4 ? 32 : 128;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max) n.fail(path, `prefix length /${prefix} is out of range`);
  const p = Object.freeze({ family: family as 4 | 6, address: canonicalAddress(m[1] as string), prefix });
  if (strict) {
    const bytes = addressBytes(p);
    const net = Buffer.from(bytes);
    for (let i = 0; i < net.length; i++) {
      const keep = Math.max(0, Math.min(8, prefix - i * 8));
      net[i] = (net[i] as number) & ((0xff << (8 - keep)) & 0xff);
    }
    if (!net.equals(bytes)) n.fail(path, `${text} has host bits set: the network is ${formatAddress(net)}/${prefix}, a single host /${max}`);
  }
  return p;
}

function prefixKey(p: Prefix): string {
  return `${addressBytes(p).toString('hex')}/${p.prefix}`;
}

/** Do the networks a and b share an address (one holds the other)? */
function overlaps(a: Prefix, b: Prefix): boolean {
  return a.prefix <= b.prefix ? inPrefix(b, a) : inPrefix(a, b);
}

/**
 * server.peers: each client's public key, name and allowed_ips; keys and names
 * unique, and no address allowed for two peers. The server checks a packet's
 * source, and a claimed address, against the sending peer's own prefixes
 * alone: with 10.0.0.0/25 for one peer and 10.0.0.2/32 for another, the first
 * could send as the second and take its address (WireGuard gives an address
 * to the most specific prefix instead; here an overlap is a config error).
 */
function readPeers(n: Node, ownPublicKey: Buffer): PeerConfig[] {
  const list = n.raw('peers');
  if (!Array.isArray(list)) n.fail('peers', 'must be a list of clients, each { public_key, allowed_ips }');
  const keys = new Map<string, number>();
  const names = new Map<string, number>();
  const prefixes = new Map<string, number>();
  const owned: Array<{ prefix: Prefix; owner: number }> = [];
  const readPeer = (item: Yaml, i: number): PeerConfig => {
    // Typed, so that its fail() (never) narrows what follows.
    const p: Node = n.nested(`${n.sub('peers')}[${i}]`, item);
    const publicKey = keyField(p, 'public_key');
    const keyText = publicKey.toString('base64');
    const sameKey = keys.get(keyText);
    if (sameKey !== undefined) p.fail('public_key', `is also the key of peers[${sameKey}]: each client needs its own key pair`);
    keys.set(keyText, i);
    if (equalConstantTime(publicKey, ownPublicKey)) {
      p.fail('public_key', "is this server's own public key: list each client's key (dp-tcp pubkey < client.key)");
    }
    const name = p.optString('name') ?? keyText.slice(0, 8);
    const sameName = names.get(name);
    if (sameName !== undefined) p.fail('name', `'${name}' is also the name of peers[${sameName}]`);
    names.set(name, i);
    const ips = p.raw('allowed_ips');
    if (!Array.isArray(ips) || ips.length === 0) {
      p.fail('allowed_ips', 'must be a non-empty list of the tunnel addresses this client may use, e.g. [10.0.0.2/32, "fd00::2/128"]');
    }
    const allowedIps = ips.map((ip: Yaml, j) => {
      const prefix = parsePrefix(p, `allowed_ips[${j}]`, ip, true);
      const k = prefixKey(prefix);
      const owner = prefixes.get(k);
      if (owner !== undefined) {
        p.fail(`allowed_ips[${j}]`, owner === i ? `${prefix.address}/${prefix.prefix} is listed twice` : `${prefix.address}/${prefix.prefix} is also allowed for peers[${owner}]`);
      }
      prefixes.set(k, i);
      for (const o of owned) {
        if (o.owner !== i && o.prefix.family === prefix.family && overlaps(o.prefix, prefix)) {
          p.fail(
            `allowed_ips[${j}]`,
            `${prefix.address}/${prefix.prefix} overlaps ${o.prefix.address}/${o.prefix.prefix} of peers[${o.owner}]: an address may be allowed for one peer only`,
          );
        }
      }
      owned.push({ prefix, owner: i });
      return prefix;
    });
    p.done();
    return Object.freeze({ name, publicKey, allowedIps: Object.freeze(allowedIps) });
  };
  return present(list.map((item: Yaml, i) => n.part(() => false, () => readPeer(item, i), undefined)));
}

/**
 * The security fields of either role -> mode 'open' (nothing), 'psk' (psk or
 * psk_file alone) or 'keys' (private_key_file with server_public_key or
 * peers, a psk as an extra secret). `fileMode`: the config file's mode, when
 * it came from a file.
 */
function readSecurity(n: Node, role: Role, fileMode: number | undefined): SecurityConfig {
  // A field of the other role is a misplaced file or a misunderstanding; say which.
  if (role === 'client' && n.has('peers')) {
    n.fail('peers', 'belongs in a server config; a client names its server with server_public_key');
  }
  if (role === 'server' && n.has('server_public_key')) {
    n.fail('server_public_key', 'belongs in a client config; a server lists its clients under peers');
  }
  const psk = readPsk(n, fileMode);
  const privateKey = n.has('private_key_file') ? secretFile(n, 'private_key_file', readPrivateKeyFile) : (n.raw('private_key_file'), undefined);
  if (privateKey !== undefined && isPublishedKey(publicKeyOf(privateKey))) {
    n.fail('private_key_file', 'holds an RFC 7748 test key, whose private half is published: make a key of your own (umask 077; dp-tcp genkey > FILE)');
  }

  let serverPublicKey: Buffer | undefined;
  let peers: PeerConfig[] = [];
  if (role === 'client') {
    n.raw('peers');
    serverPublicKey = n.has('server_public_key') ? keyField(n, 'server_public_key') : (n.raw('server_public_key'), undefined);
    if (privateKey !== undefined && serverPublicKey === undefined) {
      n.fail('server_public_key', "is required with private_key_file (the server's public key: dp-tcp pubkey < server.key)");
    }
    if (serverPublicKey !== undefined && privateKey === undefined) {
      n.fail('private_key_file', "is required with server_public_key (this client's own key: dp-tcp genkey > client.key)");
    }
    // WireGuard's classic copy-paste slip: it would show only as a server that never answers.
    if (serverPublicKey !== undefined && privateKey !== undefined && publicKeyOf(privateKey).equals(serverPublicKey)) {
      n.fail('server_public_key', "is this client's own public key: give the server's (dp-tcp pubkey < server.key, on the server)");
    }
  } else {
    n.raw('server_public_key');
    if (n.has('peers')) {
      if (privateKey === undefined) n.fail('private_key_file', "is required with peers (this server's own key: dp-tcp genkey > server.key)");
      peers = readPeers(n, publicKeyOf(privateKey));
    } else n.raw('peers');
    // (A list whose every item was wrong has its own messages: this is for an empty or missing one.)
    const listed = n.raw('peers');
    if (privateKey !== undefined && !(Array.isArray(listed) && listed.length > 0)) {
      n.fail('peers', 'must list at least one client (public_key and allowed_ips) with private_key_file');
    }
  }

  const mode = privateKey !== undefined ? 'keys' : psk !== undefined ? 'psk' : 'open';
  let encryption: Encryption = mode === 'open' ? 'none' : 'chacha20-poly1305';
  if (n.has('encryption')) {
    const e = n.string('encryption');
    if (e !== 'none' && !(CIPHERS as readonly string[]).includes(e)) n.fail('encryption', `must be ${CIPHERS.join(' or ')} (none without a key), got '${e}'`);
    if (mode === 'open' && e !== 'none') {
      n.fail('encryption', 'needs a key to encrypt with: private_key_file (peer keys) or psk_file');
    }
    if (mode !== 'open' && e === 'none') {
      n.fail('encryption', 'every frame is authenticated and encrypted when a key is set; remove encryption: none');
    }
    encryption = e as Encryption;
  } else {
    n.raw('encryption');
  }
  return Object.freeze({ mode, privateKey, psk, encryption, serverPublicKey, peers: Object.freeze(peers) });
}

function readStatusListen(n: Node, role: Role): HostPort | undefined {
  if (!n.has('status_listen')) {
    n.raw('status_listen');
    return { address: '127.0.0.1', port: DEFAULT_STATUS_PORT[role] };
  }
  const v = n.raw('status_listen');
  if (v === false || v === 'off') return undefined;
  return parseHostPort(n, 'status_listen');
}

/**
 * client.routes: prefixes sent through the tunnel. Each is a network (no host
 * bits: `ip route add` refuses them), listed once (a /0 is added as its two
 * halves: 0.0.0.0/0 and 0.0.0.0/1 would be the same route twice), and not the
 * tunnel's own network (the kernel has that route already) — checked here, not
 * found by a failing `ip route add` at start. A family the tunnel has no
 * address of is allowed: `"::/0"` on an IPv4 tunnel keeps IPv6 from leaking
 * past it (its packets are dropped there, as with WireGuard); start says so.
 */
function readRoutes(n: Node, tunnel: readonly Prefix[] | undefined): Prefix[] {
  const list = n.raw('routes');
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) n.fail('routes', 'must be a list of prefixes, e.g. [0.0.0.0/0, 192.168.50.0/24]');
  const seen = new Map<string, { index: number; zero: boolean }>();
  return list.map((item: Yaml, i) => {
    const path = `routes[${i}]`;
    const p = parsePrefix(n, path, item, false); // the length is required here
    parsePrefix(n, path, item, true); // and no host bits
    // A /0 is added as its two /1 halves.
    const halves: Prefix[] =
      p.prefix === 0
        ? p.family === 4
          ? [{ family: 4, address: '0.0.0.0', prefix: 1 }, { family: 4, address: '128.0.0.0', prefix: 1 }]
          : [{ family: 6, address: '::', prefix: 1 }, { family: 6, address: '8000::', prefix: 1 }]
        : [p];
    for (const h of halves) {
      const first = seen.get(prefixKey(h));
      if (first === undefined) continue;
      const why = first.zero || p.prefix === 0 ? `: a /0 is added as its two /1 halves, and ${h.address}/1 is one` : '';
      n.fail(path, `${p.address}/${p.prefix} is listed already (routes[${first.index}]${why})`);
    }
    for (const h of halves) seen.set(prefixKey(h), { index: i, zero: p.prefix === 0 });
    if (tunnel !== undefined) {
      if (tunnel.some((t) => t.prefix === p.prefix && inPrefix(p, t))) {
        n.fail(path, `${p.address}/${p.prefix} is the tunnel's own network: it goes through the tunnel already`);
      }
    }
    return p;
  });
}

export interface ParseOptions {
  /** The config file's mode (st_mode): an inline psk is refused if group or others can read the file. */
  readonly fileMode?: number;
}

/** The YAML text as a document, with the line of every node; syntax errors as positioned problems. */
function parseYaml(text: string, file: string): { doc: Document; lines: LineCounter; problems: ConfigError[] } {
  const lines = new LineCounter();
  // prettyErrors off: the message stays one line; the position comes from the LineCounter.
  // merge: YAML 1.1's `<<:` merge keys, which the original's yaml.v2 reads.
  const docs = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true, merge: true, lineCounter: lines });
  const all: Document[] = [...docs];
  // One document is read, as yaml.v2 does; a `---` with nothing after it (a habit of YAML writers) is no second one.
  const doc = all[0] ?? parseDocument('', { lineCounter: lines });
  const problems = doc.errors.map((e) => new ConfigError(file, '', `is not valid YAML: ${e.message.split('\n')[0]}`, lines.linePos(e.pos[0])));
  const empty = (d: Document): boolean => d.contents === null || (isScalar(d.contents) && d.contents.value === null);
  const extra = all.slice(1).find((d) => !empty(d) || d.errors.length > 0);
  if (extra !== undefined) {
    const at = extra.contents?.range?.[0] ?? 0;
    problems.push(new ConfigError(file, '', 'holds a second YAML document (after ---): a config file is one document', lines.linePos(at)));
  }
  return { doc, lines, problems };
}

/** `client.links[0].remote` -> ['client', 'links', 0, 'remote']. */
function pathSegments(path: string): Array<string | number> {
  const out: Array<string | number> = [];
  for (const part of path.split('.')) {
    const m = /^([^[]*)((?:\[\d+\])*)$/.exec(part);
    if (!m) {
      out.push(part);
      continue;
    }
    if (m[1] !== '') out.push(m[1] as string);
    for (const idx of (m[2] ?? '').matchAll(/\[(\d+)\]/g)) out.push(Number(idx[1]));
  }
  return out;
}

/**
 * The line and column of a field's path in the text: of its key in its
 * mapping (or its item in a list); for a field that is missing, of the
 * nearest mapping that holds the path.
 */
function positionOf(doc: Document, lines: LineCounter, path: string): TextPosition | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined = (node as { range?: [number, number, number] } | null)?.range?.[0];
  for (const seg of pathSegments(path)) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      if (isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item: unknown = node.items[seg];
      const range = (item as { range?: [number, number, number] } | null)?.range;
      if (!range) break;
      offset = range[0];
      node = item;
    } else break;
  }
  return offset === undefined ? undefined : lines.linePos(offset);
}

/**
 * The document as plain values. toJS() throws on what parsing let through (an alias
 * expanded past the library's bound, `Excessive alias count`): a ConfigError, not a stack.
 */
function contentsOf(doc: Document, file: string): unknown {
  try {
    return doc.toJS();
  } catch (e) {
    throw new ConfigError(file, '', `cannot be read: ${errorMessage(e)}`);
  }
}

/** The role a file describes: its top-level `client:` or `server:` key (undefined: neither, or both). */
function roleOf(doc: Document, file: string): Role | undefined {
  const js: unknown = contentsOf(doc, file);
  if (js === null || typeof js !== 'object' || Array.isArray(js)) return undefined;
  const has = (k: string): boolean => (js as Record<string, unknown>)[k] !== undefined && (js as Record<string, unknown>)[k] !== null;
  return has('client') === has('server') ? undefined : has('client') ? 'client' : 'server';
}

/**
 * Reads the whole config. With `sink`, every problem found is recorded there
 * (and the returned config is undefined if there is any); without, the first
 * is thrown. Problems carry their position in the text.
 */
function parse(text: string, file: string, role: Role, opts: ParseOptions | undefined, sink: Sink): Config | undefined {
  const { doc, lines, problems } = parseYaml(text, file);
  const [firstProblem] = problems;
  if (firstProblem !== undefined) {
    if (sink === undefined) throw firstProblem;
    sink.push(...problems);
    return undefined;
  }
  const found: ConfigError[] = [];
  let config: Config | undefined;
  try {
    config = read(doc, file, role, opts, sink === undefined ? undefined : found);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    if (sink === undefined) throw e.withPosition(positionOf(doc, lines, e.path));
    found.push(e);
  }
  if (sink === undefined) return config;
  sink.push(...found.map((e) => e.withPosition(positionOf(doc, lines, e.path))));
  return found.length > 0 ? undefined : config;
}

function read(doc: Document, file: string, role: Role, opts: ParseOptions | undefined, sink: Sink): Config {
  const top = Node.of(file, '', contentsOf(doc, file) as Yaml, sink);
  const other: Role = role === 'client' ? 'server' : 'client';
  if (!top.has(role)) {
    if (top.has(other)) top.fail(other, `this is a ${other} config, but dp-tcp was started as ${role}`);
    top.fail(role, 'is required');
  }
  top.raw(other);
  if (top.has(other)) top.fail(other, `a config file describes one side; remove '${other}'`);
  const r = top.child(role);
  // Each section on its own: with a sink, a bad one is recorded and the others are still read.
  const tunnel = r.part((k) => k === 'tunnel_device', () => readTunnel(r.child('tunnel_device')), undefined);
  const timing = r.part((k) => k === 'timing', () => readTiming(r.optChild('timing')), DEFAULT_TIMING);
  const security = r.part((k) => SECURITY_FIELDS.includes(k), () => readSecurity(r, role, opts?.fileMode), undefined);
  const statusListen = r.part((k) => k === 'status_listen', () => readStatusListen(r, role), undefined);
  const nice = r.part((k) => k === 'nice', () => (r.has('nice') ? r.int('nice', -20, 19) : DEFAULT_NICE), DEFAULT_NICE);
  const logLevel = top.part(
    (k) => k === 'logger',
    (): LogLevel => {
      const logger: Node | undefined = top.optChild('logger');
      if (!logger) return 'info';
      const given = logger.optString('level') ?? 'info';
      // The original's logger has a 'test' level, below trace: the same here.
      const lvl = given === 'test' ? 'trace' : given;
      if (!isLogLevel(lvl)) return logger.fail('level', `must be one of ${LOG_LEVELS.join(', ')}, got '${given}'`);
      logger.done();
      return lvl;
    },
    'info',
  );
  const isLink = (k: string): boolean => k === 'links' || /^tcp\d+_/.test(k);
  let config: Config | undefined;
  if (role === 'client') {
    const links = r.part(isLink, () => readClientLinks(r), []);
    const routes = r.part((k) => k === 'routes', () => readRoutes(r, tunnel?.addresses), []);
    const mode = r.part(
      (k) => k === 'mode',
      (): SchedulingMode => {
        const m = r.optString('mode') ?? 'duplicate';
        if (!(SCHEDULING_MODES as readonly string[]).includes(m)) {
          return r.fail('mode', `must be one of ${SCHEDULING_MODES.join(', ')} (duplicate: every packet on every link), got '${m}'`);
        }
        return m as SchedulingMode;
      },
      'duplicate',
    );
    const perLink = r.part(
      (k) => k === 'connections_per_link',
      () => (r.has('connections_per_link') ? r.int('connections_per_link', 1, MAX_CONNECTIONS_PER_LINK) : 1),
      1,
    );
    if (links.length * perLink > 16) {
      r.part(() => false, () => r.fail('connections_per_link', `${links.length} links x ${perLink} connections is more than 16 connections`), undefined);
    }
    for (const l of links) {
      const low = Math.min(l.uploadKbit ?? Infinity, l.downloadKbit ?? Infinity);
      if (low / perLink < MIN_LINK_MBIT * 1000) {
        r.part(
          () => false,
          () => r.fail('connections_per_link', `link ${l.name}: ${low / 1000} Mbit/s over ${perLink} connections is less than ${MIN_LINK_MBIT} Mbit/s each`),
          undefined,
        );
      }
    }
    r.done();
    if (tunnel && security) {
      config = {
        role,
        file,
        tunnel,
        timing,
        security,
        statusListen,
        logLevel,
        nice,
        links: Object.freeze(withConnections(links, perLink)),
        routes: Object.freeze(routes),
        mode,
      };
    }
  } else {
    const links = r.part(isLink, () => readServerLinks(r), []);
    const nat = r.part(
      (k) => k === 'nat_out_interface',
      () => {
        const v = r.optString('nat_out_interface');
        if (v !== undefined && !/^[A-Za-z0-9_.@-]{1,15}$/.test(v)) r.fail('nat_out_interface', `'${v}' is not an interface name`);
        return v;
      },
      undefined,
    );
    const limits = r.part((k) => k === 'limits', () => readLimits(r.optChild('limits')), DEFAULT_SERVER_LIMITS);
    r.done();
    // Two links may not listen where one of them already does: the second listen would fail
    // at start with EADDRINUSE, which reads as another program's port.
    const modern = r.has('links');
    const overlap = overlappingListeners(links);
    if (overlap !== undefined) {
      const { link: l, other } = overlap;
      const key = modern ? `links[${l.id}].listen` : `${l.name}_listen_addr`;
      const otherKey = modern ? `links[${other.id}]` : other.name;
      r.part(() => false, () => r.fail(key, `${listenText(l)} overlaps ${otherKey}'s ${listenText(other)}: one address and port, one link`), undefined);
    }
    if (tunnel && security) {
      config = { role, file, tunnel, timing, security, statusListen, logLevel, nice, links: Object.freeze(links), natOutInterface: nat, limits };
    }
  }
  top.done();
  if (tunnel?.offload && timing.maxFrameBytes < 66_000) {
    r.part(() => false, () => r.fail('timing.max_frame_bytes', 'must be at least 66000 with offload on (64 KiB packets travel whole)'), undefined);
  }
  // A packet of the MTU must fit a frame (and a sealed record): a larger frame is a protocol error
  // to the receiver, which closes the link, and duplicate mode sends it on every link.
  else if (tunnel && timing.maxFrameBytes < tunnel.mtu + DATA_HEADER_BYTES + SEALED_OVERHEAD_BYTES) {
    r.part(
      () => false,
      () => r.fail('timing.max_frame_bytes', `must be at least ${tunnel.mtu + DATA_HEADER_BYTES + SEALED_OVERHEAD_BYTES} with tunnel_device.mtu ${tunnel.mtu} (a packet of the MTU travels in one frame)`),
      undefined,
    );
  }
  // Without a sink every problem was thrown, so both are there; with one, the caller looks at the sink first.
  return Object.freeze(config as Config);
}

/** The security fields (readSecurity's): a failed security section must not show up again as unknown fields. */
const SECURITY_FIELDS: readonly string[] = ['psk', 'psk_file', 'private_key_file', 'server_public_key', 'peers', 'encryption'];

/**
 * Parses YAML text; `file` names it in messages and anchors relative key
 * paths. Without `opts.fileMode` the file's permissions are not checked
 * (loadConfig passes them). Throws the first problem.
 */
export function parseConfig(text: string, file: string, role: Role, opts?: ParseOptions): Config {
  return parse(text, file, role, opts, undefined) as Config;
}

/** The text and st_mode of a config file; unreadable: a ConfigError naming it. */
function readConfigFile(file: string): { text: string; fileMode: number } {
  let fd: number | undefined;
  try {
    // The mode of the file we read, not of whatever is at the path a moment later.
    fd = openSync(file, 'r');
    const fileMode = fstatSync(fd).mode;
    return { text: readFileSync(fd, 'utf8'), fileMode };
  } catch (e) {
    throw new ConfigError(file, '', `cannot read the config file: ${errorMessage(e)}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export function loadConfig(file: string, role: Role): Config {
  const { text, fileMode } = readConfigFile(file);
  return parseConfig(text, file, role, { fileMode });
}

export interface CheckResult {
  /** The role checked: given, or the one the file describes. */
  readonly role: Role | undefined;
  /** Set when there is no problem. */
  readonly config: Config | undefined;
  /** Every problem found, in the order of the file's sections, each with its position where known. */
  readonly problems: readonly ConfigError[];
}

/**
 * `dp-tcp check`: reads a config file and the key files it names as a start
 * would, and collects every problem instead of stopping at the first. Nothing
 * outside the files is touched. `role` undefined: the one the file describes.
 */
export function checkConfig(file: string, role?: Role): CheckResult {
  let text: string;
  let fileMode: number;
  try {
    ({ text, fileMode } = readConfigFile(file));
  } catch (e) {
    if (e instanceof ConfigError) return { role, config: undefined, problems: [e] };
    throw e;
  }
  const { doc, problems } = parseYaml(text, file);
  if (problems.length > 0) return { role, config: undefined, problems };
  let r: Role | undefined;
  try {
    r = role ?? roleOf(doc, file);
  } catch (e) {
    if (e instanceof ConfigError) return { role, config: undefined, problems: [e] };
    throw e;
  }
  if (r === undefined) {
    return { role, config: undefined, problems: [new ConfigError(file, '', 'must have one top-level key, client: or server: (the side this file describes)', { line: 1, col: 1 })] };
  }
  const sink: ConfigError[] = [];
  const config = parse(text, file, r, { fileMode }, sink);
  // In the order of the file (the sort is stable: those without a position keep theirs, last).
  const key = (e: ConfigError): number => (e.at ? e.at.line * 1e6 + e.at.col : Number.MAX_SAFE_INTEGER);
  sink.sort((a, b) => key(a) - key(b));
  return { role: r, config: sink.length === 0 ? config : undefined, problems: sink };
}

/** What `dp-tcp status -c FILE` needs of a config: read without any secret or key file. */
export interface ConfigOutline {
  readonly role: Role;
  readonly tunName: string;
  readonly statusListen: HostPort | undefined;
}

/**
 * The role (given, or the one the file describes), TUN name and status
 * endpoint of a config, without reading its secrets: a status query must work
 * where the key files cannot be read (another user) or are not there.
 */
export function outlineConfig(file: string, role?: Role): ConfigOutline {
  const { text } = readConfigFile(file);
  const { doc, lines, problems } = parseYaml(text, file);
  const [firstProblem] = problems;
  if (firstProblem !== undefined) throw firstProblem;
  const r = role ?? roleOf(doc, file);
  if (r === undefined) throw new ConfigError(file, '', 'must have one top-level key, client: or server: (the side this file describes)');
  try {
    const top = Node.of(file, '', contentsOf(doc, file) as Yaml, undefined);
    if (!top.has(r)) top.fail(r, `is required (is this a ${r === 'client' ? 'server' : 'client'} config?)`);
    const side = top.child(r);
    const tunName = side.child('tunnel_device').string('name');
    return { role: r, tunName, statusListen: readStatusListen(side, r) };
  } catch (e) {
    throw e instanceof ConfigError ? e.withPosition(positionOf(doc, lines, e.path)) : e;
  }
}
