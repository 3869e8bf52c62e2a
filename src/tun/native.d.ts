// The contract of build/Release/dptcp.node (native/). Declared once, here.
// Every method throws an Error with `code`, `errno` and `syscall` when the
// syscall behind it fails.

export interface NativeTun {
  /** The name the kernel gave the device. */
  readonly name: string;
  /** -1 once closed. */
  readonly fd: number;
  /** errno of the packet writeBatch stopped at, 0 if it wrote them all. */
  readonly lastErrno: number;
  /**
   * Reads dropped because their length cannot be a packet: no more than the
   * virtio_net_hdr (or empty), or more than maxPacket.
   */
  readonly readDiscards: number;
  /**
   * Batches with packets read right after the native receive path wrote to
   * the device (what the host answered at once: an echo reply, an ACK),
   * without waiting for the next turn of the event loop.
   */
  readonly readsAfterWrite: number;
  setMtu(mtu: number): void;
  addAddress(address: string, prefixLength: number): void;
  setUp(up?: boolean): void;
  /** TUNSETOFFLOAD with TUN_F_* flags. */
  setOffload(flags: number): void;
  /**
   * One onRead(count, start) per batch: packet i sits in `arena` after
   * `headroom` bytes, packets packed one after another; `lengths[i]` is its
   * size. Packets before `start` were sent by the send path (setSendPath);
   * a batch it sent whole calls no onRead.
   */
  startReading(
    arena: Buffer,
    lengths: Uint32Array,
    headroom: number,
    maxPacket: number,
    onRead: (count: number, start: number) => void,
    onError: (err: Error) => void,
  ): void;
  stopReading(): void;
  /** While reading: later batches land in `arena` (same layout; at least headroom + maxPacket bytes). */
  setArena(arena: Buffer): void;
  /** Writes packets[start..] in order; returns the index of the first not written. */
  writeBatch(packets: readonly Buffer[], start: number): number;
  /** The native send path that takes the packets at the start of each batch it can send; null: none. Absent from addons built before it. */
  setSendPath?(path: NativeSendPath | null): void;
  /** cb runs once, when the device next accepts writes. */
  waitWritable(cb: () => void): void;
  /** Idempotent. Removes the device with its addresses and routes. */
  close(): void;
}

/**
 * Reads a connected stream socket (a dup of `fd`, watched on the event loop)
 * into one reused buffer. onData(n, start): buffer[start..n) holds the next
 * bytes (the session's native path may have taken bytes before them,
 * setFast), valid until onData returns, which returns what the caller's
 * decoder needs to finish the frame it holds part of (0 none, -1 not known). onEnd(0): the peer closed; onEnd(errno): the read
 * failed; onEnd(EIO, error): the addon itself failed in its poll callback
 * (`error` says how); nothing is read after any of them. close() is due after the socket's
 * own close (the connection lives while the dup is open). Idempotent.
 */
export interface NativeSocketReader {
  /** recv(2) calls that returned data. */
  readonly reads: number;
  /** Stops reading until resume() (the receive window closes, as with a peer that stops reading). */
  pause(): void;
  resume(): void;
  /**
   * Whole DATA frames that start a read, or follow the end of the frame the
   * caller's decoder was finishing, go to `fast` first (counted in `counters`,
   * LINK_COUNTERS of core/fast-path.ts); `decoderNeed`: what the decoder needs
   * now, as onData returns it; frames longer than `maxFrameBytes` are the
   * decoder's to refuse. null: every byte to onData.
   */
  setFast(fast: NativeFastPath | null, counters?: Float64Array, decoderNeed?: number, maxFrameBytes?: number): void;
  close(): void;
}

/** The exact elimination table of one session (core/eliminator.ts is its specification). */
export interface NativeEliminator {
  /** 0 accept, 1 duplicate, 2 stale (Verdict). */
  check(seq: number, exact?: boolean): 0 | 1 | 2;
  tick(nowMs: number): void;
  reset(): void;
  readonly highest: number;
  readonly floorSeq: number;
  readonly accepted: number;
  readonly duplicates: number;
  readonly stale: number;
  readonly stateBytes: number;
  readonly windowPackets: number;
  readonly ttlMs: number;
}

/**
 * A session's native receive path (native/fastpath.h): whole DATA frames at
 * the start of a link's read, judged by `eliminator`, checked, written to `tun`.
 */
export interface NativeFastPath {
  /** The prefixes a packet's source must lie in (20 bytes each: family, prefix length, 0, 0, 16 address bytes); null: any. */
  setSources(prefixes: Buffer | null): void;
  /** The TypeScript TUN writer holds a backlog: every frame goes its way meanwhile. */
  setTunBusy(busy: boolean): void;
  close(): void;
}

/**
 * The tunnel's native send path (native/sendpath.h): the packets at the start
 * of a TUN batch, numbered, framed and sent on every link of one session,
 * while each link takes writes at once.
 */
export interface NativeSendPath {
  /**
   * Sends for one session: `seq` its next sequence number (shared), `routes`
   * the prefixes of its destinations (encodeSources; null: any), a reader, a
   * flag (1: takes writes at once), counters (tx packets, tx bytes) and a
   * rest buffer (a frame the link's socket did not take whole is copied
   * there for onRest; reused) per link.
   */
  arm(seq: Float64Array, routes: Buffer | null, readers: NativeSocketReader[], flags: Uint8Array, linkCounters: Float64Array[], restBuffers?: Buffer[]): void;
  disarm(): void;
  close(): void;
}

