#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "eliminator.h"
#include "tun.h"

namespace dptcp {

// Where a link's counters sit in the Float64Array it hands its reader
// (src/core/fast-path.ts has the same list): the native path adds to them,
// TypeScript folds them into its own and zeroes them.
enum LinkCounter {
  kRxBytes = 0,
  kRxFrames,
  kFirstCopies,
  kDuplicates,
  kStale,
  // Of the duplicates and stale copies, those dropped unread (SocketReader::DropCopies).
  kDroppedUnread,
  // uv_hrtime() in ms when bytes last came (absolute, not added to).
  kLastRxHrMs,
  kLinkCounters
};

// A copy shorter than this is read as usual, not dropped unread: dropping one takes a peek and
// a MSG_TRUNC read (and a peek at the next), where a read takes it with the frames around it,
// and its bytes cost less to copy than a syscall (an idle ping's duplicate, a stream of ACKs).
constexpr size_t kDropUnreadMinBytes = 8192;
// Whether a copy of a DATA frame of `length` (its length field) is long enough to drop unread.
constexpr bool DropsUnread(uint32_t length) { return 4 + static_cast<size_t>(length) >= kDropUnreadMinBytes; }

// The session's: packets and bytes written to the TUN.
enum PathCounter { kDelivered = 0, kDeliveredBytes, kPathCounters };

// `v` as a Float64Array of at least `n` counters (LinkCounter, PathCounter); a
// TypeError naming `what` if it is not one.
Napi::Float64Array CounterArray(Napi::Env env, Napi::Value v, size_t n, const char* what);

// A prefix a packet's source address may lie in.
struct SourceNet {
  uint8_t family;
  uint8_t prefix;
  uint8_t bytes[16];
};

// The prefixes of a setSources buffer (src/core/fast-path.ts encodeSources):
// 20 bytes each (family 4 or 6, prefix length, 2 zero bytes, the address in 16
// bytes); a RangeError if it is not one.
std::vector<SourceNet> ParseSources(Napi::Env env, Napi::Buffer<uint8_t> b);
// `address` (4 or 16 bytes of `family`) lies in one of `nets`.
bool Matches(const std::vector<SourceNet>& nets, const uint8_t* address, uint8_t family);

// What the checks of src/tun/vnet-hdr.ts (checkVnetPacket) and src/core/ip.ts
// (sourceIn) make of `packet` (vnetHdrBytes 0 or 10; `nets` null: any source):
// 0 it may go to the TUN on the native path, 1 its virtio_net_hdr is one
// checkVnetPacket refuses, 2 its source is not the peer's, 3 an IPv6
// link-local or unspecified source. Reads only inside the packet.
int ClassifyPacket(const uint8_t* packet, size_t len, size_t vnetHdrBytes, const std::vector<SourceNet>* nets);

// The size of the whole frame (4 + its length) if p[0, n) is the start of a DATA
// frame that Deliver would read once whole (the version, type and a length
// within its bounds are there, at least 6 bytes) but is cut before its end;
// else 0.
size_t CutDataFrame(const uint8_t* p, size_t n, size_t maxFrameBytes);

// classifyPacket(packet, vnetHdrBytes, sources: Buffer | null): ClassifyPacket
// (tests compare it with the TypeScript checks; sources as FastPath.setSources).
Napi::Value ClassifyPacketJs(const Napi::CallbackInfo& info);

// The receive path of one session in C++: DATA frames that lie whole at the
// start of a link's read are judged by the session's eliminator, checked as
// the TypeScript path checks them (virtio_net_hdr, source address), and
// written to the TUN, with no JavaScript. It stops at the first frame it does
// not take — another type, a frame cut by the read (SocketReader keeps a DATA
// frame it took up to, cut at or after its 6th byte, and hands it here
// whole), one its checks would refuse or a length the decoder would refuse —
// and that frame and everything after it go to the link's TypeScript decoder,
// in order, as before; a packet the TUN does not take goes to TypeScript's
// TUN writer (onTunFailed),
// which queues or counts it. Whether a session and link use it, and with
// which limits, is decided in TypeScript (src/core/fast-path.ts): here are
// plain checks, syscalls and counters.
class FastPath : public Napi::ObjectWrap<FastPath> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit FastPath(const Napi::CallbackInfo& info);
  ~FastPath() override;

  // Takes the DATA frames at the start of buf[0, n) that it can deliver, up to
  // the first it cannot; returns the bytes taken. `link` is the link's
  // counters (LinkCounter). Once it wrote packets it reads the TUN once
  // (Tun::ReadNow: what the host answered at once goes out now) and yields
  // the CPU (sched_yield: to the application the packets woke). May call
  // into JavaScript: onTunFailed, and the TUN's and send path's callbacks.
  // *lastCopy: whether the last DATA frame it judged was a copy already delivered (a duplicate
  // or stale) at least kDropUnreadMinBytes long; untouched if it judged none.
  size_t Deliver(const uint8_t* buf, size_t n, size_t maxFrameBytes, double* link, bool* lastCopy);
  // `h` holds the first kDataHeaderBytes of a frame. If it is a DATA frame Deliver would judge
  // (version, type, a length within bounds, a sequence number in range) and the eliminator has
  // seen its number (another link delivered its copy) or judges it stale, it is judged and
  // counted as Deliver would, and its size (4 + length) returned: the caller drops its bytes
  // unread. Else (and for a frame shorter than kDropUnreadMinBytes) 0, nothing counted. What
  // the packet holds is not looked at: TypeScript too judges a copy before it checks its
  // packet, and checks only first copies.
  size_t JudgeCopy(const uint8_t* h, size_t maxFrameBytes, double* link);
  bool Usable() const { return !closed_ && !tunBusy_; }

 private:
  Eliminator::Verdict Judge(uint64_t seq, uint32_t length, double* link);
  Napi::Value SetSources(const Napi::CallbackInfo& info);
  Napi::Value SetTunBusy(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void TunFailed(const uint8_t* packet, size_t len) noexcept;

  napi_env env_ = nullptr;
  Napi::ObjectReference tunRef_;
  Napi::ObjectReference eliminatorRef_;
  Tun* tun_ = nullptr;
  Eliminator* eliminator_ = nullptr;
  Napi::Reference<Napi::Float64Array> countersRef_;
  double* counters_ = nullptr;
  Napi::FunctionReference onTunFailed_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
  size_t vnetHdrBytes_ = 0;
  bool filter_ = false;
  std::vector<SourceNet> nets_;
  bool tunBusy_ = false;
  bool closed_ = false;
};

}  // namespace dptcp
