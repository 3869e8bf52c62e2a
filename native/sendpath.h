#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "fastpath.h"

namespace dptcp {

class SocketReader;

// Where the tunnel's counters sit in the Float64Array it hands the send path
// (src/core/fast-path.ts has the same list): packets and bytes read from the
// TUN and sent here, and the batches it took whole (none of their packets left for routeBatch).
enum SendCounter { kSentPackets = 0, kSentBytes, kSentBatches, kSendCounters };
// A link's: whole frames and bytes this path sent on it.
enum SendLinkCounter { kLinkTxPackets = 0, kLinkTxBytes, kSendLinkCounters };

// The flow table of src/core/flows.ts (FlowClassifier), shared with it: the
// byte counters per bucket and the time of their last halving. The send path
// counts its packets there as TypeScript counts its own, so which flows are
// sparse does not depend on which path carried them.
constexpr size_t kFlowBuckets = 4096;
// flowHash of src/core/flows.ts, bit for bit (the IP packet at p, `len` bytes).
uint32_t FlowHash(const uint8_t* p, size_t len, int32_t seed);
// flowHash(packet, seed): FlowHash, for the tests.
Napi::Value FlowHashJs(const Napi::CallbackInfo& info);

// The send path of the tunnel's one session, in C++: the packets at the start
// of a TUN batch are numbered, framed in place (a DATA header in the batch's
// headroom) and sent with one send(2) per frame and link, as Session.fanOut
// sends them when every link takes writes at once, with no JavaScript. It
// stops at the first packet it does not take — any when a link does not take
// writes at once (TypeScript says which, per link, in `flags`), a destination
// outside the session's routes — and that packet
// and the rest of the batch go to TypeScript's routeBatch, in order. A frame a
// socket takes only in part, or not at all, goes to the link in TypeScript
// (onRest), which keeps it ahead of anything else; the rest of the batch then
// goes to TypeScript too. Whether and for which session and links it is armed
// is decided in TypeScript (src/core/fast-path.ts).
class SendPath : public Napi::ObjectWrap<SendPath> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit SendPath(const Napi::CallbackInfo& info);
  ~SendPath() override;

  // Takes the packets at the start of a batch (Tun's read arena layout: packet
  // i `headroom` bytes after packet i-1) that it can send; returns how many.
  // May call into JavaScript (onRest); it returns right after.
  size_t Send(uint8_t* arena, const uint32_t* lengths, size_t n, size_t headroom);

 private:
  // A frame a link did not take whole: it took `sent` bytes of it (0 none, -errno: the send failed).
  struct RestOf {
    int32_t link;
    const uint8_t* frame;
    size_t len;
    int32_t sent;
  };
  struct LinkOut {
    Napi::ObjectReference readerRef;
    SocketReader* reader;
    Napi::Reference<Napi::Float64Array> countersRef;
    double* counters;
    // The link's buffer for a frame it did not take whole (see Rest); none: a copy of its own.
    Napi::Reference<Napi::Buffer<uint8_t>> restRef;
    uint8_t* rest = nullptr;
    size_t restCap = 0;
  };

  Napi::Value Arm(const Napi::CallbackInfo& info);
  Napi::Value Disarm(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Decay(double nowMs);
  void CountFlow(const uint8_t* ip, size_t len);
  bool Routed(const uint8_t* ip, size_t len) const;
  void Rest(const std::vector<RestOf>& rests) noexcept;

  napi_env env_ = nullptr;
  size_t vnetHdrBytes_ = 0;
  Napi::Reference<Napi::Float64Array> countersRef_;
  double* counters_ = nullptr;
  Napi::Reference<Napi::Uint32Array> flowBytesRef_;
  uint32_t* flowBytes_ = nullptr;
  Napi::Reference<Napi::Float64Array> flowStateRef_;
  double* flowState_ = nullptr;
  int32_t seed_ = 0;
  double hrOffsetMs_ = 0;
  Napi::FunctionReference onRest_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
  // Armed: the session's sequence counter, routes, links and their flags.
  bool armed_ = false;
  Napi::Reference<Napi::Float64Array> seqRef_;
  double* seq_ = nullptr;
  bool anyDestination_ = false;
  std::vector<SourceNet> routes_;
  std::vector<LinkOut> links_;
  Napi::Reference<Napi::Uint8Array> flagsRef_;
  uint8_t* flags_ = nullptr;
  bool closed_ = false;
};

}  // namespace dptcp
