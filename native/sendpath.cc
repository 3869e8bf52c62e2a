#include "sendpath.h"

#include <errno.h>
#include <sys/socket.h>
#include <uv.h>

#include <cmath>
#include <cstring>

#include "errors.h"
#include "reader.h"
#include "tags.h"
#include "wire.h"

namespace dptcp {

namespace {

// flows.ts: SPARSE_BYTES, DECAY_MS, URGENT_MAX_PACKET_BYTES are not needed here
// (the path sends at once whatever the verdict); the counting and halving are.
constexpr double kDecayMs = 100;

inline uint32_t Mix(uint32_t h, uint32_t v) { return ((h ^ v) * 0x01000193u) ^ (h >> 15); }

// One send(2) of the whole frame: its length if the socket took it all, else
// what it took (0: none, EAGAIN) or -errno.
int32_t SendFrame(int fd, const uint8_t* frame, size_t len) {
  ssize_t r;
  do {
    r = send(fd, frame, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return static_cast<int32_t>(r);
  return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
}

}  // namespace

uint32_t FlowHash(const uint8_t* p, size_t len, int32_t seed) {
  uint32_t h = 0x811c9dc5u ^ static_cast<uint32_t>(seed);
  if (len == 0) return 0;
  int version = p[0] >> 4;
  uint8_t proto;
  long l4;
  if (version == 4 && len >= 20) {
    proto = p[9];
    h = Mix(h, Be32(p + 12));
    h = Mix(h, Be32(p + 16));
    l4 = (p[0] & 0x0f) << 2;
    if ((((p[6] << 8) | p[7]) & 0x1fff) != 0) l4 = -1;
  } else if (version == 6 && len >= 40) {
    proto = p[6];
    for (int i = 8; i < 40; i += 4) h = Mix(h, Be32(p + i));
    l4 = 40;
  } else {
    return 0;
  }
  h = Mix(h, proto);
  if (l4 >= 0 && (proto == 6 || proto == 17 || proto == 132 || proto == 136) && static_cast<size_t>(l4) + 4 <= len) {
    h = Mix(h, Be32(p + l4));
  }
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

Napi::Value FlowHashJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "flowHash(packet: Buffer, seed: number)");
  }
  Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
  return Napi::Number::New(env, FlowHash(b.Data(), b.Length(), info[1].As<Napi::Number>().Int32Value()));
}

Napi::Function SendPath::Init(Napi::Env env) {
  return DefineClass(env, "SendPath",
                     {
                         InstanceMethod<&SendPath::Arm>("arm"),
                         InstanceMethod<&SendPath::Disarm>("disarm"),
                         InstanceMethod<&SendPath::Close>("close"),
                     });
}

// new SendPath(tun, vnetHdrBytes, counters, flowBytes, flowState, seed, hrOffsetMs, onRest):
// counters a Float64Array (SendCounter); flowBytes the FlowClassifier's
// Uint32Array(4096), flowState its Float64Array [last halving, performance.now()
// ms], seed its hash seed; hrOffsetMs what uv_hrtime() ms less performance.now()
// is; onRest(rests: (Buffer | undefined)[], info: Int32Array) gets, for each
// link that did not take a frame whole, the frame: copied into the link's rest
// buffer (arm) and undefined in rests, or where it has none (or one too
// small) a copy of its own in rests; and in info (link index, bytes of it
// taken, or 0, or -errno; the frame's length).
// The Tun is only checked: it is the Tun that holds the path (setSendPath).
SendPath::SendPath(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SendPath>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() < 8 || !info[1].IsNumber() || !info[4].IsTypedArray() || !info[5].IsNumber() ||
      !info[6].IsNumber() || !info[7].IsFunction()) {
    throw Napi::TypeError::New(
        env, "new SendPath(tun, vnetHdrBytes, counters, flowBytes, flowState, seed, hrOffsetMs, onRest)");
  }
  if (!HasTag(env, info[0], &kTunTag)) throw Napi::TypeError::New(env, "SendPath: tun is not a Tun");
  double vnet = info[1].As<Napi::Number>().DoubleValue();
  if (vnet != 0 && vnet != kVirtioNetHdrBytes) throw Napi::RangeError::New(env, "SendPath: vnetHdrBytes is 0 or 10");
  Napi::Float64Array counters = CounterArray(env, info[2], kSendCounters, "SendPath");
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      info[3].As<Napi::Uint32Array>().ElementLength() != kFlowBuckets) {
    throw Napi::TypeError::New(env, "SendPath: flowBytes is a Uint32Array(4096)");
  }
  Napi::Float64Array flowState = CounterArray(env, info[4], 1, "SendPath flowState");
  asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "dptcp:SendPath");
  vnetHdrBytes_ = static_cast<size_t>(vnet);
  countersRef_ = Napi::Persistent(counters);
  counters_ = counters.Data();
  Napi::Uint32Array flowBytes = info[3].As<Napi::Uint32Array>();
  flowBytesRef_ = Napi::Persistent(flowBytes);
  flowBytes_ = flowBytes.Data();
  flowStateRef_ = Napi::Persistent(flowState);
  flowState_ = flowState.Data();
  seed_ = info[5].As<Napi::Number>().Int32Value();
  hrOffsetMs_ = info[6].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(hrOffsetMs_)) throw Napi::RangeError::New(env, "SendPath: hrOffsetMs is a finite number");
  onRest_ = Napi::Persistent(info[7].As<Napi::Function>());
  TagObject(env, info.This().As<Napi::Object>(), &kSendPathTag);
}

