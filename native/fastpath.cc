#include "fastpath.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>
#include <uv.h>

#include <cstring>

#include "errors.h"
#include "tags.h"
#include "wire.h"

namespace dptcp {

namespace {

// DATA: 4 bytes of version, type, flags, reserved; the seq (8); at least one byte of packet.
constexpr uint32_t kMinDataLength = 4 + 8 + 1;

// The length field of the frame whose first 6 bytes are at p if it is a DATA frame this path
// reads (version, type, a length within [kMinDataLength, maxFrameBytes]); else 0.
uint32_t DataLength(const uint8_t* p, size_t maxFrameBytes) {
  uint32_t length = Be32(p);
  if (length < kMinDataLength || length > maxFrameBytes) return 0;
  if (p[4] != kVersion || p[5] != kTypeData) return 0;
  return length;
}

// The sequence number of the DATA frame whose header is at p; 0 if out of range (0 or past 2^53-1).
uint64_t DataSeq(const uint8_t* p) {
  uint64_t seq = Be64(p + 8);
  return seq <= kMaxSeq ? seq : 0;
}

// src/tun/vnet-hdr.ts
constexpr size_t kVnet = 10;
constexpr uint8_t kNeedsCsum = 1;
constexpr uint8_t kDataValid = 2;
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpv4 = 1;
constexpr uint8_t kGsoTcpv6 = 4;
constexpr uint8_t kGsoUdpL4 = 5;
constexpr uint8_t kGsoEcn = 0x80;
constexpr size_t kGsoByFrags = 0xffff;
constexpr int kTcp = 6;
constexpr int kUdp = 17;
constexpr size_t kTcpCsumOffset = 16;
constexpr size_t kUdpCsumOffset = 6;
constexpr int kMaxIpv6Extensions = 8;

size_t Le16(const uint8_t* p) { return static_cast<size_t>(p[0]) | (static_cast<size_t>(p[1]) << 8); }

// True only for a packet checkVnetPacket (src/tun/vnet-hdr.ts) passes: the same
// checks, in the same order (test/unit/native-path.test.ts compares them).
bool VnetPacketOk(const uint8_t* p, size_t size) {
  if (size < kVnet + 20) return false;
  const uint8_t* ip = p + kVnet;
  size_t len = size - kVnet;
  int version = ip[0] >> 4;
  size_t l4;
  if (version == 4) {
    l4 = static_cast<size_t>(ip[0] & 0x0f) * 4;
    if (l4 < 20 || l4 > len) return false;
  } else if (version == 6) {
    if (len < 40) return false;
    l4 = 40;
  } else {
    return false;
  }
  uint8_t flags = p[0];
  if (flags != 0 && flags != kNeedsCsum && flags != kDataValid) return false;
  uint8_t gso = p[1];
  uint8_t gsoBase = gso & ~kGsoEcn;
  if (gso != kGsoNone && gsoBase != kGsoTcpv4 && gsoBase != kGsoTcpv6 && gso != kGsoUdpL4) return false;
  if (Le16(p + 2) > len) return false;
  bool needsCsum = flags == kNeedsCsum;
  if (!needsCsum && gso == kGsoNone) return true;

  int proto;
  bool fragment;
  if (version == 4) {
    proto = ip[9];
    fragment = ((ip[6] & 0x3f) | ip[7]) != 0;
  } else {
    proto = ip[6];
    fragment = false;
    for (int n = 0; n < kMaxIpv6Extensions && (proto == 0 || proto == 43 || proto == 60); n++) {
      if (l4 + 8 > len) return false;
      int next = ip[l4];
      l4 += (static_cast<size_t>(ip[l4 + 1]) + 1) * 8;
      proto = next;
    }
    if (l4 > len) return false;
    if (proto == 44) fragment = true;
  }
  size_t csumStart = Le16(p + 6);
  size_t csumOffset = Le16(p + 8);
  if (needsCsum) {
    if (csumStart < (version == 4 ? l4 : 40)) return false;
    if (csumStart + csumOffset + 2 > len) return false;
  }
  if (gso == kGsoNone) {
    if (!fragment && csumStart == l4) {
      if (proto == kTcp && csumOffset != kTcpCsumOffset) return false;
      if (proto == kUdp && csumOffset != kUdpCsumOffset) return false;
    }
    return true;
  }
  size_t gsoSize = Le16(p + 4);
  if (gsoSize == 0 || gsoSize == kGsoByFrags || gsoSize > len) return false;
  bool tcp = gsoBase != kGsoUdpL4;
  if (gsoBase == kGsoTcpv4 && version != 4) return false;
  if (gsoBase == kGsoTcpv6 && version != 6) return false;
  if (fragment || proto != (tcp ? kTcp : kUdp)) return false;
  if (tcp) {
    if (l4 + 20 > len) return false;
    size_t doff = static_cast<size_t>(ip[l4 + 12] >> 4) * 4;
    if (doff < 20 || l4 + doff > len) return false;
  } else if (l4 + 8 > len) {
    return false;
  }
  if (needsCsum) {
    if (csumStart != l4) return false;
    if (csumOffset != (tcp ? kTcpCsumOffset : kUdpCsumOffset)) return false;
  } else if (!tcp) {
    return false;
  }
  return true;
}

}  // namespace

Napi::Float64Array CounterArray(Napi::Env env, Napi::Value v, size_t n, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      v.As<Napi::TypedArray>().ElementLength() < n) {
    throw Napi::TypeError::New(env, std::string(what) + ": counters is a Float64Array of " + std::to_string(n));
  }
  return v.As<Napi::Float64Array>();
}

