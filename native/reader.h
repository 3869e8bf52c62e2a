#pragma once
#include <napi.h>
#include <uv.h>

#include <memory>

#include "fastpath.h"

namespace dptcp {

// Reads a connected stream socket into one buffer that is reused for every
// read, in place of Node's stream reader (a fresh 64 KiB allocation per read,
// and the Readable machinery per chunk). Syscalls only: which socket, how
// big the buffer, and what the bytes mean is decided in TypeScript.
//
// It watches a dup() of the descriptor with uv_poll on the addon's own event
// loop, so the caller's socket object keeps its descriptor (and its writer).
// The connection stays open until both descriptors are closed: close() must
// follow the socket's own close.
class SocketReader : public Napi::ObjectWrap<SocketReader> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit SocketReader(const Napi::CallbackInfo& info);
  ~SocketReader() override;
  // The reader's own descriptor of the socket (a dup); -1 once closed. The native send path sends on it.
  int Fd() const { return fd_; }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value GetReads(const Napi::CallbackInfo& info);
  Napi::Value SetFast(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnCleanup(void* arg);
  void HandleReadable();
  bool DropCopies();
  void Finish(int err, napi_value error = nullptr) noexcept;
  void ReportCaught() noexcept;
  void CloseInternal();
  napi_value CallJs(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) noexcept;
  void DropFast();
  bool CallOnData(size_t n, size_t start);
  size_t DeliverNative(const uint8_t* p, size_t n);
  void StartCarry(size_t pos, size_t got, size_t frameBytes);
  bool DropCarried(const uint8_t* h, size_t rest);
  bool FinishCarry();
  bool FlushCarry();
  void DoneCarry();
  void MarkHeard();

  int fd_ = -1;
  napi_env env_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  bool cleanupHookAdded_ = false;
  bool ended_ = false;
  /** onEnd was called (or about to be): nothing more goes to it. */
  bool endCalled_ = false;
  bool tearingDown_ = false;
  uint64_t reads_ = 0;
  Napi::Reference<Napi::Buffer<uint8_t>> bufRef_;
  uint8_t* buf_ = nullptr;
  size_t bufLen_ = 0;
  Napi::FunctionReference onData_;
  Napi::FunctionReference onEnd_;
  // The session's native receive path (setFast), this link's counters for it, the frame limit.
  // jsNeed_: what the TypeScript decoder needs to finish the frame it holds part of, as onData
  // said: 0 nothing (the next byte starts a frame), -1 it cannot say (part of a length field).
  // The pointers are taken once, in setFast: per read, ObjectWrap::Unwrap (a private-symbol
  // lookup) and a typed array's info cost microseconds on the cold cache an idle link's read
  // meets, on the round trip's path. The references keep what they point into alive.
  Napi::ObjectReference fastRef_;
  FastPath* fast_ = nullptr;
  Napi::Reference<Napi::Float64Array> countersRef_;
  double* counters_ = nullptr;
  size_t maxFrameBytes_ = 0;
  int64_t jsNeed_ = -1;
  // A DATA frame a read ended inside of, while the native path was taking the frames: its bytes so
  // far (carryHave_ of carryWant_), in a buffer of this reader's own (the read buffer is shared by
  // every link, and a frame may be longer than it). The next reads finish it here, and it goes
  // the native way as a whole frame, not through the decoder; carryWant_ 0: none held.
  // Kept for the next frame up to this size (an offload packet's frame); a longer one is freed.
  static constexpr size_t kCarryKeptBytes = 128 * 1024;
  std::unique_ptr<uint8_t[]> carry_;
  size_t carryCap_ = 0;
  size_t carryHave_ = 0;
  size_t carryWant_ = 0;
  // The last DATA frame the native path judged on this link was a copy another link had
  // delivered (this link lags behind it): the next frames' headers are read first (MSG_PEEK),
  // and a copy already delivered is dropped in the kernel (MSG_TRUNC) instead of copied out
  // (DropCopies). dropLeft_: what is still to drop of the frame being dropped (dropped even if
  // the native path is taken away meanwhile: the decoder must not get the rest of a frame).
  bool lagging_ = false;
  size_t dropLeft_ = 0;
  // Frames dropped unread in one poll callback at most, as reads: the poll comes back.
  static constexpr int kMaxDropsPerTurn = 16;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};

}  // namespace dptcp