SendPath::~SendPath() = default;

// arm(seq, routes, readers, flags, linkCounters[, restBuffers]): sends for one
// session from now on. seq: its Float64Array(1), the next sequence number
// (TypeScript's takeSeq reads and bumps the same one); routes: the prefixes
// its packets' destinations lie in (encodeSources), null: any; readers: the
// SocketReader of each of its links that is up, flags: a Uint8Array, 1 at
// index i while link i takes writes at once (TypeScript keeps it so),
// linkCounters: a Float64Array (SendLinkCounter) per link; restBuffers: a
// Buffer per link that a frame it does not take whole is copied into for
// onRest (reused: a link is sent on again only once its socket's writer took
// the last one; TypeScript's flags say when). (Sessions whose
// offload packets are cut, on slowly paced links, are not armed.) Replaces
// what an earlier arm set.
Napi::Value SendPath::Arm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || (!info[1].IsNull() && !info[1].IsBuffer()) || !info[2].IsArray() ||
      !info[3].IsTypedArray() || !info[4].IsArray()) {
    throw Napi::TypeError::New(env, "arm(seq, routes: Buffer | null, readers, flags, linkCounters[, restBuffers])");
  }
  bool hasRest = info.Length() > 5 && !info[5].IsUndefined();
  if (hasRest && !info[5].IsArray()) throw Napi::TypeError::New(env, "arm: restBuffers is an array of Buffers");
  if (closed_) throw Napi::Error::New(env, "arm: the send path is closed");
  // Nothing is sent for the previous session's links whatever happens below.
  armed_ = false;
  Napi::Float64Array seq = CounterArray(env, info[0], 1, "arm seq");
  std::vector<SourceNet> routes;
  if (!info[1].IsNull()) routes = ParseSources(env, info[1].As<Napi::Buffer<uint8_t>>());
  Napi::Array readers = info[2].As<Napi::Array>();
  Napi::Array linkCounters = info[4].As<Napi::Array>();
  if (info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "arm: flags is a Uint8Array");
  }
  Napi::Uint8Array flags = info[3].As<Napi::Uint8Array>();
  if (flags.ElementLength() < readers.Length() || linkCounters.Length() != readers.Length()) {
    throw Napi::RangeError::New(env, "arm: a flag and counters for every reader");
  }
  Napi::Array restBuffers = hasRest ? info[5].As<Napi::Array>() : Napi::Array::New(env, 0);
  if (hasRest && restBuffers.Length() != readers.Length()) throw Napi::RangeError::New(env, "arm: a rest buffer for every reader");
  std::vector<LinkOut> links;
  for (uint32_t i = 0; i < readers.Length(); i++) {
    Napi::Value r = readers.Get(i);
    if (!HasTag(env, r, &kSocketReaderTag)) throw Napi::TypeError::New(env, "arm: a reader is not a SocketReader");
    Napi::Float64Array c = CounterArray(env, linkCounters.Get(i), kSendLinkCounters, "arm linkCounters");
    LinkOut l;
    l.readerRef = Napi::Persistent(r.As<Napi::Object>());
    l.reader = Napi::ObjectWrap<SocketReader>::Unwrap(r.As<Napi::Object>());
    l.countersRef = Napi::Persistent(c);
    l.counters = c.Data();
    if (hasRest) {
      Napi::Value b = restBuffers.Get(i);
      if (!b.IsBuffer()) throw Napi::TypeError::New(env, "arm: a rest buffer is not a Buffer");
      Napi::Buffer<uint8_t> buf = b.As<Napi::Buffer<uint8_t>>();
      l.restRef = Napi::Persistent(buf);
      l.rest = buf.Data();
      l.restCap = buf.Length();
    }
    links.push_back(std::move(l));
  }
  seqRef_ = Napi::Persistent(seq);
  seq_ = seq.Data();
  anyDestination_ = info[1].IsNull();
  routes_ = std::move(routes);
  links_ = std::move(links);
  flagsRef_ = Napi::Persistent(flags);
  flags_ = flags.Data();
  armed_ = !links_.empty();
  return env.Undefined();
}