Napi::Function FastPath::Init(Napi::Env env) {
  return DefineClass(env, "FastPath",
                     {
                         InstanceMethod<&FastPath::SetSources>("setSources"),
                         InstanceMethod<&FastPath::SetTunBusy>("setTunBusy"),
                         InstanceMethod<&FastPath::Close>("close"),
                     });
}

// new FastPath(tun, eliminator, vnetHdrBytes, counters: Float64Array(kPathCounters), onTunFailed(packet)).
// onTunFailed gets a copy of a packet the TUN did not take (after the
// eliminator took it): TypeScript's writer tries it again, and queues it
// (EAGAIN) or counts it by its errno.
FastPath::FastPath(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FastPath>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() < 5 || !info[0].IsObject() || !info[1].IsObject() || !info[2].IsNumber() ||
      !info[4].IsFunction()) {
    throw Napi::TypeError::New(env, "new FastPath(tun, eliminator, vnetHdrBytes, counters, onTunFailed)");
  }
  Napi::Object tun = info[0].As<Napi::Object>();
  Napi::Object eliminator = info[1].As<Napi::Object>();
  if (!HasTag(env, tun, &kTunTag)) throw Napi::TypeError::New(env, "FastPath: tun is not a Tun");
  if (!HasTag(env, eliminator, &kEliminatorTag)) {
    throw Napi::TypeError::New(env, "FastPath: eliminator is not an Eliminator");
  }
  double vnet = info[2].As<Napi::Number>().DoubleValue();
  if (vnet != 0 && vnet != kVnet) throw Napi::RangeError::New(env, "FastPath: vnetHdrBytes is 0 or 10");
  Napi::Float64Array counters = CounterArray(env, info[3], kPathCounters, "FastPath");
  asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "dptcp:FastPath");
  tun_ = Napi::ObjectWrap<Tun>::Unwrap(tun);
  eliminator_ = Napi::ObjectWrap<Eliminator>::Unwrap(eliminator);
  tunRef_ = Napi::Persistent(tun);
  eliminatorRef_ = Napi::Persistent(eliminator);
  countersRef_ = Napi::Persistent(counters);
  counters_ = counters.Data();
  vnetHdrBytes_ = static_cast<size_t>(vnet);
  onTunFailed_ = Napi::Persistent(info[4].As<Napi::Function>());
  TagObject(env, info.This().As<Napi::Object>(), &kFastPathTag);
}

FastPath::~FastPath() = default;

// The prefixes of a setSources buffer: 20 bytes each (family 4 or 6, prefix
// length, 2 zero bytes, the address in 16 bytes).
std::vector<SourceNet> ParseSources(Napi::Env env, Napi::Buffer<uint8_t> b) {
  if (b.Length() % 20 != 0) throw Napi::RangeError::New(env, "sources: 20 bytes per prefix");
  std::vector<SourceNet> nets;
  for (size_t at = 0; at < b.Length(); at += 20) {
    const uint8_t* e = b.Data() + at;
    SourceNet n;
    n.family = e[0];
    n.prefix = e[1];
    if ((n.family != 4 && n.family != 6) || n.prefix > (n.family == 4 ? 32 : 128)) {
      throw Napi::RangeError::New(env, "sources: a prefix is IPv4 /0-32 or IPv6 /0-128");
    }
    std::memcpy(n.bytes, e + 4, 16);
    nets.push_back(n);
  }
  return nets;
}

