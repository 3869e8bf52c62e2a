#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

namespace dptcp {

// Receive-side duplicate elimination of one session, exact on the sender's
// sequence numbers (docs/protocol.md, "Elimination"). The algorithm of
// src/core/eliminator.ts, which stays its specification and is used where the
// addon cannot load; test/unit/eliminator-native.test.ts runs both on the same
// sequences and compares every verdict. One table serves the session's
// TypeScript path and the native receive path (fastpath.h), so a copy is
// judged the same whichever path it takes. Sequence numbers are at most 2^53-1
// (the caller checks); when the time bound moves is decided in TypeScript (tick).
class Eliminator : public Napi::ObjectWrap<Eliminator> {
 public:
  enum Verdict { kAccept = 0, kDuplicate = 1, kStale = 2 };
  static constexpr int kCheckpointsPerTtl = 8;

  static Napi::Function Init(Napi::Env env);
  explicit Eliminator(const Napi::CallbackInfo& info);

  Verdict Check(int64_t seq, bool exact);
  // What Check(seq, false) would say is a duplicate or stale, without judging it (nothing changes).
  bool Seen(int64_t seq) const;

 private:
  Napi::Value JsCheck(const Napi::CallbackInfo& info);
  Napi::Value JsTick(const Napi::CallbackInfo& info);
  Napi::Value JsReset(const Napi::CallbackInfo& info);
  Napi::Value GetHighest(const Napi::CallbackInfo& info);
  Napi::Value GetFloor(const Napi::CallbackInfo& info);
  Napi::Value GetAccepted(const Napi::CallbackInfo& info);
  Napi::Value GetDuplicates(const Napi::CallbackInfo& info);
  Napi::Value GetStale(const Napi::CallbackInfo& info);
  Napi::Value GetStateBytes(const Napi::CallbackInfo& info);
  Napi::Value GetWindowPackets(const Napi::CallbackInfo& info);
  Napi::Value GetTtlMs(const Napi::CallbackInfo& info);
  void Clear(int64_t from, int64_t n);

  int64_t window_ = 1;
  int64_t mask_ = 0;
  double ttlMs_ = 1;
  std::vector<uint32_t> bits_;
  int64_t top_ = 0;
  // Numbers at or below are stale: the higher of the ring's bound and the time bound.
  int64_t floor_ = 0;
  // The ring's bound alone (top - window): above it every number's bit is exact.
  int64_t windowFloor_ = 0;
  // Checkpoints (time, top), oldest first, in a ring.
  double cpTime_[kCheckpointsPerTtl + 2] = {};
  int64_t cpTop_[kCheckpointsPerTtl + 2] = {};
  int cpHead_ = 0;
  int cpCount_ = 0;
  double lastCheckpointMs_ = 0;
  bool anyCheckpoint_ = false;
  double accepted_ = 0;
  double duplicates_ = 0;
  double stale_ = 0;
};

}  // namespace dptcp
