#pragma once
#include <napi.h>
#include <uv.h>

namespace dptcp {

class SendPath;

// sizeof(struct virtio_net_hdr) of <linux/virtio_net.h>, which does not compile as C++.
constexpr int kVirtioNetHdrBytes = 10;

// A Linux TUN device (IFF_TUN | IFF_NO_PI). Syscalls only: opening and
// configuring the device, a batched non-blocking read loop driven by uv_poll on
// the addon's own event loop, and batched writes that stop at EAGAIN.
class Tun : public Napi::ObjectWrap<Tun> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Tun(const Napi::CallbackInfo& info);
  ~Tun() override;
  // The device's descriptor; -1 once closed (the native receive path writes to it).
  int Fd() const { return fd_; }
  // One read batch now, as a readable poll would run it, if the device is being
  // read (startReading): the native receive path calls it right after it wrote
  // packets, whose answers the kernel may have queued on the device during the
  // write (an echo reply, a TCP ACK). Needs a HandleScope; never throws
  // (failures go where a poll callback's go).
  void ReadNow() noexcept;

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetLastErrno(const Napi::CallbackInfo& info);
  Napi::Value GetReadDiscards(const Napi::CallbackInfo& info);
  Napi::Value GetReadsAfterWrite(const Napi::CallbackInfo& info);
  Napi::Value SetMtu(const Napi::CallbackInfo& info);
  Napi::Value AddAddress(const Napi::CallbackInfo& info);
  Napi::Value SetUp(const Napi::CallbackInfo& info);
  Napi::Value SetOffload(const Napi::CallbackInfo& info);
  Napi::Value StartReading(const Napi::CallbackInfo& info);
  Napi::Value StopReading(const Napi::CallbackInfo& info);
  Napi::Value SetArena(const Napi::CallbackInfo& info);
  Napi::Value WriteBatch(const Napi::CallbackInfo& info);
  Napi::Value WaitWritable(const Napi::CallbackInfo& info);
  Napi::Value SetSendPath(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnCleanup(void* arg);
  // Reads one batch and hands it on; returns how many packets it held.
  size_t HandleReadable();
  void HandleWritable();
  void UpdatePoll();
  void CloseInternal();
  void CallJs(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) noexcept;
  void ReportCaught() noexcept;

  int fd_ = -1;
  std::string name_;
  int lastErrno_ = 0;
  bool vnetHdr_ = false;
  // Reads dropped because their length cannot be a packet (see HandleReadable).
  uint64_t readDiscards_ = 0;
  // Batches ReadNow read that held packets.
  uint64_t readsAfterWrite_ = 0;
  napi_env env_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  bool reading_ = false;
  bool wantWritable_ = false;
  bool cleanupHookAdded_ = false;
  /** Set by the environment's cleanup hook: no callbacks into the addon from then on. */
  bool tearingDown_ = false;

  // Read arena: packet i lands at offset sum_{j<i}(headroom + len_j) + headroom,
  // leaving `headroom` bytes in front of every packet for the frame header.
  Napi::Reference<Napi::Buffer<uint8_t>> arenaRef_;
  Napi::Reference<Napi::Uint32Array> lengthsRef_;
  uint8_t* arena_ = nullptr;
  size_t arenaLen_ = 0;
  uint32_t* lengths_ = nullptr;
  size_t maxBatch_ = 0;
  size_t headroom_ = 0;
  size_t maxPacket_ = 0;
  Napi::FunctionReference onRead_;
  Napi::FunctionReference onError_;
  Napi::FunctionReference onWritable_;
  // The native send path (setSendPath): it takes the packets at the start of each batch it can send.
  Napi::ObjectReference sendRef_;
  SendPath* send_ = nullptr;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};

}  // namespace dptcp