// setSources(null | Buffer): the prefixes a packet's source address must lie
// in (ParseSources); null: any source (the client).
Napi::Value FastPath::SetSources(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || (!info[0].IsNull() && !info[0].IsBuffer())) {
    throw Napi::TypeError::New(env, "setSources(null | Buffer)");
  }
  if (info[0].IsNull()) {
    filter_ = false;
    nets_.clear();
    return env.Undefined();
  }
  nets_ = ParseSources(env, info[0].As<Napi::Buffer<uint8_t>>());
  filter_ = true;
  return env.Undefined();
}

// setTunBusy(busy): TypeScript's TUN writer holds packets waiting for the device
// (EAGAIN): until it says otherwise, every frame goes its way, behind them.
Napi::Value FastPath::SetTunBusy(const Napi::CallbackInfo& info) {
  tunBusy_ = info.Length() > 0 && info[0].ToBoolean().Value();
  return info.Env().Undefined();
}

// close(): takes nothing more; lets go of the device and the table. Idempotent.
Napi::Value FastPath::Close(const Napi::CallbackInfo& info) {
  closed_ = true;
  tun_ = nullptr;
  eliminator_ = nullptr;
  tunRef_.Reset();
  eliminatorRef_.Reset();
  onTunFailed_.Reset();
  return info.Env().Undefined();
}

// The first `prefix` bits of `address` (4 or 16 bytes) equal those of one of the nets of its family.
bool Matches(const std::vector<SourceNet>& nets, const uint8_t* address, uint8_t family) {
  for (const SourceNet& n : nets) {
    if (n.family != family) continue;
    int bits = n.prefix;
    bool equal = true;
    for (int i = 0; bits > 0; i++, bits -= 8) {
      uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
      if ((address[i] & mask) != (n.bytes[i] & mask)) {
        equal = false;
        break;
      }
    }
    if (equal) return true;
  }
  return false;
}

int ClassifyPacket(const uint8_t* p, size_t len, size_t vnetHdrBytes, const std::vector<SourceNet>* nets) {
  if (vnetHdrBytes > 0 && !VnetPacketOk(p, len)) return 1;
  if (nets == nullptr) return 0;
  // src/core/ip.ts sourceIn: the same tests in the same order.
  size_t o = vnetHdrBytes;
  int version = len > o ? p[o] >> 4 : 0;
  if (version == 4) return len >= o + 20 && Matches(*nets, p + o + 12, 4) ? 0 : 2;
  if (version == 6) {
    if (len < o + 40) return 2;
    if (Matches(*nets, p + o + 8, 6)) return 0;
    if (p[o + 8] == 0xfe && (p[o + 9] & 0xc0) == 0x80) return 3;
    for (size_t i = o + 8; i < o + 24; i++) {
      if (p[i] != 0) return 2;
    }
    return 3;
  }
  return 2;
}

Napi::Value ClassifyPacketJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsNumber() || (!info[2].IsNull() && !info[2].IsBuffer())) {
    throw Napi::TypeError::New(env, "classifyPacket(packet: Buffer, vnetHdrBytes: number, sources: Buffer | null)");
  }
  Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
  double vnet = info[1].As<Napi::Number>().DoubleValue();
  if (vnet != 0 && vnet != kVnet) throw Napi::RangeError::New(env, "classifyPacket: vnetHdrBytes is 0 or 10");
  std::vector<SourceNet> nets;
  if (!info[2].IsNull()) nets = ParseSources(env, info[2].As<Napi::Buffer<uint8_t>>());
  int verdict = ClassifyPacket(b.Data(), b.Length(), static_cast<size_t>(vnet), info[2].IsNull() ? nullptr : &nets);
  return Napi::Number::New(env, verdict);
}

size_t CutDataFrame(const uint8_t* p, size_t n, size_t maxFrameBytes) {
  if (n < 6) return 0;
  uint32_t length = DataLength(p, maxFrameBytes);
  if (length == 0 || length <= n - 4) return 0;
  return 4 + static_cast<size_t>(length);
}

