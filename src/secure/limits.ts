// Every limit and timer of the secure channel, named once (docs/protocol.md,
// docs/security.md). WireGuard's values where the same concern exists.

/** A keypair seals at most this many records ... */
export const REJECT_AFTER_MESSAGES = 2 ** 48;
/** ... and the client starts a new handshake well before: */
export const REKEY_AFTER_MESSAGES = 2 ** 47;
/** A keypair older than this is neither used nor accepted. */
export const REJECT_AFTER_TIME_MS = 180_000;
/** The client rekeys when its sending keypair is this old. */
export const REKEY_AFTER_TIME_MS = 120_000;
/** A rekey handshake not answered within this is tried again (on another up link if there is one). */
export const REKEY_TIMEOUT_MS = 5_000;
/**
 * Keypairs a session keeps for receiving: records in flight under older ones
 * still open. Each connection's handshake makes one, and a link that has just
 * handshaken waits for its first record under its own: twice the most
 * connections a session may have (max_links_per_session, at most 16), so that
 * all of them reconnecting at once, twice, push out none still awaited. Up to
 * 32 × 8 KiB of replay windows per session.
 */
export const MAX_KEYPAIRS = 32;
/**
 * Records per keypair and direction remembered by the anti-replay window (bits
 * of its ring: 65,504 records behind the highest are judged on their bit).
 * WireGuard's 8,192 is kept small for one path; here aggregate and adaptive
 * modes stripe records over links whose delays differ, and a record is refused
 * as too_old once more than the window was accepted ahead of it: at 1 Gbit/s of
 * 1,400-byte records that is 91 ms of delay difference at 8,192 and 730 ms at
 * 65,536. The ring costs 8 KiB per keypair.
 */
export const REPLAY_WINDOW_RECORDS = 65_536;

/** Before a link's handshake is complete, a frame is at most this large. */
export const HANDSHAKE_MAX_FRAME_BYTES = 1024;
/** An INITIATION older than the newest of its peer by more than this is a replay. */
export const INITIATION_REPLAY_WINDOW_MS = 10_000;
/** Accepted INITIATION timestamps remembered per peer (the newest), to refuse exact replays. */
export const INITIATION_REPLAY_ENTRIES = 64;
/** COOKIE replies one connection gets; an INITIATION needing another closes it (a client retries at most 3 rounds). */
export const MAX_COOKIES_PER_CONNECTION = 2;

/** Admission (the table's size is server.limits.max_pending_handshakes): connections in their handshake from one source address. */
export const MAX_PENDING_PER_SOURCE = 8;
/** ... from one prefix (/24 for IPv4, /56 for IPv6). */
export const MAX_PENDING_PER_PREFIX = 32;
export const PREFIX_BITS_V4 = 24;
export const PREFIX_BITS_V6 = 56;
/**
 * More failed handshakes than this from one source within the window block it for BLOCK_MS: a
 * flood (4 a second and more, sustained), not a stranger behind the same NAT address as a real
 * client trying a few times a second — at 8, one bad INITIATION every 400 ms kept that address,
 * and the real client behind it, blocked for as long as it went on (review).
 */
export const FAIL_LIMIT = 40;
export const FAIL_WINDOW_MS = 10_000;
export const BLOCK_MS = 10_000;
/** Sources tracked by the failure table (oldest forgotten first). */
export const MAX_TRACKED_SOURCES = 4096;
/** Under load (this share of the pending table in use, or this many INITIATIONs a second) mac2 is required. */
export const UNDER_LOAD_PENDING_SHARE = 0.25;
export const UNDER_LOAD_INITIATIONS_PER_S = 50;
/** A connection that has sent no INITIATION within this is closed (slow-loris), well before handshake_timeout_ms. */
export const FIRST_MESSAGE_TIMEOUT_MS = 1_000;
