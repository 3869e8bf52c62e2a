// One TCP connection between client and server, after or during its
// handshake. Framing in, a bounded send queue out; what frames mean is the
// handler's business (the role during the handshake, then the session).
import type { Socket } from 'node:net';
import { TokenBucket } from '../token-bucket.js';
import type { RecordsSeen } from '../secure/keypair.js';
import { performance } from 'node:perf_hooks';
import { getSystemErrorName } from 'node:util';
import { errorMessage, ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { optionalAddon } from '../tun/loader.js';
import type { NativeAddon, NativeFastPath, NativeSocketReader } from '../tun/native.js';
import { hrToPerfMs, LINK_COUNTERS, LinkCounter } from './fast-path.js';
import { socketFd } from './socket-options.js';
import {
  CloseCode,
  encodeAck,
  encodeClose,
  encodeToken,
  FrameDecoder,
  frameAfter,
  FrameType,
  readU64,
} from '../protocol/frame.js';

export type LinkState = 'handshaking' | 'up' | 'closed';

/**
 * Reused buffers frames can be moved into when their TUN batch cannot be
 * pinned (the session's RecordArenas): `alloc` a buffer, then `pinOf` it
 * before the next alloc.
 */
export interface Spill {
  alloc(bytes: number): Buffer | undefined;
  pinOf(buf: Buffer): Pin | undefined;
}

/**
 * DATA frames for every link of a session. `view` may lie in the TUN's read
 * buffer, which the next batch overwrites: a link that writes it to its
 * socket at once needs no copy; one that must queue it takes `keep()`: the
 * view with the batch pinned, or `own()`, one copy shared by all the links of
 * the batch; the rest of a partial write is `rest()`: the view with the batch
 * pinned, or a copy of just those bytes. When the batch cannot be pinned (every
 * TUN read arena is held) and there is a `spill`, keep() and rest() first move
 * the frames there, one copy for all the links, pinned like the batch.
 *
 * Without the spill every such copy was a buffer of its own, up to 1 MiB, that
 * only V8's collector frees: an open-mode client under three 5 s iperf3 -P 4
 * runs made 333-343 of them (48-61 MB), and in about one such test of four its
 * peak RSS jumped to 94-100 MB (glibc's heap 3 -> 27 MB).
 */
export class OutFrames {
  constructor(
    private buf: Buffer,
    private borrowed: boolean,
    /** Keeps the TUN batch the view lies in from being overwritten (PacketBatch.pin). */
    private pin?: Pin,
    private readonly spill?: Spill,
  ) {}

  get view(): Buffer {
    return this.buf;
  }

  /**
   * The bytes from `from` on, for a link to keep (the rest of a partial send):
   * from the shared copy if a link made one already; else the view itself,
   * with the TUN batch pinned until `release` (the socket's write callback);
   * else a copy of just them.
   */
  rest(from: number): { buf: Buffer; release?: (() => void) | undefined } {
    if (!this.borrowed) return { buf: this.buf.subarray(from) };
    const release = this.pin?.() ?? this.spilled();
    if (release !== undefined) return { buf: this.buf.subarray(from), release };
    const copy = Buffer.allocUnsafe(this.buf.length - from);
    this.buf.copy(copy, 0, from);
    return { buf: copy };
  }

  /**
   * The frames for a link's queue: the view with the batch pinned until
   * `release` (when the queue lets go of them: written, or dropped), else
   * the copy the links share.
   */
  keep(): { buf: Buffer; release?: (() => void) | undefined } {
    if (this.borrowed) {
      const release = this.pin?.() ?? this.spilled();
      if (release !== undefined) return { buf: this.buf, release };
    }
    return { buf: this.own() };
  }

  /** Moves the frames into the spill and pins them there (the pin's release), or undefined if it has no room. */
  private spilled(): (() => void) | undefined {
    const copy = this.spill?.alloc(this.buf.length);
    if (copy === undefined) return undefined;
    const pin = (this.spill as Spill).pinOf(copy);
    if (pin === undefined) return undefined;
    this.buf.copy(copy);
    this.buf = copy;
    this.pin = pin;
    return pin();
  }

  own(): Buffer {
    if (this.borrowed) {
      // Not zero-filled first (Buffer.from would be, for large batches): it is overwritten at once.
      const copy = Buffer.allocUnsafe(this.buf.length);
      this.buf.copy(copy);
      this.buf = copy;
      this.borrowed = false;
    }
    return this.buf;
  }
}

/** PacketBatch.pin: keeps a TUN batch's bytes until release() runs, or undefined (copy them). */
export type Pin = () => (() => void) | undefined;

const optionalFns = new Map<string, unknown>();
/**
 * The addon's function `name`, looked up once; null where the addon cannot
 * load or was built before that function existed (the caller then does
 * without it: sendSome, Node's stream writer; unsentBytes, TCP_NOTSENT_LOWAT alone;
 * tcpRttMicros, a link's path round trip unknown until its first PONG).
 */
function addonFn<K extends 'sendSome' | 'unsentBytes' | 'tcpRttMicros'>(name: K): NonNullable<NativeAddon[K]> | null {
  if (!optionalFns.has(name)) {
    const f: unknown = optionalAddon()?.[name];
    optionalFns.set(name, typeof f === 'function' ? f : null);
  }
  return optionalFns.get(name) as NonNullable<NativeAddon[K]> | null;
}

type ReaderClass = NativeAddon['SocketReader'];
let readerClass: ReaderClass | null | undefined;
/**
 * The addon's socket reader, or null: where the addon cannot load, was built
 * before it existed, or DPTCP_NATIVE_READ=0 asks for Node's stream reader.
 */
function nativeReader(): ReaderClass | null {
  if (readerClass === undefined) {
    const c = process.env['DPTCP_NATIVE_READ'] === '0' ? undefined : (optionalAddon()?.SocketReader as ReaderClass | undefined);
    readerClass = typeof c === 'function' ? c : null;
  }
  return readerClass;
}

/**
 * What every natively read link reads into: one buffer for the process, since
 * a read is handed on and consumed before the next one starts. Its size bounds
 * what one connection hands on per loop turn, and so how long a packet that
 * arrives on another (a ping under a bulk transfer) waits for its turn: with 2
 * links of 4 connections, 256 KiB let one turn take 2 MiB (about 3 ms at 5
 * Gbit/s). 64 KiB: ping p50 / p99 under iperf3 0.6-1.4 / 5.4-6.6 ms against
 * 1.4-1.9 / 6.1-7.5 with 256 KiB, the same throughput (bench:wan (d1), 2
 * interleaved pairs; iperf3 at 1 connection per link 6.5-7.4 against 5.7-6.8
 * Gbit/s).
 */
const READ_BUFFER_BYTES = 64 * 1024;
let readBuffer: Buffer | undefined;

/** Why a packet copy was not sent on, or not taken from, a link. */
export type LinkDropReason = 'queue_full' | 'queue_age' | 'link_closed';

export interface LinkHandler {
  /**
   * `buf` may be the process's shared read buffer: valid during the call only;
   * whatever keeps bytes of it for later (a queue, a reorder buffer) copies them.
   */
  onFrame(link: Link, type: FrameType, buf: Buffer, start: number, end: number): void;
  /** After the frames of one socket read: the time to flush what they produced. */
  onChunkEnd(link: Link): void;
  onClose(link: Link, reason: string): void;
  /**
   * A frame broke the protocol (the link is still open): the handler closes
   * the link. Without this hook the link closes itself with a CLOSE that
   * names the error.
   */
  onProtocolError?(link: Link, error: ProtocolError): void;
}

export interface LinkOptions {
  readonly id: number;
  readonly name: string;
  readonly maxFrameBytes: number;
  readonly queueMaxBytes: number;
  readonly queueMaxAgeMs: number;
  readonly keepaliveIntervalMs: number;
  readonly deadIntervalMs: number;
}

export class LinkStats {
  /** DATA frames and bytes handed to the socket. */
  txPackets = 0;
  txBytes = 0;
  /** Of txBytes, those the kernel took from a direct send(2) (the rest went through Node's writer). */
  directBytes = 0;
  rxFrames = 0;
  rxBytes = 0;
  /** Of rxFrames, the DATA frames the native receive path took (core/fast-path.ts). */
  nativeFrames = 0;
  /**
   * Of nativeFrames, the copies another link had delivered that were dropped in the kernel
   * without being read (the link lagged: native/reader.h DropCopies).
   */
  droppedUnread = 0;
  /** DATA frames the native send path sent on this link (open mode, duplicate scheduling, one session). */
  nativeSentFrames = 0;
  /** DATA frames whose copy on this link was the first to arrive. */
  firstCopies = 0;
  /** Copies eliminated because another link delivered the packet first. */
  duplicates = 0;
  /** Copies that came after the elimination window had moved past them. */
  stale = 0;
  /** Keyed: sealed records dropped because their copy on another link came first (or a replay). */
  duplicateRecords = 0;
  drops: Record<LinkDropReason, number> = { queue_full: 0, queue_age: 0, link_closed: 0 };
  /** PINGs not answered because our send queue was past its bound (a peer that does not read). */
  pongsDropped = 0;
  /** PINGs not answered because the peer sent them faster than PONG_BURST / PONG_INTERVAL_MS allow. */
  pingsOverRate = 0;
  /** Packets of sparse flows (a ping, DNS, a call) that were sent ahead of bulk data queued on this link. */
  urgentPassed = 0;
  /** How long data waited in our send queue before the socket took it: smoothed (1/8) and the most, ms. */
  queueDelayMs = 0;
  queueDelayMaxMs = 0;
  /** Aggregate/adaptive: times the link stalled (striped data unacknowledged too long), and packets taken back from it and sent on the other links. */
  stalls = 0;
  reclaimed = 0;
  /** Connections that completed the handshake under this link id. */
  connects = 0;
  lastDownReason = '';
  /**
   * The path's round trip the striping scheduler counts with, ms (Link.pathRttMs): the last
   * connection's, kept here so that the next connection of this link starts from it.
   */
  pathRttMs = 0;
}

interface Queued {
  buf: Buffer;
  t: number;
  packets: number;
  /** Set when `buf` is a view of a pinned TUN batch: called once the queue lets go of it. */
  release?: (() => void) | undefined;
  /** Sent on this link only (aggregate, adaptive): kept until acknowledged, sent again elsewhere if the link fails. */
  striped: boolean;
  /** Keyed, striped: the record's plaintext, sealed again (new counter) if it is sent again elsewhere. */
  plain?: Buffer | undefined;
  /** A control or handshake frame of sendClear's: counted in controlBytes while it waits. */
  control?: true;
}

/** Striped data written to the socket and not yet acknowledged. */
interface Retained {
  /** This connection's byte count at the end of the buffer: an ACK of at least this covers it. */
  end: number;
  buf: Buffer;
  packets: number;
  t: number;
  /** Already sent again on another link (after a stall): not again. */
  resent: boolean;
  /** `buf` is a sealed record's plaintext (keyed): to be sealed again when sent again. */
  plain: boolean;
}

/** Data the link gives back to be sent on the others. */
export interface Reclaimed {
  buf: Buffer;
  packets: number;
  /**
   * `buf` is the plaintext of a sealed record: the session seals it again, under a fresh
   * counter (the old one may be more than the peer's replay window behind by now).
   */
  plain: boolean;
  /** Written and unacknowledged: the link's byte count at its end (an ACK of this much covers it). */
  end?: number;
}

const CLOSE_GRACE_MS = 500;
/**
 * An unpaced link whose smoothed round trip stays this far above its least
 * for BLOAT_HINT_SAMPLES keepalives in a row (5 s at the default interval)
 * is filling a buffer on its path (a modem's, or its socket's): the log says
 * to pace it, once per link name and process.
 */
export const BLOAT_HINT_EXCESS_MS = 100;
export const BLOAT_HINT_SAMPLES = 25;
const bloatHinted = new Set<string>();
/** Urgent data waiting ahead of the bulk queue, at most (beyond it, urgent data waits in order). */
export const URGENT_QUEUE_MAX_BYTES = 64 * 1024;
/**
 * How far past queue_max_bytes fresh striped data may go on the link chosen
 * for it before it was numbered: the session's other striped gather of the
 * same TUN batch (urgent or bulk: a record of up to 32 KiB, or one offload
 * packet of 64 KiB) may have taken the room meanwhile, and an offload packet
 * cut into pieces for a slow link carries a DATA header per piece.
 */
export const ADMITTED_SLACK_BYTES = 128 * 1024;
/**
 * An urgent record may pass at most this many queued records: half the
 * 8,192-record replay window of earlier versions, well inside today's
 * (secure/limits.ts), so the records it passed still arrive inside the window.
 */
export const URGENT_MAX_PASSED_RECORDS = 4096;
/**
 * Control and handshake frames (PING, a rekey's RESPONSE, ...) waiting in a
 * link's queue, at most. They are never dropped, and a peer that sends but
 * never reads would have them pile up for ever: past this the link is closed.
 * PINGs wait one at a time and PONGs are dropped past the data bound, so only
 * such a peer gets here (a rekey answered each second fills it in 10 minutes).
 */
export const CONTROL_QUEUE_MAX_BYTES = 64 * 1024;
/** Striped data a link keeps until acknowledged, at most; a link holding this much takes no more striped data. */
export const RETAIN_MAX_BYTES = 16 * 1024 * 1024;
/** The same, for all links of one session together (RetainBudget): a peer with 16 links would otherwise pin 256 MiB. */
export const SESSION_RETAIN_MAX_BYTES = 32 * 1024 * 1024;
/** The same, for all sessions of a tunnel together: a server's many peers. */
export const TUNNEL_RETAIN_MAX_BYTES = 256 * 1024 * 1024;
/**
 * Striped data unacknowledged, with no ACK progress, for this many
 * dead_interval_ms (or smoothed round trips, if longer: a link whose round trip
 * exceeds the dead interval still works): the link is closed as dead (its data
 * goes on the others).
 * A peer that reads acknowledges within ACK_DELAY_MS; one whose path stalls
 * hears nothing from us and closes the link after its own dead interval; a
 * peer that reads (and answers PINGs) but never acknowledges would otherwise
 * have us keep what it was sent for as long as it likes.
 */
export const ACK_TIMEOUT_DEAD_INTERVALS = 4;

/**
 * Bytes of striped data kept until acknowledged, counted across the links
 * that share the budget (a session's), and by its parent (the tunnel's).
 */
export class RetainBudget {
  bytes = 0;
  /** Budgets counting into this one (a tunnel's sessions) that hold something now. */
  private holding = 0;
  private detached = false;

  constructor(
    readonly maxBytes: number,
    private readonly parent?: RetainBudget,
  ) {}

  /**
   * No more fresh striped data may be kept under it: it holds its maximum, or
   * its parent does and it holds at least its fair share of the parent's: the
   * parent's maximum over the budgets that hold something, itself included (so
   * a few sessions cannot stop the others striping, and sessions that keep
   * nothing do not shrink the share; the parent may go past its maximum by at
   * most one share per holder).
   */
  get full(): boolean {
    if (this.bytes >= this.maxBytes) return true;
    const p = this.parent;
    if (p === undefined || p.bytes < p.maxBytes) return false;
    const holders = p.holding + (this.bytes > 0 ? 0 : 1);
    return this.bytes >= p.maxBytes / holders;
  }

  /** `toParent` false: this budget only (data given back, still held by its link: the parent keeps counting it). */
  add(n: number, toParent = true): void {
    const before = this.bytes;
    this.bytes += n;
    if (this.detached || this.parent === undefined) return;
    if (before <= 0 && this.bytes > 0) this.parent.holding++;
    else if (before > 0 && this.bytes <= 0) this.parent.holding--;
    if (toParent) this.parent.add(n);
  }

  /** The parent's count only (data given back, freed at last by the link that held it). */
  addToParent(n: number): void {
    if (!this.detached) this.parent?.add(n);
  }

  /** Leaves the parent (a closed session): what it still counts is given back. */
  detach(): void {
    if (this.detached) return;
    if (this.bytes !== 0) this.add(-this.bytes);
    this.detached = true;
  }
}

/**
 * PINGs answered per link: a burst of this many, then one per PONG_INTERVAL_MS.
 * A peer sends one per its keepalive_interval_ms (10 ms at the least), one at a
 * time; a PONG costs a sealed record and a send(2), so a peer streaming PINGs
 * made us do 170 times the work per byte it sent as for data (review).
 */
export const PONG_BURST = 16;
export const PONG_INTERVAL_MS = 5;
/** The receiver acknowledges after this many bytes, or ACK_DELAY_MS after the last unacknowledged one. */
export const ACK_BYTES = 64 * 1024;
export const ACK_DELAY_MS = 5;
/**
 * A frame still arriving with more than this much of it read is acknowledged
 * as far as it came (an ACK counts bytes, not frames): on a slow link a 64 KiB
 * frame takes seconds, and its sender must see progress. No ACK record is this long.
 */
export const ACK_PARTIAL_BYTES = 1024;
/** Such partial ACKs at most this often: a slow link's reverse direction is scarce (one per segment would be 200/s). */
export const ACK_PARTIAL_INTERVAL_MS = 100;
/**
 * Keyed, a link's sign of life is a record that authenticates (heard). Other bytes count only
 * for this many dead intervals (or smoothed round trips, if longer) after the last one: an on-path
 * attacker's records under an unknown index are dropped unopened, and 40 bytes of them every
 * 100 ms kept a black-holed link up for ever (review); but a slow or bloated link in duplicate
 * mode carries copies that lost the race (dropped unopened too) and its peer's PINGs come late,
 * and a 64 KiB record on a slow link takes seconds to arrive.
 */
export const UNAUTHENTICATED_LIFE_DEAD_INTERVALS = 4;
/** A link's path round trip is the least of this many recent PING samples (Link.pathRttMs). */
export const PATH_RTT_SAMPLES = 4;
/** A link is stalled when its oldest unacknowledged striped data is older than max(this, 2 x ack time + 20 ms). */
export const STALL_MIN_MS = 150;
/** A paced link whose socket sends nothing looks again at most this much later (waitUnsent). */
export const UNSENT_WAIT_MAX_MS = 20;
/** Delivery rate assumed before ACKs measured one: bytes per ms (100 Mbit/s). */
const DEFAULT_RATE = 12_500;
/** Delivery rate samples span at least this; the rate is the largest sample of the last one or two RATE_EPOCH_MS. */
const RATE_SAMPLE_MS = 50;
/**
 * A sample counts only if this much was unacknowledged when it began: a link
 * that carried only a trickle (keepalives, small packets sent on every link)
 * says nothing about what it can carry, and must not look slow.
 */
const RATE_BUSY_BYTES = 32 * 1024;
const RATE_EPOCH_MS = 1000;

/** What a queued striped item gives back: its plaintext if it has one (keyed), else its frames. */
function reclaimed(q: Queued): Reclaimed {
  return q.plain === undefined ? { buf: q.buf, packets: q.packets, plain: false } : { buf: q.plain, packets: q.packets, plain: true };
}

export class Link {
  state: LinkState = 'handshaking';
  /** Counters of this link id; the session hands the same object to every reconnection. */
  stats = new LinkStats();
  /** Smoothed round-trip time from PING/PONG, ms; NaN until measured. */
  srttMs = NaN;
  /** Lowest PING/PONG round trip of this connection, ms. */
  minRttMs = Infinity;
  /**
   * The path's own round trip, ms: the least of the last PATH_RTT_SAMPLES PINGs' round trips,
   * each less the time to drain our data ahead of it (one late PONG is no new path; a path that
   * got longer shows within a few keepalives). Before the first PONG, what seedPathRtt knew; 0
   * if nothing. The scheduler adds half of it to a link's ETA: a link 150 ms longer than
   * another is no faster for being idle.
   */
  pathRttMs = 0;
  private readonly pathSamples: number[] = [];
  /** Round-trip samples in a row with the smoothed RTT BLOAT_HINT_EXCESS_MS over minRttMs. */
  private bloatSamples = 0;
  /** Our unacknowledged bytes when the last PING left, and whether its round trip was a spike. */
  private pingUnacked = 0;
  private spiking = false;
  /** The last sign of life: any bytes (open mode), a record that authenticated (keyed: recordsSeen set, lifeMs). */
  lastRxMs = performance.now();
  /** When its session took it (attach). */
  upSinceMs = performance.now();
  /** When bytes last came, whatever they were. */
  private lastBytesMs = this.lastRxMs;
  /**
   * Set by an encrypting session: the records this link carried (to prove it alive by a copy that
   * lost the race). While set, bytes are signs of life only shortly after an authenticated record
   * (UNAUTHENTICATED_LIFE_DEAD_INTERVALS).
   */
  recordsSeen: RecordsSeen | undefined;
  private lastProofMs = -Infinity;
  /** Until the peer's next frame, not declared dead before this (awaitReply). */
  private replyDueMs = 0;
  /** Set by an encrypting session: control frames leave sealed (undefined: no keypair, not sent). */
  sealControl: ((frame: Buffer) => Buffer | undefined) | undefined;
  /** Closed because it went silent (rather than by a peer, an error or shutdown). */
  declaredDead = false;
  private lastPingMs = 0;
  /** PINGs we may answer. */
  private readonly pongs = new TokenBucket(PONG_BURST, 1 / PONG_INTERVAL_MS);
  /** A dead verdict waiting for the sockets to be read first (tick). */
  private deadCheck: NodeJS.Immediate | undefined;
  private readonly decoder: FrameDecoder;
  private reader: NativeSocketReader | undefined;
  /** What the native receive path counts for this link while armed (fast-path.ts LinkCounter). */
  private fastCounters: Float64Array | undefined;
  private fastPath: NativeFastPath | undefined;
  /**
   * The native send path's flag for this link (fast-path.ts FastSend): 1 while
   * what is sent now goes straight to the socket (sendsAtOnce, and nothing in
   * Node's writer), so the addon may send on it; kept so by syncSend after
   * every change. With the counters of what it sent here.
   */
  private sendFlags: Uint8Array | undefined;
  private sendSlot = 0;
  private sendCounters: Float64Array | undefined;
  private queue: Queued[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  /** Urgent frames, sent before the queue above when the socket drains. */
  private urgent: Queued[] = [];
  private urgentBytes = 0;
  private writable = true;
  /** This connection's bytes written and read, handshake included (ACK accounting, docs/protocol.md). */
  private bytesOut = 0;
  private bytesIn = 0;
  /** Aggregate and adaptive sessions: acknowledge what is read (set by the session). */
  acking = false;
  /** A frame other than ACK arrived since our last ACK (set by the session): ACKs never answer ACKs. */
  dataToAck = false;
  private ackSent = 0;
  private ackTimer: NodeJS.Timeout | undefined;
  /** When we last sent an ACK (performance.now() ms). */
  private lastAckMs = 0;
  /** Our ACK still waiting in a queue: a newer one takes its place (one ACK says all that any earlier one did). */
  private queuedAck: Queued | undefined;
  /** Our PING still waiting in the queue: no other is queued behind it. */
  private queuedPing: Queued | undefined;
  /** Bytes of control frames waiting in the queue (CONTROL_QUEUE_MAX_BYTES). */
  private controlBytes = 0;
  /** What the peer acknowledged of bytesOut. */
  private ackedOut = 0;
  private retained: Retained[] = [];
  private retainedHead = 0;
  private retainedBytes = 0;
  /** Shared with the session's other links (set when it attaches this link). */
  retainBudget: RetainBudget | undefined;
  /** When ACK progress was last seen (data freed, or ACK_PARTIAL_BYTES more acknowledged), or the link began. */
  private ackProgressMs = performance.now();
  /** ackedOut when progress was last counted (ACK_PARTIAL_BYTES more is progress, however many ACKs it takes). */
  private ackedAtProgress = 0;
  /**
   * Of retainedBytes, what was given back (resent): the session's budget no longer counts it (its copy is
   * counted where it went), the tunnel's still does (this link keeps the buffer until ACK or close).
   */
  private givenBackBytes = 0;
  /** Striped data still queued when the link closed: for the session to send elsewhere. */
  private orphans: Queued[] = [];
  /** Time from writing striped data to its ACK, smoothed (1/8), ms. */
  ackTimeMs = NaN;
  /** NaN: no ACK yet. */
  private rateSampleStart = NaN;
  private rateSampleBytes = 0;
  private rateSampleBusy = false;
  private rateEpochStart = 0;
  private rateCur = 0;
  private ratePrev = 0;
  /** The session handled the current stall (reclaimed its data); cleared when ACKs move again. */
  stallHandled = false;
  private linkId: number;
  private linkName: string;

  constructor(
    readonly socket: Socket,
    readonly opts: LinkOptions,
    public handler: LinkHandler,
    private readonly log: Logger,
  ) {
    this.linkId = opts.id;
    this.linkName = opts.name;
    // Frames after a close in the same chunk go nowhere (a refused stranger's next INITIATIONs
    // would each be checked, answered or counted again).
    this.decoder = new FrameDecoder(opts.maxFrameBytes, (type, buf, start, end) => {
      if (this.state !== 'closed') this.handler.onFrame(this, type, buf, start, end);
    });
    if (!this.readNatively()) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', (e) => {
      this.syncSend();
      this.log.debug('socket error', { link: opts.name, error: errorMessage(e) });
    });
    socket.on('close', () => this.finish('connection closed'));
    socket.on('end', () => this.finish('peer closed the connection'));
  }

  /** The socket is read by the addon into the shared buffer (not by Node's stream reader). */
  get readsNatively(): boolean {
    return this.reader !== undefined;
  }

  /**
   * Takes the socket's reading over from Node: its handle stops reading and is
   * marked as reading, so that Node's stream never starts it again (net.Socket's
   * _read starts a handle only when it is not reading); what Node read already
   * is handled first. Node keeps writing, and closing, the socket. False where
   * it cannot (no addon, no descriptor: a test's in-memory socket).
   */
  private readNatively(): boolean {
    const Reader = nativeReader();
    const handle = (this.socket as unknown as { _handle?: { fd?: number; reading?: boolean; readStop?: () => number } | null })._handle;
    const fd = handle?.fd;
    if (Reader === null || !handle || typeof fd !== 'number' || fd < 0 || typeof handle.readStop !== 'function') return false;
    if (this.socket.connecting || this.socket.destroyed) return false;
    handle.readStop();
    handle.reading = true;
    const buf = (readBuffer ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES));
    let reader: NativeSocketReader;
    try {
      reader = new Reader(
        fd,
        buf,
        (n, start) => {
          this.onData(buf.subarray(start, n));
          // A closed link's decoder took nothing: what it says no longer describes the stream.
          return this.state === 'closed' ? -1 : this.decoder.needBytes;
        },
        (errno, error) => this.onReadEnd(errno, error),
      );
    } catch (e) {
      handle.reading = false;
      this.log.debug('native reader unavailable, using the stream reader', { link: this.opts.name, error: errorMessage(e) });
      return false;
    }
    this.reader = reader;
    this.socket.once('close', () => reader.close());
    for (let c = this.socket.read() as Buffer | null; c !== null; c = this.socket.read() as Buffer | null) this.onData(c);
    return true;
  }

  /** Stops reading the socket (tests: a peer that stops reading), until resumeReading(). */
  pauseReading(): void {
    if (this.reader) this.reader.pause();
    else this.socket.pause();
  }

  resumeReading(): void {
    if (this.reader) this.reader.resume();
    else this.socket.resume();
  }

  /**
   * The native reader's end: 0 the peer closed its side, else the errno of the
   * failed read; with `error`, the addon's own failure (the link closes with it).
   */
  private onReadEnd(errno: number, error?: Error): void {
    if (errno === 0) {
      this.finish('peer closed the connection');
      this.socket.destroy();
      return;
    }
    if (error !== undefined) {
      this.socket.destroy(error);
      this.syncSend();
      return;
    }
    const code = getSystemErrorName(-errno);
    this.socket.destroy(Object.assign(new Error(`read: ${code}`), { code, errno: -errno, syscall: 'read' }));
    this.syncSend();
  }

  /**
   * Whole DATA frames at the start of each read go to the session's native
   * receive path `fast` (core/fast-path.ts); undefined: every byte through
   * the decoder. What the native path counted is folded in (foldFast) when it
   * is taken away.
   */
  armFast(fast: NativeFastPath | undefined): void {
    if (this.reader === undefined) return;
    this.fastPath = fast;
    if (fast === undefined) {
      if (this.fastCounters === undefined) return;
      this.reader.setFast(null);
      this.foldFast();
      this.fastCounters = undefined;
      return;
    }
    this.fastCounters ??= new Float64Array(LINK_COUNTERS);
    this.reader.setFast(fast, this.fastCounters, this.decoder.needBytes, this.decoder.maxBytes);
  }

  /** What the native path counted for this link, into its stats and its signs of life. */
  foldFast(): void {
    const c = this.fastCounters;
    if (c === undefined) return;
    const bytes = c[LinkCounter.rxBytes] as number;
    if (bytes !== 0) {
      const st = this.stats;
      st.rxBytes += bytes;
      this.bytesIn += bytes;
      st.rxFrames += c[LinkCounter.rxFrames] as number;
      st.nativeFrames += c[LinkCounter.rxFrames] as number;
      st.firstCopies += c[LinkCounter.firstCopies] as number;
      st.duplicates += c[LinkCounter.duplicates] as number;
      st.stale += c[LinkCounter.stale] as number;
      st.droppedUnread += c[LinkCounter.droppedUnread] as number;
      c.fill(0, 0, LinkCounter.lastRxHrMs);
    }
    // Also when no frame was whole yet: the reader holds the start of a long one, still coming.
    const hr = c[LinkCounter.lastRxHrMs] as number;
    if (hr === 0) return;
    const t = hrToPerfMs(hr);
    if (t > this.lastBytesMs) this.lastBytesMs = t;
    // Open mode (the only one the native path serves): any bytes are a sign of life.
    if (this.recordsSeen === undefined && t > this.lastRxMs) this.heard(t);
  }

  /** The link id of the protocol; on the server it is known once HELLO arrives. */
  get id(): number {
    return this.linkId;
  }

  get name(): string {
    return this.linkName;
  }

  /** Set by the server's handshake, from HELLO. */
  identify(id: number, name: string): void {
    this.linkId = id;
    this.linkName = name;
  }

  /**
   * The path this connection takes, set by the role (several connections may
   * share one: connections_per_link): the client's configured link, the
   * server's listen address and the client's address. Empty: its own.
   */
  path = '';

  /** The rate in kbit/s the kernel paces this connection's sends at (socket-options.ts paceLink); undefined: not paced. */
  paceKbit: number | undefined;
  /**
   * Paced links (paceLink): what the socket may hold unsent, bytes. Written
   * only while it holds less, at most up to it (whole frames past it go
   * through Node's writer); TCP_NOTSENT_LOWAT alone lets each write fill the
   * kernel's last segment buffer, up to 64 KiB: 58 ms at 9 Mbit/s that a
   * ping behind it waited. Undefined: not paced, the socket takes what it takes.
   */
  unsentCap: number | undefined;
  /** Set while writes wait for the paced socket's unsent data to fall below unsentCap. */
  private unsentTimer: NodeJS.Timeout | undefined;
  /** The socket's unsent bytes at the last look that found no room (-1: room since). */
  private lastUnsent = -1;
  /** How long that look waited. */
  private unsentWaitMs = 0;

  get pathKey(): string {
    return this.path === '' ? `#${this.linkId}` : this.path;
  }

  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  get local(): string {
    return `${this.socket.localAddress}:${this.socket.localPort}`;
  }

  /** Until a link is authenticated it only takes handshake-sized frames. */
  setMaxFrameBytes(n: number): void {
    this.decoder.setMaxFrameBytes(n);
    // The native path refuses what the decoder refuses: it is told the new limit.
    if (this.fastPath !== undefined) this.armFast(this.fastPath);
  }

  /** Bytes waiting in our queue, not yet given to the socket. */
  get queueBytes(): number {
    return this.queuedBytes + this.urgentBytes;
  }

  /**
   * A batch of DATA frames, `packets` of them, shared by all links: never
   * modified. `urgent` (frames of sparse flows, core/flows.ts): it waits
   * ahead of queued bulk data, within the bounds above. `slackBytes`: how
   * far past queue_max_bytes it may fill the queue, for striped data already
   * numbered, the only copy: RETAIN_MAX_BYTES (what one link holds
   * unacknowledged) for another link's give-back (session.resend), so that
   * it fits behind fresh data; ADMITTED_SLACK_BYTES for fresh data this link
   * was chosen for before it was numbered (Session.stripeLinkFor), which the
   * rest of its TUN batch may have crowded; only beyond that is it dropped
   * as queue_full, and memory stays bounded. True if the link took it (sent
   * or queued), false if it was dropped (counted here when for a full queue).
   */
  sendData(buf: Buffer, packets: number, nowMs: number, urgent = false, striped = false, release?: () => void, slackBytes = 0, plain?: Buffer): boolean {
    if (this.state !== 'up') {
      release?.();
      return false;
    }
    if (this.sendsAtOnce()) {
      this.requeue(this.write(buf, packets, striped, nowMs, undefined, release, plain), urgent);
    } else if (urgent && this.urgentFits(buf.length)) {
      this.urgent.push({ buf, t: nowMs, packets, striped, release, plain });
      this.urgentBytes += buf.length;
      if (this.queuedBytes > 0) this.stats.urgentPassed += packets;
    } else if (this.queuedBytes + buf.length > this.opts.queueMaxBytes + slackBytes) {
      this.stats.drops.queue_full += packets;
      release?.();
      return false;
    } else {
      this.queue.push({ buf, t: nowMs, packets, striped, release, plain });
      this.queuedBytes += buf.length;
    }
    this.syncSend();
    return true;
  }

  /**
   * Whether sendData would take `bytes` of fresh data now: the same tests, in
   * the same order (sent at once, the urgent lane, room in the queue).
   */
  hasRoom(bytes: number, urgent: boolean): boolean {
    return this.state === 'up' && (this.sendsAtOnce() || (urgent && this.urgentFits(bytes)) || this.queuedBytes + bytes <= this.opts.queueMaxBytes);
  }

  /** Nothing waits ahead, and the socket takes writes: what is sent now goes straight to it. */
  private sendsAtOnce(): boolean {
    return this.writable && this.queuedBytes === 0 && this.urgentBytes === 0;
  }

  /** `bytes` more fit the urgent lane (its bytes, and the records it may pass). */
  private urgentFits(bytes: number): boolean {
    return this.urgentBytes + bytes <= URGENT_QUEUE_MAX_BYTES && this.queue.length - this.queueHead < URGENT_MAX_PASSED_RECORDS;
  }

  /**
   * Frames shared with the other links (duplicate mode): sent straight to the
   * kernel when nothing waits ahead of them, without a copy when it takes
   * them all; otherwise as sendData, from a copy.
   */
  send(frames: OutFrames, packets: number, nowMs: number, urgent = false): void {
    if (this.state !== 'up') return;
    if (this.sendsAtOnce()) this.requeue(this.write(frames.view, packets, false, nowMs, frames), urgent);
    else {
      const kept = frames.keep();
      this.sendData(kept.buf, packets, nowMs, urgent, false, kept.release);
    }
  }

  /**
   * One non-blocking send(2) on the socket, past Node's stream writer, when
   * that writer holds nothing (order is kept): bytes the kernel took, 0 if
   * none or not tried, -1 if the send failed (the socket is then destroyed
   * with that error, and the link closes).
   */
  private sendDirect(buf: Buffer): number {
    const send = addonFn('sendSome');
    // Looked up each time: a destroyed socket has no handle, and its descriptor number may be another's by now.
    const fd = socketFd(this.socket);
    if (send === null || fd === undefined || this.socket.destroyed || this.socket.writableLength > 0) return 0;
    return this.sentNatively(send(fd, buf));
  }

  /** What one send(2) did (bytes taken, or -errno): counted; a failure destroys the socket, with that error as the reason. */
  private sentNatively(n: number): number {
    if (n >= 0) {
      this.stats.directBytes += n;
      return n;
    }
    // send(2) reported (and so cleared) the socket's error: the socket is done.
    const code = getSystemErrorName(n);
    this.socket.destroy(Object.assign(new Error(`send: ${code}`), { code, errno: n, syscall: 'send' }));
    return -1;
  }

  /**
   * The native send path's (fast-path.ts FastSend): `flags[slot]` says
   * whether it may send on this link, `counters` (tx packets, tx bytes) what
   * it sent. undefined: it no longer sends here (what it counted is folded).
   */
  bindSend(flags: Uint8Array | undefined, slot = 0, counters?: Float64Array): void {
    this.foldSend();
    this.sendFlags = flags;
    this.sendSlot = slot;
    this.sendCounters = counters;
    this.syncSend();
  }

  /** The native reader of this link's socket (the send path sends on its descriptor), if it has one. */
  get nativeReader(): NativeSocketReader | undefined {
    return this.reader;
  }

  /**
   * The native send path may send on this link exactly while sendsAtOnce holds
   * and Node's writer holds nothing: a byte sent past what either holds would
   * land in the middle of the stream. Called after everything that changes one of them.
   */
  private syncSend(): void {
    const flags = this.sendFlags;
    if (flags === undefined) return;
    const s = this.socket;
    flags[this.sendSlot] =
      this.state === 'up' && this.sendsAtOnce() && this.unsentCap === undefined && !s.destroyed && !s.writableEnded && s.writableLength === 0 && this.reader !== undefined ? 1 : 0;
  }

  /** What the native send path sent on this link, into its stats. */
  foldSend(): void {
    const c = this.sendCounters;
    if (c === undefined || c[0] === 0) return;
    const bytes = c[1] as number;
    this.stats.txPackets += c[0] as number;
    this.stats.nativeSentFrames += c[0] as number;
    this.stats.txBytes += bytes;
    this.stats.directBytes += bytes;
    this.bytesOut += bytes;
    c[0] = 0;
    c[1] = 0;
  }

  /**
   * The native send path sent `frames` (`packets` of them; it sends one at a
   * time) on this link and the socket took only `sent` bytes (0: none;
   * negative: send(2) failed, -errno): what is left goes as write() sends
   * what the kernel did not take, ahead of anything else. `frames` is ours.
   */
  sendRest(frames: Buffer, sent: number, packets: number, nowMs: number): void {
    if (this.state !== 'up') return;
    this.foldSend();
    this.requeue(this.write(frames, packets, false, nowMs, undefined, undefined, undefined, sent), false);
  }

  /**
   * The path's round trip until the first PONG measures it: the larger of `knownMs` (the last
   * connection of this link id: a new connection usually takes the same path) and the kernel's
   * round trip of this TCP connection (from its SYN exchange and our handshake's segments; a
   * proxy on the path hides what lies beyond it). Without it a link that comes up over a long
   * path looks like the nearest for its first round trip, and the striping scheduler sends it
   * what the peer then waits for, holding up everything after it. The larger: too long a guess
   * only sends this link less for a round trip.
   */
  seedPathRtt(knownMs: number): void {
    if (this.pathSamples.length > 0) return;
    let ms = Number.isFinite(knownMs) && knownMs > 0 ? knownMs : 0;
    const rtt = addonFn('tcpRttMicros');
    const fd = socketFd(this.socket);
    if (rtt !== null && fd !== undefined && !this.socket.destroyed) {
      const us = rtt(fd);
      if (us > 0 && us / 1000 > ms) ms = us / 1000;
    }
    this.pathRttMs = ms;
    this.stats.pathRttMs = ms;
  }

  /** Bytes on their way on this link: written and not acknowledged, plus our queue (aggregate scheduling). */
  get unackedBytes(): number {
    return this.bytesOut - this.ackedOut + this.queuedBytes + this.urgentBytes;
  }

  /** Bytes per ms the peer acknowledged lately (the largest recent sample); a default before any. */
  get deliveryRate(): number {
    const r = Math.max(this.rateCur, this.ratePrev);
    return r > 0 ? r : DEFAULT_RATE;
  }

  /** Expected ms until `bytes` more sent now would be through (the scheduler's measure): the path's one-way delay, and the time to drain what is ahead. */
  eta(bytes: number): number {
    return this.pathRttMs / 2 + (this.unackedBytes + bytes) / this.deliveryRate;
  }

  /** Bytes of this connection the peer has acknowledged. */
  get ackedBytes(): number {
    return this.ackedOut;
  }

  /** Takes more striped data (it keeps what it sent until acknowledged, within a bound). */
  get canRetain(): boolean {
    return this.retainedBytes < RETAIN_MAX_BYTES && (this.retainBudget === undefined || !this.retainBudget.full);
  }

  /**
   * The path got slower than usual: the last PING's round trip was above
   * twice what the minimum plus the time to drain our own data ahead of it
   * would give, plus 20 ms (waiting behind our own data is no sign).
   */
  rttSpike(): boolean {
    return this.spiking;
  }

  /**
   * How long striped data has waited for an ACK with none covering new bytes
   * meanwhile: since the later of the last ACK progress and the oldest data
   * still unacknowledged (written, or queued); 0 when none waits.
   */
  private unacknowledgedFor(nowMs: number): number {
    let oldest = Infinity;
    if (this.retainedHead < this.retained.length) oldest = (this.retained[this.retainedHead] as Retained).t;
    for (const q of [this.urgent[0], this.queue[this.queueHead]]) if (q !== undefined && q.striped && q.t < oldest) oldest = q.t;
    if (oldest === Infinity) return 0;
    return nowMs - Math.max(oldest, this.ackProgressMs);
  }

  /** Striped data waits unacknowledged for longer than a stall allows. */
  stalled(nowMs: number): boolean {
    if (this.retainedHead >= this.retained.length) return false;
    const head = this.retained[this.retainedHead] as Retained;
    const limit = Number.isNaN(this.ackTimeMs) ? STALL_MIN_MS : Math.max(STALL_MIN_MS, 2 * this.ackTimeMs + 20);
    return nowMs - head.t > limit;
  }

  /**
   * Gives back the striped data this link has not got through: what is
   * written but unacknowledged (not given back before) and what still waits
   * in its queues (removed from them), and after a close what was queued.
   */
  reclaim(): Reclaimed[] {
    const out: Reclaimed[] = [];
    for (let i = this.retainedHead; i < this.retained.length; i++) {
      const r = this.retained[i] as Retained;
      if (r.resent) continue;
      r.resent = true;
      // The session counts its copy where it goes; the tunnel's budget (memory) keeps counting it
      // here too, until acknowledged or closed: this link keeps the buffer until then.
      this.givenBackBytes += r.buf.length;
      this.retainBudget?.add(-r.buf.length, false);
      out.push({ buf: r.buf, packets: r.packets, plain: r.plain, end: r.end });
    }
    const keep = (items: Queued[], from: number): Queued[] => {
      const kept: Queued[] = [];
      for (let i = from; i < items.length; i++) {
        const q = items[i] as Queued;
        if (q.striped) out.push(reclaimed(q));
        else kept.push(q);
      }
      return kept;
    };
    if (this.urgentBytes > 0) {
      this.urgent = keep(this.urgent, 0);
      this.urgentBytes = this.urgent.reduce((n, q) => n + q.buf.length, 0);
    }
    if (this.queuedBytes > 0) {
      this.queue = keep(this.queue, this.queueHead);
      this.queueHead = 0;
      this.queuedBytes = this.queue.reduce((n, q) => n + q.buf.length, 0);
    }
    for (const q of this.orphans) out.push(reclaimed(q));
    this.orphans = [];
    for (const r of out) this.stats.reclaimed += r.packets;
    return out;
  }

  /** The peer has read `bytes` of this connection: what it covers is through. */
  onAck(bytes: number, nowMs: number): void {
    this.foldSend(); // bytesOut: what the native send path sent counts
    if (bytes > this.bytesOut) throw new ProtocolError(`ACK of ${bytes} bytes: only ${this.bytesOut} sent`);
    // An older ACK overtaken by a newer one (the newer took the urgent lane): nothing new.
    if (bytes <= this.ackedOut) return;
    const delta = bytes - this.ackedOut;
    this.ackedOut = bytes;
    if (Number.isNaN(this.rateSampleStart)) {
      this.rateSampleStart = nowMs;
      this.rateEpochStart = nowMs;
      this.rateSampleBusy = this.bytesOut - bytes >= RATE_BUSY_BYTES;
    } else {
      this.rateSampleBytes += delta;
      const span = nowMs - this.rateSampleStart;
      if (span >= RATE_SAMPLE_MS) {
        if (nowMs - this.rateEpochStart >= RATE_EPOCH_MS) {
          this.ratePrev = this.rateCur;
          this.rateCur = 0;
          this.rateEpochStart = nowMs;
        }
        const sample = this.rateSampleBytes / span;
        if (this.rateSampleBusy && sample > this.rateCur) this.rateCur = sample;
        this.rateSampleStart = nowMs;
        this.rateSampleBytes = 0;
        this.rateSampleBusy = this.bytesOut - bytes >= RATE_BUSY_BYTES;
      }
    }
    const list = this.retained;
    let t = NaN;
    let freed = 0;
    let givenBack = 0;
    while (this.retainedHead < list.length && (list[this.retainedHead] as Retained).end <= bytes) {
      const r = list[this.retainedHead++] as Retained;
      if (r.resent) givenBack += r.buf.length;
      else freed += r.buf.length;
      t = r.t;
    }
    this.retainedBytes -= freed + givenBack;
    this.givenBackBytes -= givenBack;
    this.retainBudget?.add(-freed);
    this.retainBudget?.addToParent(-givenBack);
    freed += givenBack;
    // Progress, for the ACK timeout: data freed, or a frame still arriving read on by 1 KiB or more
    // (a peer acknowledging a byte at a time to keep the link would keep nothing freed).
    if (freed > 0 || bytes - this.ackedAtProgress >= ACK_PARTIAL_BYTES) {
      this.ackProgressMs = nowMs;
      this.ackedAtProgress = bytes;
    }
    if (!Number.isNaN(t)) {
      const sample = nowMs - t;
      this.ackTimeMs = Number.isNaN(this.ackTimeMs) ? sample : this.ackTimeMs + (sample - this.ackTimeMs) / 8;
      if (this.retainedHead === list.length) {
        this.retained = [];
        this.retainedHead = 0;
      } else if (this.retainedHead > 1024) {
        this.retained = list.slice(this.retainedHead);
        this.retainedHead = 0;
      }
    }
  }

  private sendAck(): void {
    if (this.ackTimer !== undefined) {
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
    if (this.state !== 'up' || this.bytesIn === this.ackSent) return;
    const ack = encodeAck(this.linkId, this.bytesIn);
    const frame = this.sealControl ? this.sealControl(ack) : ack;
    // No keypair can seal it (until a handshake makes one): still owed, it goes with the next data's ACK.
    if (frame === undefined) return;
    this.ackSent = this.bytesIn;
    this.lastAckMs = performance.now();
    this.dataToAck = false;
    const waiting = this.queuedAck;
    if (waiting !== undefined && waiting.buf.length === frame.length) {
      // Not sent yet: the newer count goes in its place (a peer that sends and never reads must not grow the queue).
      waiting.buf = frame;
      return;
    }
    // Ahead of our bulk data, as a ping's packets: an ACK late is a false stall at the peer.
    if (this.sendsAtOnce()) this.requeue(this.write(frame, 0, false, 0), false);
    else if (this.urgentFits(frame.length)) {
      this.urgent.push((this.queuedAck = { buf: frame, t: Infinity, packets: 0, striped: false }));
      this.urgentBytes += frame.length;
    } else {
      this.queue.push((this.queuedAck = { buf: frame, t: Infinity, packets: 0, striped: false }));
      this.queuedBytes += frame.length;
    }
    this.syncSend();
  }

  /** Control frames are never dropped: they are small and carry the link's health. Returns the frame if it waits in the queue. */
  sendControl(frame: Buffer): Queued | undefined {
    if (this.state === 'closed') return undefined;
    const buf = this.sealControl ? this.sealControl(frame) : frame;
    return buf === undefined ? undefined : this.sendClear(buf);
  }

  /**
   * A handshake frame in clear on an up link (a rekey), in order with what is
   * queued. Returns it if it waits in the queue. A peer that lets
   * CONTROL_QUEUE_MAX_BYTES of them pile up does not read: the link is closed.
   */
  sendClear(frame: Buffer): Queued | undefined {
    if (this.state === 'closed') return undefined;
    if (this.sendsAtOnce()) {
      this.requeue(this.write(frame, 0, false, 0), false);
      return undefined;
    }
    if (this.controlBytes + frame.length > CONTROL_QUEUE_MAX_BYTES) {
      this.close(CloseCode.Shutdown, `the peer does not read: ${this.controlBytes} bytes of control frames wait to be sent`);
      return undefined;
    }
    const item: Queued = { buf: frame, t: Infinity, packets: 0, striped: false, control: true };
    this.queue.push(item);
    this.queuedBytes += frame.length;
    this.controlBytes += frame.length;
    this.syncSend();
    return item;
  }

  /**
   * The peer's next frame may take up to `ms` (a round trip after our handshake
   * answer): until it comes, silence shorter than that is not death. Without it,
   * an open-mode server closed every link whose round trip exceeded dead_interval_ms
   * just after admitting it: its last frame heard was the HELLO.
   */
  awaitReply(ms: number): void {
    this.replyDueMs = performance.now() + ms;
  }

  /** A record from the peer authenticated on this link: a sign of life (keyed; in open mode any bytes). */
  heard(nowMs: number): void {
    this.lastRxMs = nowMs;
    this.replyDueMs = 0;
  }

  /**
   * Keyed: whether the next record, if dropped as a duplicate, should be decrypted to prove the
   * link alive — when nothing authenticated came for half a keepalive interval, at most that often
   * (a slow link's PINGs wait behind copies that all lose the race to a faster link).
   */
  wantsLifeProof(nowMs: number): boolean {
    const half = this.opts.keepaliveIntervalMs / 2;
    if (this.recordsSeen === undefined || nowMs - this.lastRxMs < half || nowMs - this.lastProofMs < half) return false;
    this.lastProofMs = nowMs;
    return true;
  }

  /** The last sign of life; keyed, bytes count within UNAUTHENTICATED_LIFE_DEAD_INTERVALS of the last authenticated record. */
  private lifeMs(): number {
    if (this.recordsSeen === undefined || this.lastBytesMs <= this.lastRxMs) return this.lastRxMs;
    const credit = (UNAUTHENTICATED_LIFE_DEAD_INTERVALS - 1) * Math.max(this.opts.deadIntervalMs, this.srttMs || 0);
    return Math.min(this.lastBytesMs, this.lastRxMs + credit);
  }

  /** Keepalive and liveness; the session calls it from its timer. */
  tick(nowMs: number): void {
    if (this.state !== 'up') return;
    this.foldFast();
    if (nowMs - this.lifeMs() > this.opts.deadIntervalMs && nowMs > this.replyDueMs) {
      // Timers run before the loop polls its sockets: on a busy process what the peer sent
      // may be waiting unread. Look again after this turn's poll phase has read it.
      if (this.deadCheck) return;
      this.deadCheck = setImmediate(() => {
        this.deadCheck = undefined;
        this.foldFast();
        const silent = performance.now() - this.lifeMs();
        if (this.state !== 'up' || silent <= this.opts.deadIntervalMs || performance.now() <= this.replyDueMs) return;
        this.declaredDead = true;
        this.close(CloseCode.Shutdown, `dead: nothing heard for ${Math.round(silent)} ms`);
      });
      return;
    }
    if (this.acking && this.unacknowledgedFor(nowMs) > ACK_TIMEOUT_DEAD_INTERVALS * Math.max(this.opts.deadIntervalMs, this.srttMs || 0)) {
      this.declaredDead = true;
      this.close(
        CloseCode.Shutdown,
        `dead: no acknowledgement for ${Math.round(this.unacknowledgedFor(nowMs))} ms of ${this.bytesOut - this.ackedOut + this.queuedBytes + this.urgentBytes} bytes sent or queued`,
      );
      return;
    }
    // One PING waits at a time: the one queued will measure the wait anyway.
    if (nowMs - this.lastPingMs >= this.opts.keepaliveIntervalMs && this.queuedPing === undefined) {
      this.lastPingMs = nowMs;
      this.pingUnacked = this.unackedBytes;
      this.queuedPing = this.sendControl(encodeToken(FrameType.Ping, Math.round(nowMs * 1000)));
    }
  }

  /** Answers PING and measures PONG; any other frame type is not ours. */
  handleKeepalive(type: FrameType, buf: Buffer, start: number): boolean {
    if (type === FrameType.Ping) {
      // A PONG is only a round-trip sample: past the queue's bound (a peer that sends and does
      // not read) it is not worth memory, and control frames are never dropped once queued.
      // Nor past PONG_BURST beyond one per PONG_INTERVAL_MS: a flood, or PINGs bunched behind a stall.
      if (this.queueBytes >= this.opts.queueMaxBytes) this.stats.pongsDropped++;
      else if (!this.pongs.take(1, performance.now())) this.stats.pingsOverRate++;
      else this.sendControl(encodeToken(FrameType.Pong, readU64(buf, start)));
      return true;
    }
    if (type === FrameType.Pong) {
      const sample = performance.now() - readU64(buf, start) / 1000;
      if (sample >= 0 && sample < 600_000) {
        this.srttMs = Number.isNaN(this.srttMs) ? sample : this.srttMs * 0.875 + sample * 0.125;
        // Our own data ahead of the PING explains part of its wait: only the rest is the path's.
        const drain = this.pingUnacked / this.deliveryRate;
        this.spiking = sample > 2 * (this.minRttMs + drain) + 20;
        if (sample < this.minRttMs) this.minRttMs = sample;
        const samples = this.pathSamples;
        if (samples.length === PATH_RTT_SAMPLES) samples.shift();
        samples.push(Math.max(this.minRttMs, sample - drain));
        this.pathRttMs = Math.min(...samples);
        this.stats.pathRttMs = this.pathRttMs;
        this.checkBloat();
      }
      return true;
    }
    return false;
  }

  /** After a round-trip sample: the hint to pace this link, if its path keeps a standing queue (BLOAT_HINT_EXCESS_MS). */
  private checkBloat(): void {
    if (this.paceKbit !== undefined || bloatHinted.has(this.linkName)) return;
    if (!(this.srttMs > this.minRttMs + BLOAT_HINT_EXCESS_MS)) {
      this.bloatSamples = 0;
      return;
    }
    if (++this.bloatSamples < BLOAT_HINT_SAMPLES) return;
    bloatHinted.add(this.linkName);
    this.log.warn(
      "the link's round trip stays far above its idle one: a buffer on its path fills (a modem's or the link socket's), and every packet waits in it; pace the link at about 90 % of its rate each way (upload_mbit and download_mbit in the client's config, see README, WAN links)",
      { link: this.linkName, idle_rtt_ms: Math.round(this.minRttMs * 10) / 10, rtt_ms: Math.round(this.srttMs * 10) / 10 },
    );
  }

  /** Says why in a CLOSE frame (if the socket still takes one), then closes. Idempotent. */
  close(code: CloseCode, reason: string): void {
    if (this.state === 'closed') return;
    this.dropQueue();
    if (!this.socket.destroyed && this.socket.writable) {
      const frame = encodeClose(code, reason, this.linkId);
      const out = this.sealControl ? this.sealControl(frame) : frame;
      if (out === undefined) this.socket.end();
      else this.socket.end(out);
      setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
    } else {
      this.socket.destroy();
    }
    this.finish(reason);
  }

  destroy(reason: string): void {
    this.socket.destroy();
    this.finish(reason);
  }

  private finish(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.syncSend();
    // Nothing more is delivered from this connection, by either path.
    this.armFast(undefined);
    this.dropQueue();
    if (this.ackTimer !== undefined) clearTimeout(this.ackTimer);
    if (this.unsentTimer !== undefined) clearTimeout(this.unsentTimer);
    this.handler.onClose(this, reason);
    // What it retained is no longer its to keep: the session's reclaim (in onClose, or by a
    // replacing connection just after) sends it on the others, which count it if they keep it.
    this.retainBudget?.add(-(this.retainedBytes - this.givenBackBytes));
    this.retainBudget?.addToParent(-this.givenBackBytes);
    this.retainBudget = undefined;
    this.retainedBytes = 0;
    this.givenBackBytes = 0;
  }

  /** The session is gone: striped data that never left this link is lost with it, counted as the copies were. */
  dropOrphans(): void {
    for (const q of this.orphans) this.stats.drops.link_closed += q.packets;
    this.orphans = [];
  }

  private dropQueue(): void {
    // Striped data exists on this link only: the session sends it on the others (reclaim).
    for (const q of this.urgent) {
      if (q.striped) this.orphans.push(q);
      else this.stats.drops.link_closed += q.packets;
      q.release?.();
    }
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const q = this.queue[i] as Queued;
      if (q.striped) this.orphans.push(q);
      else this.stats.drops.link_closed += q.packets;
      q.release?.();
    }
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    this.urgent = [];
    this.urgentBytes = 0;
    this.queuedAck = undefined;
    this.queuedPing = undefined;
    this.controlBytes = 0;
  }

  /**
   * Directly if the kernel takes it. Of what it does not take at once, the
   * frame it stopped in goes to the stream writer (its bytes must come next
   * on the wire); the whole frames after that come back, to wait in our
   * queue again: there urgent frames still pass them and age drops them, where
   * in the stream writer they would hold everything up for as long as the
   * link needs to carry them (a batch of MBs on a link of a few Mbit/s).
   * Striped data is cut finely already and goes whole. `buf` is ours to keep,
   * unless it is the view of `shared`: the rest is then pinned or copied
   * (OutFrames.rest). `release` (a queued view of a pinned batch) runs once
   * the bytes are written or lost.
   */
  private write(buf: Buffer, packets: number, striped: boolean, nowMs: number, shared?: OutFrames, release?: () => void, plain?: Buffer, alreadySent?: number): Queued | undefined {
    const tail = this.writeOut(buf, packets, striped, nowMs, shared, release, plain, alreadySent);
    this.syncSend();
    return tail;
  }

  /** write(); `alreadySent`: the native send path sent that much of `buf` already, or failed with -errno. */
  private writeOut(buf: Buffer, packets: number, striped: boolean, nowMs: number, shared?: OutFrames, release?: () => void, plain?: Buffer, alreadySent?: number): Queued | undefined {
    let limit = buf.length;
    if (this.unsentCap !== undefined && alreadySent === undefined) {
      const room = this.unsentRoom(this.unsentCap);
      if (room <= 0) {
        // Nothing leaves now: the whole of it waits at the head of our queue (a copy if it is shared).
        this.waitUnsent(this.unsentCap - room);
        const kept = shared === undefined ? { buf, release } : shared.keep();
        return { buf: kept.buf, t: packets > 0 ? nowMs : Infinity, packets, striped, release: kept.release, plain };
      }
      if (room < limit) limit = room;
      this.lastUnsent = -1;
    }
    this.stats.txPackets += packets;
    this.stats.txBytes += buf.length;
    this.bytesOut += buf.length;
    if (striped) {
      // Keyed: the plaintext is what is kept (it is sealed again if it must go elsewhere).
      const kept = plain ?? buf;
      this.retained.push({ end: this.bytesOut, buf: kept, packets, t: nowMs, resent: false, plain: plain !== undefined });
      this.retainedBytes += kept.length;
      this.retainBudget?.add(kept.length);
    }
    const sent = alreadySent === undefined ? this.sendDirect(limit < buf.length ? buf.subarray(0, limit) : buf) : this.sentNatively(alreadySent);
    if (sent === buf.length || sent < 0) {
      if (sent < 0 && !striped) {
        // The socket failed (and is being destroyed): these copies are lost on this link. Striped
        // data stays retained, and the session sends it on the others.
        this.stats.txPackets -= packets;
        this.stats.drops.link_closed += packets;
      }
      release?.();
      return undefined;
    }
    const rest = shared === undefined ? { buf: sent > 0 ? buf.subarray(sent) : buf, release } : shared.rest(sent);
    const cut = striped ? { end: buf.length, following: 0 } : frameAfter(buf, sent);
    if (cut.end >= buf.length) {
      // The callback runs once the kernel has the bytes, or with an error if the socket goes first.
      if (!this.socket.write(rest.buf, rest.release)) this.writable = false;
      return undefined;
    }
    const tailBytes = buf.length - cut.end;
    const tailPackets = Math.min(packets, cut.following);
    this.stats.txPackets -= tailPackets;
    this.stats.txBytes -= tailBytes;
    this.bytesOut -= tailBytes;
    let holders = 2;
    const done = rest.release === undefined ? undefined : () => --holders === 0 && rest.release?.();
    // Not writable until the writer has sent this frame: Node emits 'drain' only after a write it
    // refused, so its callback resumes the queue.
    this.writable = false;
    this.socket.write(rest.buf.subarray(0, cut.end - sent), (err?: Error | null) => {
      done?.();
      if (!err && this.state !== 'closed' && !this.writable && this.socket.writableLength === 0) this.onDrain();
    });
    // Control frames (no packets) are never dropped by age.
    return { buf: rest.buf.subarray(cut.end - sent), t: tailPackets > 0 ? nowMs : Infinity, packets: tailPackets, striped: false, release: done };
  }

  /**
   * How many more bytes the paced socket may take now (unsentCap less what it
   * holds unsent; at most 0); Infinity if that cannot be known.
   */
  private unsentRoom(cap: number): number {
    const unsent = addonFn('unsentBytes');
    const fd = socketFd(this.socket);
    if (unsent === null || fd === undefined) return Infinity;
    const n = unsent(fd);
    return n < 0 ? Infinity : cap - n;
  }

  /**
   * `unsent` bytes wait in the paced socket: resume writing once half the cap
   * is left, at the link's rate. When nothing left since the last look (a
   * peer that does not read, a stalled path) each look waits twice as long,
   * up to UNSENT_WAIT_MAX_MS, rather than polling the socket hundreds of
   * times a second; the first write that finds room starts over.
   */
  private waitUnsent(unsent: number): void {
    this.writable = false;
    this.syncSend();
    if (this.unsentTimer !== undefined) return;
    const cap = this.unsentCap ?? 0;
    const bytesPerMs = (this.paceKbit ?? 8) / 8; // kbit/s is bits per ms
    let ms = Math.min(100, Math.max(1, (unsent - cap / 2) / bytesPerMs));
    if (this.lastUnsent >= 0 && unsent >= this.lastUnsent) ms = Math.max(ms, Math.min(UNSENT_WAIT_MAX_MS, this.unsentWaitMs * 2));
    this.lastUnsent = unsent;
    this.unsentWaitMs = ms;
    this.unsentTimer = setTimeout(() => {
      this.unsentTimer = undefined;
      if (this.state === 'closed' || this.writable) return;
      if (this.socket.writableLength === 0) {
        this.onDrain();
        return;
      }
      // Node's writer still holds bytes (the rest of a frame a write cut): only a write it refused
      // emits 'drain', so nothing else may resume the queue. Look again shortly.
      this.waitUnsent(cap);
    }, ms);
  }

  /** Whole frames a partial write left (see write), back in our queue ahead of what waits there. */
  private requeue(tail: Queued | undefined, urgent: boolean): void {
    if (tail === undefined) return;
    if (urgent) {
      this.urgent.unshift(tail);
      this.urgentBytes += tail.buf.length;
      this.syncSend();
      return;
    }
    if (this.queueHead > 0) this.queue[--this.queueHead] = tail;
    else this.queue.unshift(tail);
    this.queuedBytes += tail.buf.length;
    this.syncSend();
  }

  private onDrain(): void {
    this.writable = true;
    const now = performance.now();
    if (this.urgentBytes > 0) {
      let i = 0;
      const urgent = this.urgent;
      while (this.writable && i < urgent.length) {
        const item = urgent[i++] as Queued;
        this.urgentBytes -= item.buf.length;
        if (item === this.queuedAck) this.queuedAck = undefined;
        if (now - item.t > this.opts.queueMaxAgeMs && !item.striped) {
          this.stats.drops.queue_age += item.packets;
          item.release?.();
        } else {
          const tail = this.write(item.buf, item.packets, item.striped, now, undefined, item.release, item.plain);
          this.leftQueue(item, tail, now);
          if (tail !== undefined) {
            tail.t = item.t; // its age runs on from when the whole was queued
            urgent[--i] = tail;
            this.urgentBytes += tail.buf.length;
          }
        }
      }
      this.urgent = i === urgent.length ? [] : urgent.slice(i);
    }
    while (this.writable && this.queueHead < this.queue.length) {
      const item = this.queue[this.queueHead++] as Queued;
      this.queuedBytes -= item.buf.length;
      if (item === this.queuedAck) this.queuedAck = undefined;
      if (item.control) {
        this.controlBytes -= item.buf.length;
        if (item === this.queuedPing) this.queuedPing = undefined;
      }
      // Striped data is on this link only: late, it still goes (the peer's reorder buffer waits for it).
      if (now - item.t > this.opts.queueMaxAgeMs && !item.striped) {
        // The other links carried these long ago; sending them now only delays fresh data.
        this.stats.drops.queue_age += item.packets;
        item.release?.();
        continue;
      }
      const tail = this.write(item.buf, item.packets, item.striped, now, undefined, item.release, item.plain);
      this.leftQueue(item, tail, now);
      if (tail !== undefined) tail.t = item.t;
      this.requeue(tail, false);
    }
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 1024) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    this.syncSend();
  }

  /** `item` was handed to write(), which gave back `tail`: if any of its data left, its wait is a queue delay sample. */
  private leftQueue(item: Queued, tail: Queued | undefined, now: number): void {
    // A paced socket at its bound takes nothing: write() gives the very buffer back.
    if (item.packets > 0 && tail?.buf !== item.buf) this.queued(now - item.t);
  }

  /** Data that waited `ms` in our queue is leaving. */
  private queued(ms: number): void {
    const st = this.stats;
    st.queueDelayMs += (ms - st.queueDelayMs) / 8;
    if (ms > st.queueDelayMaxMs) st.queueDelayMaxMs = ms;
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastBytesMs = performance.now();
    if (this.recordsSeen === undefined) this.heard(this.lastBytesMs);
    this.stats.rxBytes += chunk.length;
    this.bytesIn += chunk.length;
    try {
      this.decoder.push(chunk);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      // The decoder goes on checking the chunk's frames after a frame closed the link (a refused
      // handshake): what follows is not another reason to close it.
      if ((this.state as LinkState) !== 'closed') {
        // Before a handshake this is a stranger's garbage: a flood of it must not flood the log.
        this.log[this.state === 'up' ? 'warn' : 'debug']('closing link: protocol error', { link: this.name, remote: this.remote, reason: e.message });
        if (this.handler.onProtocolError !== undefined) this.handler.onProtocolError(this, e);
        else this.close(CloseCode.ProtocolError, e.message);
      }
    }
    // What this chunk delivered goes on now, even if the link closed meanwhile (a bad frame, a
    // CLOSE): it may lie in the read buffer, which the next read, on any link, overwrites.
    this.handler.onChunkEnd(this);
    if ((this.state as LinkState) === 'closed') return;
    if (this.acking && this.decoder.bufferedBytes > ACK_PARTIAL_BYTES && performance.now() - this.lastAckMs >= ACK_PARTIAL_INTERVAL_MS) {
      this.dataToAck = true;
    }
    if (this.acking && this.dataToAck) {
      if (this.bytesIn - this.ackSent >= ACK_BYTES) this.sendAck();
      else if (this.ackTimer === undefined) this.ackTimer = setTimeout(() => this.sendAck(), ACK_DELAY_MS);
    }
  }
}