// The eliminator's verdict on frame `seq` (length field `length`), counted on the link.
Eliminator::Verdict FastPath::Judge(uint64_t seq, uint32_t length, double* link) {
  Eliminator::Verdict v = eliminator_->Check(static_cast<int64_t>(seq), false);
  link[kRxBytes] += 4.0 + length;
  link[kRxFrames]++;
  link[v == Eliminator::kAccept ? kFirstCopies : v == Eliminator::kDuplicate ? kDuplicates : kStale]++;
  return v;
}

size_t FastPath::JudgeCopy(const uint8_t* h, size_t maxFrameBytes, double* link) {
  if (closed_) return 0;
  uint32_t length = DataLength(h, maxFrameBytes);
  uint64_t seq = length == 0 ? 0 : DataSeq(h);
  if (seq == 0 || !DropsUnread(length) || !eliminator_->Seen(static_cast<int64_t>(seq))) return 0;
  Judge(seq, length, link);
  return 4 + static_cast<size_t>(length);
}

size_t FastPath::Deliver(const uint8_t* buf, size_t n, size_t maxFrameBytes, double* link, bool* lastCopy) {
  size_t off = 0;
  bool wrote = false;
  // Fewer bytes than a header left: no whole frame (the decoder's, as any cut one).
  while (!closed_ && !tunBusy_ && n - off >= kDataHeaderBytes) {
    // Another type or version, a length out of bounds or past the read's end, a sequence number
    // out of range: the decoder's (it refuses or gathers it). Flags and reserved are not read:
    // DATA's in-order bit means nothing in duplicate mode, the only one this path is armed in.
    uint32_t length = DataLength(buf + off, maxFrameBytes);
    if (length == 0 || length > n - off - 4) break;
    uint64_t seq = DataSeq(buf + off);
    if (seq == 0) break;
    const uint8_t* packet = buf + off + kDataHeaderBytes;
    size_t len = length - 12;
    // Checked before the eliminator sees it: TypeScript takes what it refuses, and judges it there.
    if (ClassifyPacket(packet, len, vnetHdrBytes_, filter_ ? &nets_ : nullptr) != 0) break;
    int fd = tun_->Fd();
    if (fd < 0) break;
    Eliminator::Verdict v = Judge(seq, length, link);
    off += 4 + length;
    *lastCopy = v != Eliminator::kAccept && DropsUnread(length);
    if (v != Eliminator::kAccept) continue;
    ssize_t r;
    do {
      r = write(fd, packet, len);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      wrote = true;
      counters_[kDelivered]++;
      counters_[kDeliveredBytes] += static_cast<double>(len);
    } else {
      // Counted before JavaScript runs: it may close the link and fold its counters.
      link[kLastRxHrMs] = static_cast<double>(uv_hrtime()) / 1e6;
      // JavaScript ran (and with it anything queued: nextTicks, promises): what follows is
      // TypeScript's, which looks again whether the link is still up.
      TunFailed(packet, len);
      return off;
    }
  }
  if (off > 0) link[kLastRxHrMs] = static_cast<double>(uv_hrtime()) / 1e6;
  if (wrote) {
    // What the writes made the host answer at once (a ping's reply, an ACK) is on the device
    // already: sent now, not after a turn of the event loop (about 8 µs of a round trip).
    if (!closed_ && tun_ != nullptr) tun_->ReadNow();
    // Then the CPU goes to whoever the packets woke (the application reading them), before the
    // rest of this turn (a link's later copies, the event loop): the tunnel runs at a higher
    // priority (`nice`), and would otherwise keep the CPU they share until it sleeps. Under
    // EEVDF a yield only moves this thread's deadline one slice on; with nothing else
    // runnable it comes straight back. Measured beside OpenVPN, both up at once, pinned:
    // idle ping p50 0.95-1.09x OpenVPN's against 1.15-1.46x without; bulk 11981-13400 Mbit/s
    // against 9902-11123 in three interleaved pairs.
    sched_yield();
  }
  return off;
}

// Never throws: an exception from the callback goes to 'uncaughtException'.
void FastPath::TunFailed(const uint8_t* packet, size_t len) noexcept {
  if (onTunFailed_.IsEmpty()) return;
  try {
    Napi::Env env(env_);
    Napi::Buffer<uint8_t> copy = Napi::Buffer<uint8_t>::Copy(env, packet, len);
    onTunFailed_.MakeCallback(env.Global(), {copy}, *asyncContext_);
  } catch (...) {
    ReportUncaught(env_, CaughtAsJs(env_, "fast path callback"), "fast path callback");
  }
}

}  // namespace dptcp