/**
 * One direction's AEAD key (AES-256-GCM or ChaCha20-Poly1305, OpenSSL EVP).
 * The text is buffer[textStart, +textLength), its 16-byte tag right after it,
 * the additional data buffer[aadStart, +16); nonce: 4 zero bytes and the
 * counter as a big-endian u64. Both work in place.
 */
export interface NativeAead {
  /** In place, or from `source` (textLength bytes, not overlapping the text) into the text's place. */
  seal(buffer: Buffer, textStart: number, textLength: number, counter: number, aadStart: number, source?: Buffer): void;
  /** True, and the text decrypted in place, if the tag authenticates it. */
  open(buffer: Buffer, textStart: number, textLength: number, counter: number, aadStart: number): boolean;
  destroy(): void;
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** The data loop's state (native/watch.h). */
export interface DataLoopInfo {
  readonly on: boolean;
  /** Descriptors watched for packets (the TUN, natively read links). */
  readonly watched: number;
  /** Callbacks the data loop's own wait ran (each one a wake-up without a turn of Node's loop). */
  readonly wakeups: number;
  /** Times it looked into libuv's own set (ready along with watched descriptors twice in a row). */
  readonly looks: number;
}

export interface NativeAddon {
  /** vnetHdr: every packet starts with a 10-byte struct virtio_net_hdr (IFF_VNET_HDR). */
  Tun: new (name: string, vnetHdr?: boolean) => NativeTun;
  setsockoptInt(fd: number, level: number, name: number, value: number): void;
  /** One non-blocking send(2) of the whole buffer: bytes taken (0: the socket buffer is full) or -errno. */
  sendSome(fd: number, buf: Buffer): number;
  /** Replaces this process's program (same pid, environment and inheritable descriptors); returns only by throwing. */
  execv(path: string, argv: readonly string[]): never;
  /** Bytes written to a TCP socket and not sent yet (ioctl SIOCOUTQNSD), or -errno. Absent from addons built before it. */
  unsentBytes?(fd: number): number;
  /** The kernel's smoothed round trip of a TCP connection (TCP_INFO tcpi_rtt), microseconds, or -errno. Absent from addons built before it. */
  tcpRttMicros?(fd: number): number;
  /** Turns the data loop (native/watch.h) on or off. Absent from addons built before it. */
  setDataLoop?(on: boolean): void;
  /** Absent from addons built before it. */
  dataLoopInfo?(): DataLoopInfo;
  /** SO_PEERCRED of a connected unix socket: the peer's pid, uid and gid when it listened or connected. Absent from addons built before it. */
  peerCredentials?(fd: number): PeerCredentials;
  Aead: new (cipher: string, key: Buffer, encrypt: boolean) => NativeAead;
  SocketReader: new (fd: number, buffer: Buffer, onData: (n: number, start: number) => number, onEnd: (errno: number, error?: Error) => void) => NativeSocketReader;
  /** Absent from addons built before it. */
  Eliminator?: new (windowPackets: number, ttlMs: number) => NativeEliminator;
  /**
   * What the native path's checks make of a packet: 0 deliverable there; 1 a
   * virtio_net_hdr checkVnetPacket refuses; 2 spoofed source; 3 link-local source. Absent from addons built before it.
   */
  classifyPacket?(packet: Buffer, vnetHdrBytes: number, sources: Buffer | null): number;
  /** Absent from addons built before it. onTunFailed: a copy of a packet the TUN did not take. */
  FastPath?: new (tun: NativeTun, eliminator: NativeEliminator, vnetHdrBytes: number, counters: Float64Array, onTunFailed: (packet: Buffer) => void) => NativeFastPath;
  /**
   * Absent from addons built before it. onRest(rests, info): for each link
   * that did not take a frame whole, the frame — undefined in rests when it
   * is in the link's rest buffer (arm), else a copy — and in info (link
   * index, bytes of it taken — 0: none, negative: -errno, the send failed —,
   * the frame's length).
   */
  SendPath?: new (
    tun: NativeTun,
    vnetHdrBytes: number,
    counters: Float64Array,
    flowBytes: Uint32Array,
    flowState: Float64Array,
    seed: number,
    hrOffsetMs: number,
    onRest: (rests: Array<Buffer | undefined>, info: Int32Array) => void,
  ) => NativeSendPath;
  /** core/flows.ts flowHash in C++ (tests). */
  flowHash?(packet: Buffer, seed: number): number;
  constants: {
    SOL_SOCKET: number;
    IPPROTO_TCP: number;
    TCP_NOTSENT_LOWAT: number;
    SO_MAX_PACING_RATE: number;
    TCP_USER_TIMEOUT: number;
    SO_SNDBUF: number;
    EAGAIN: number;
    TUN_F_CSUM: number;
    TUN_F_TSO4: number;
    TUN_F_TSO6: number;
    TUN_F_USO4: number;
    TUN_F_USO6: number;
    VIRTIO_NET_HDR_BYTES: number;
  };
}