// disarm(): sends nothing until armed again; lets go of the session's objects.
Napi::Value SendPath::Disarm(const Napi::CallbackInfo& info) {
  armed_ = false;
  links_.clear();
  routes_.clear();
  seqRef_.Reset();
  seq_ = nullptr;
  flagsRef_.Reset();
  flags_ = nullptr;
  return info.Env().Undefined();
}

// close(): disarmed for good. Idempotent.
Napi::Value SendPath::Close(const Napi::CallbackInfo& info) {
  Disarm(info);
  closed_ = true;
  onRest_.Reset();
  return info.Env().Undefined();
}

// FlowClassifier.decay, on the shared table.
void SendPath::Decay(double nowMs) {
  double last = flowState_[0];
  if (nowMs - last < kDecayMs) return;
  double periods = std::floor((nowMs - last) / kDecayMs);
  if (periods > 32) periods = 32;
  flowState_[0] = periods >= 32 ? nowMs : last + periods * kDecayMs;
  if (periods >= 32) {
    std::memset(flowBytes_, 0, kFlowBuckets * sizeof(uint32_t));
    return;
  }
  int shift = static_cast<int>(periods);
  for (size_t i = 0; i < kFlowBuckets; i++) flowBytes_[i] >>= shift;
}

// FlowClassifier.urgent's counting (its verdict matters only to a link's queue).
void SendPath::CountFlow(const uint8_t* ip, size_t len) {
  uint32_t h = FlowHash(ip, len, seed_) & (kFlowBuckets - 1);
  uint64_t sent = static_cast<uint64_t>(flowBytes_[h]) + len;
  flowBytes_[h] = sent > 0xffffffffu ? 0xffffffffu : static_cast<uint32_t>(sent);
}

// AllowedIps.route found this session: the destination lies in its routes.
bool SendPath::Routed(const uint8_t* ip, size_t len) const {
  if (len == 0) return false;
  int version = ip[0] >> 4;
  if (version == 4 && len >= 20) return anyDestination_ || Matches(routes_, ip + 16, 4);
  if (version == 6 && len >= 40) return anyDestination_ || Matches(routes_, ip + 24, 6);
  return false;
}

