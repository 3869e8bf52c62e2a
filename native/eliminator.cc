#include "eliminator.h"

#include <algorithm>
#include <cmath>

#include "tags.h"

namespace dptcp {

namespace {
// 2^53 - 1: the largest sequence number (Number.MAX_SAFE_INTEGER).
constexpr double kMaxSeq = 9007199254740991.0;
constexpr int kCheckpoints = Eliminator::kCheckpointsPerTtl + 2;
}  // namespace

Napi::Function Eliminator::Init(Napi::Env env) {
  return DefineClass(env, "Eliminator",
                     {
                         InstanceMethod<&Eliminator::JsCheck>("check"),
                         InstanceMethod<&Eliminator::JsTick>("tick"),
                         InstanceMethod<&Eliminator::JsReset>("reset"),
                         InstanceAccessor<&Eliminator::GetHighest>("highest"),
                         InstanceAccessor<&Eliminator::GetFloor>("floorSeq"),
                         InstanceAccessor<&Eliminator::GetAccepted>("accepted"),
                         InstanceAccessor<&Eliminator::GetDuplicates>("duplicates"),
                         InstanceAccessor<&Eliminator::GetStale>("stale"),
                         InstanceAccessor<&Eliminator::GetStateBytes>("stateBytes"),
                         InstanceAccessor<&Eliminator::GetWindowPackets>("windowPackets"),
                         InstanceAccessor<&Eliminator::GetTtlMs>("ttlMs"),
                     });
}

// new Eliminator(windowPackets, ttlMs): the ring is windowPackets rounded up to a power of two.
Eliminator::Eliminator(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Eliminator>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "new Eliminator(windowPackets, ttlMs) takes two numbers");
  }
  double window = info[0].As<Napi::Number>().DoubleValue();
  double ttl = info[1].As<Napi::Number>().DoubleValue();
  // As the TypeScript table: NaN fails both tests. At most 2^30 packets (128 MiB of bits).
  if (!(window >= 1) || !(ttl > 0) || window > 1073741824.0) {
    throw Napi::RangeError::New(env, "window and TTL must be positive (window at most 2^30)");
  }
  int64_t size = 1;
  while (static_cast<double>(size) < window) size *= 2;
  window_ = size;
  mask_ = size - 1;
  ttlMs_ = ttl;
  bits_.assign(static_cast<size_t>(std::max<int64_t>(1, size >> 5)), 0);
  TagObject(env, info.This().As<Napi::Object>(), &kEliminatorTag);
}

Eliminator::Verdict Eliminator::Check(int64_t seq, bool exact) {
  if (seq <= (exact ? windowFloor_ : floor_)) {
    stale_++;
    return kStale;
  }
  int64_t slot = seq & mask_;
  size_t word = static_cast<size_t>(slot >> 5);
  uint32_t bit = 1u << (slot & 31);
  if (seq > top_) {
    // The slots of (top, seq] last held numbers at or below seq - window: below the new floor.
    Clear(top_ + 1, std::min(seq - top_, window_));
    top_ = seq;
    int64_t lowest = seq - window_;
    if (lowest > windowFloor_) windowFloor_ = lowest;
    if (lowest > floor_) floor_ = lowest;
  } else if ((bits_[word] & bit) != 0) {
    duplicates_++;
    return kDuplicate;
  }
  bits_[word] |= bit;
  accepted_++;
  return kAccept;
}

bool Eliminator::Seen(int64_t seq) const {
  if (seq <= floor_) return true;
  if (seq > top_) return false;
  int64_t slot = seq & mask_;
  return (bits_[static_cast<size_t>(slot >> 5)] & (1u << (slot & 31))) != 0;
}

// Clears n slots from the slot of `from` on, wrapping around the ring; whole words where it can.
void Eliminator::Clear(int64_t from, int64_t n) {
  if (n >= window_) {
    std::fill(bits_.begin(), bits_.end(), 0);
    return;
  }
  int64_t slot = from & mask_;
  while (n > 0) {
    if ((slot & 31) == 0 && n >= 32) {
      int64_t words = std::min(n >> 5, (window_ - slot) >> 5);
      std::fill(bits_.begin() + (slot >> 5), bits_.begin() + (slot >> 5) + words, 0);
      slot = (slot + words * 32) & mask_;
      n -= words * 32;
      continue;
    }
    bits_[static_cast<size_t>(slot >> 5)] &= ~(1u << (slot & 31));
    slot = (slot + 1) & mask_;
    n--;
  }
}

// check(seq, exact): 0 accept, 1 duplicate, 2 stale (Verdict of eliminator.ts).
Napi::Value Eliminator::JsCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "check(seq, exact) takes a number");
  double seq = info[0].As<Napi::Number>().DoubleValue();
  if (!(seq >= 1) || seq > kMaxSeq || std::floor(seq) != seq) {
    throw Napi::RangeError::New(env, "a sequence number is an integer from 1 to 2^53-1");
  }
  bool exact = info.Length() > 1 && info[1].ToBoolean().Value();
  return Napi::Number::New(env, Check(static_cast<int64_t>(seq), exact));
}

// tick(nowMs): advances the time bound (eliminator.ts tick); nowMs is monotonic.
Napi::Value Eliminator::JsTick(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "tick(nowMs) takes a number");
  double now = info[0].As<Napi::Number>().DoubleValue();
  while (cpCount_ > 0 && now - cpTime_[cpHead_] >= ttlMs_) {
    if (cpTop_[cpHead_] > floor_) floor_ = cpTop_[cpHead_];
    cpHead_ = (cpHead_ + 1) % kCheckpoints;
    cpCount_--;
  }
  if ((!anyCheckpoint_ || now - lastCheckpointMs_ >= ttlMs_ / kCheckpointsPerTtl) && cpCount_ < kCheckpoints) {
    int i = (cpHead_ + cpCount_) % kCheckpoints;
    cpTime_[i] = now;
    cpTop_[i] = top_;
    cpCount_++;
    lastCheckpointMs_ = now;
    anyCheckpoint_ = true;
  }
  return env.Undefined();
}

// reset(): forget everything (the sender started a new sequence space). The counters stay.
Napi::Value Eliminator::JsReset(const Napi::CallbackInfo& info) {
  std::fill(bits_.begin(), bits_.end(), 0);
  top_ = 0;
  floor_ = 0;
  windowFloor_ = 0;
  cpHead_ = 0;
  cpCount_ = 0;
  anyCheckpoint_ = false;
  return info.Env().Undefined();
}

Napi::Value Eliminator::GetHighest(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(top_));
}
Napi::Value Eliminator::GetFloor(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(floor_));
}
Napi::Value Eliminator::GetAccepted(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), accepted_); }
Napi::Value Eliminator::GetDuplicates(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), duplicates_);
}
Napi::Value Eliminator::GetStale(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), stale_); }
Napi::Value Eliminator::GetStateBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(bits_.size() * 4 + sizeof(cpTime_) + sizeof(cpTop_)));
}
Napi::Value Eliminator::GetWindowPackets(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(window_));
}
Napi::Value Eliminator::GetTtlMs(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), ttlMs_); }

}  // namespace dptcp