size_t SendPath::Send(uint8_t* arena, const uint32_t* lengths, size_t n, size_t headroom) {
  if (!armed_ || closed_ || headroom < kDataHeaderBytes) return 0;
  for (size_t k = 0; k < links_.size(); k++) {
    if (flags_[k] != 1 || links_[k].reader->Fd() < 0) return 0;
  }
  Decay(static_cast<double>(uv_hrtime()) / 1e6 - hrOffsetMs_);
  // One send(2) per frame and link (measured: one send of the whole run per link, whose rest is
  // then copied for TypeScript when a socket takes part of it, moved less and held more memory).
  std::vector<RestOf> rests;
  size_t off = 0;
  size_t taken = 0;
  for (; taken < n; taken++) {
    size_t len = lengths[taken];
    if (len <= vnetHdrBytes_) break;
    uint8_t* packet = arena + off + headroom;
    const uint8_t* ip = packet + vnetHdrBytes_;
    size_t ipLen = len - vnetHdrBytes_;
    if (!Routed(ip, ipLen)) break;
    double seq = seq_[0];
    if (!(seq >= 1 && seq < static_cast<double>(kMaxSeq))) break;
    seq_[0] = seq + 1;
    CountFlow(ip, ipLen);
    // The DATA header in the headroom in front of the packet.
    uint8_t* frame = packet - kDataHeaderBytes;
    WriteDataHeader(frame, static_cast<uint64_t>(seq), len);
    size_t frameLen = kDataHeaderBytes + len;
    counters_[kSentPackets]++;
    counters_[kSentBytes] += static_cast<double>(len);
    off += headroom + len;
    for (size_t k = 0; k < links_.size(); k++) {
      int32_t r = SendFrame(links_[k].reader->Fd(), frame, frameLen);
      if (r > 0 && static_cast<size_t>(r) == frameLen) {
        links_[k].counters[kLinkTxPackets]++;
        links_[k].counters[kLinkTxBytes] += static_cast<double>(frameLen);
        continue;
      }
      RestOf rest;
      rest.link = static_cast<int32_t>(k);
      rest.frame = frame;
      rest.len = frameLen;
      rest.sent = r;
      rests.push_back(rest);
    }
    if (!rests.empty()) {
      taken++;
      break;
    }
  }
  if (taken == n) counters_[kSentBatches]++;
  // JavaScript runs: nothing of this object is touched after it.
  if (!rests.empty()) Rest(rests);
  return taken;
}

// Never throws: an exception from the callback goes to 'uncaughtException'.
void SendPath::Rest(const std::vector<RestOf>& rests) noexcept {
  if (onRest_.IsEmpty()) return;
  napi_env rawEnv = env_;  // nothing of this object is read once JavaScript ran
  try {
    Napi::Env env(rawEnv);
    Napi::Array bufs = Napi::Array::New(env, rests.size());
    Napi::Int32Array info = Napi::Int32Array::New(env, rests.size() * 3);
    for (size_t i = 0; i < rests.size(); i++) {
      const RestOf& r = rests[i];
      const LinkOut& l = links_[static_cast<size_t>(r.link)];
      // Into the link's own buffer: a frame the socket takes only in part is common under load,
      // and a buffer of its own each time was garbage that only V8's collector gave back.
      if (l.rest != nullptr && l.restCap >= r.len) {
        std::memcpy(l.rest, r.frame, r.len);
        bufs.Set(static_cast<uint32_t>(i), env.Undefined());
      } else {
        bufs.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, r.frame, r.len));
      }
      info[i * 3] = r.link;
      info[i * 3 + 1] = r.sent;
      info[i * 3 + 2] = static_cast<int32_t>(r.len);
    }
    onRest_.MakeCallback(env.Global(), {bufs, info}, *asyncContext_);
  } catch (...) {
    ReportUncaught(rawEnv, CaughtAsJs(rawEnv, "send path callback"), "send path callback");
  }
}

}  // namespace dptcp
