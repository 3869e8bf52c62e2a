#include "tun.h"
#include "sendpath.h"
#include "tags.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <exception>

#include "errors.h"
#include "watch.h"

namespace dptcp {

namespace {

// struct in6_ifreq from <linux/ipv6.h>; declared here because that header
// clashes with glibc's <netinet/in.h> definitions of in6_addr.
struct In6Ifreq {
  struct in6_addr addr;
  uint32_t prefixlen;
  int ifindex;
};

// A socket used only as a handle for SIOCSIF* ioctls, closed on scope exit.
class IoctlSocket {
 public:
  IoctlSocket(Napi::Env env, int family) {
    fd_ = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw ErrnoError(env, errno, "socket", "opening a control socket");
  }
  ~IoctlSocket() { close(fd_); }
  int fd() const { return fd_; }

 private:
  int fd_;
};

void FillIfreq(struct ifreq* ifr, const std::string& name) {
  memset(ifr, 0, sizeof(*ifr));
  strncpy(ifr->ifr_name, name.c_str(), IFNAMSIZ - 1);
}

}  // namespace

Napi::Function Tun::Init(Napi::Env env) {
  return DefineClass(env, "Tun",
                     {
                         InstanceAccessor<&Tun::GetName>("name"),
                         InstanceAccessor<&Tun::GetFd>("fd"),
                         InstanceAccessor<&Tun::GetLastErrno>("lastErrno"),
                         InstanceAccessor<&Tun::GetReadDiscards>("readDiscards"),
                         InstanceAccessor<&Tun::GetReadsAfterWrite>("readsAfterWrite"),
                         InstanceMethod<&Tun::SetMtu>("setMtu"),
                         InstanceMethod<&Tun::AddAddress>("addAddress"),
                         InstanceMethod<&Tun::SetUp>("setUp"),
                         InstanceMethod<&Tun::SetOffload>("setOffload"),
                         InstanceMethod<&Tun::StartReading>("startReading"),
                         InstanceMethod<&Tun::StopReading>("stopReading"),
                         InstanceMethod<&Tun::SetArena>("setArena"),
                         InstanceMethod<&Tun::WriteBatch>("writeBatch"),
                         InstanceMethod<&Tun::WaitWritable>("waitWritable"),
                         InstanceMethod<&Tun::SetSendPath>("setSendPath"),
                         InstanceMethod<&Tun::Close>("close"),
                     });
}

// new Tun(name, vnetHdr): opens /dev/net/tun and attaches (creating) the named
// device. With vnetHdr every packet read or written starts with a struct
// virtio_net_hdr (10 bytes), which is what carries GSO/checksum offload state.
// The device is not persistent: closing the fd removes it together with every
// address and route the kernel attached to it.
Tun::Tun(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tun>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "new Tun(name, vnetHdr) takes the device name as a string");
  }
  bool vnetHdr = info.Length() > 1 && info[1].ToBoolean().Value();
  std::string requested = info[0].As<Napi::String>().Utf8Value();
  if (requested.size() >= IFNAMSIZ) {
    throw Napi::RangeError::New(env, "device name '" + requested + "' is longer than " +
                                         std::to_string(IFNAMSIZ - 1) + " characters");
  }
  // Before anything that must be released: if this throws, nothing is held.
  asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "dptcp:Tun");
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", "opening /dev/net/tun");
  struct ifreq ifr;
  FillIfreq(&ifr, requested);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, err, "ioctl(TUNSETIFF)", "creating TUN device '" + requested + "'");
  }
  if (vnetHdr) {
    int size = kVirtioNetHdrBytes;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) != 0) {
      int err = errno;
      close(fd);
      throw ErrnoError(env, err, "ioctl(TUNSETVNETHDRSZ)", "setting the virtio header size of '" + requested + "'");
    }
  }
  fd_ = fd;
  vnetHdr_ = vnetHdr;
  name_ = ifr.ifr_name;
  if (napi_add_env_cleanup_hook(env, OnCleanup, this) == napi_ok) cleanupHookAdded_ = true;
  TagObject(env, info.This().As<Napi::Object>(), &kTunTag);
}

Tun::~Tun() { CloseInternal(); }

void Tun::OnCleanup(void* arg) {
  Tun* self = static_cast<Tun*>(arg);
  self->cleanupHookAdded_ = false;  // the hook is being run; removing it now is not allowed
  self->tearingDown_ = true;
  self->CloseInternal();
}

Napi::Value Tun::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
Napi::Value Tun::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
Napi::Value Tun::GetLastErrno(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), lastErrno_);
}
Napi::Value Tun::GetReadDiscards(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(readDiscards_));
}
Napi::Value Tun::GetReadsAfterWrite(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(readsAfterWrite_));
}

Napi::Value Tun::SetMtu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "setMtu(mtu) takes a number");
  IoctlSocket s(env, AF_INET);
  struct ifreq ifr;
  FillIfreq(&ifr, name_);
  ifr.ifr_mtu = info[0].As<Napi::Number>().Int32Value();
  if (ioctl(s.fd(), SIOCSIFMTU, &ifr) != 0) {
    throw ErrnoError(env, errno, "ioctl(SIOCSIFMTU)", "setting the MTU of " + name_);
  }
  return env.Undefined();
}

// addAddress(address, prefixLength): IPv4 through SIOCSIFADDR + SIOCSIFNETMASK,
// IPv6 through SIOCSIFADDR on an AF_INET6 socket with an in6_ifreq.
Napi::Value Tun::AddAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "addAddress(address, prefixLength) takes a string and a number");
  }
  std::string addr = info[0].As<Napi::String>().Utf8Value();
  int prefix = info[1].As<Napi::Number>().Int32Value();
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, addr.c_str(), &a4) == 1) {
    if (prefix < 0 || prefix > 32) throw Napi::RangeError::New(env, "IPv4 prefix length must be 0..32");
    IoctlSocket s(env, AF_INET);
    struct ifreq ifr;
    FillIfreq(&ifr, name_);
    struct sockaddr_in* sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_addr);
    sin->sin_family = AF_INET;
    sin->sin_addr = a4;
    if (ioctl(s.fd(), SIOCSIFADDR, &ifr) != 0) {
      throw ErrnoError(env, errno, "ioctl(SIOCSIFADDR)", "adding " + addr + " to " + name_);
    }
    FillIfreq(&ifr, name_);
    sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_netmask);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = prefix == 0 ? 0 : htonl(~((1u << (32 - prefix)) - 1) & 0xffffffffu);
    if (prefix == 32) sin->sin_addr.s_addr = 0xffffffffu;
    if (ioctl(s.fd(), SIOCSIFNETMASK, &ifr) != 0) {
      throw ErrnoError(env, errno, "ioctl(SIOCSIFNETMASK)", "setting /" + std::to_string(prefix) + " on " + name_);
    }
  } else if (inet_pton(AF_INET6, addr.c_str(), &a6) == 1) {
    if (prefix < 0 || prefix > 128) throw Napi::RangeError::New(env, "IPv6 prefix length must be 0..128");
    IoctlSocket s(env, AF_INET6);
    struct ifreq ifr;
    FillIfreq(&ifr, name_);
    if (ioctl(s.fd(), SIOCGIFINDEX, &ifr) != 0) {
      throw ErrnoError(env, errno, "ioctl(SIOCGIFINDEX)", "looking up " + name_);
    }
    In6Ifreq req;
    memset(&req, 0, sizeof(req));
    req.addr = a6;
    req.prefixlen = static_cast<uint32_t>(prefix);
    req.ifindex = ifr.ifr_ifindex;
    if (ioctl(s.fd(), SIOCSIFADDR, &req) != 0) {
      throw ErrnoError(env, errno, "ioctl(SIOCSIFADDR)", "adding " + addr + " to " + name_);
    }
  } else {
    throw Napi::TypeError::New(env, "'" + addr + "' is not an IPv4 or IPv6 address");
  }
  return env.Undefined();
}

Napi::Value Tun::SetUp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  bool up = info.Length() < 1 || info[0].ToBoolean().Value();
  IoctlSocket s(env, AF_INET);
  struct ifreq ifr;
  FillIfreq(&ifr, name_);
  if (ioctl(s.fd(), SIOCGIFFLAGS, &ifr) != 0) {
    throw ErrnoError(env, errno, "ioctl(SIOCGIFFLAGS)", "reading the flags of " + name_);
  }
  if (up) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  } else {
    ifr.ifr_flags &= ~IFF_UP;
  }
  if (ioctl(s.fd(), SIOCSIFFLAGS, &ifr) != 0) {
    throw ErrnoError(env, errno, "ioctl(SIOCSIFFLAGS)", "bringing " + name_ + (up ? " up" : " down"));
  }
  return env.Undefined();
}

// setOffload(flags): TUNSETOFFLOAD with TUN_F_* flags (which ones is policy, in TS).
Napi::Value Tun::SetOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "setOffload(flags) takes a number");
  unsigned int flags = info[0].As<Napi::Number>().Uint32Value();
  if (ioctl(fd_, TUNSETOFFLOAD, flags) != 0) {
    throw ErrnoError(env, errno, "ioctl(TUNSETOFFLOAD)", "enabling offloads on " + name_);
  }
  return env.Undefined();
}

// startReading(arena, lengths, headroom, maxPacket, onRead, onError)
// onRead(count) runs once per batch; the packets are in `arena` (see tun.h)
// and must be consumed before onRead returns: the arena is reused.
Napi::Value Tun::StartReading(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  if (info.Length() < 6 || !info[0].IsBuffer() || !info[1].IsTypedArray() || !info[2].IsNumber() ||
      !info[3].IsNumber() || !info[4].IsFunction() || !info[5].IsFunction()) {
    throw Napi::TypeError::New(env,
                               "startReading(arena: Buffer, lengths: Uint32Array, headroom, maxPacket, onRead, onError)");
  }
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint32_array) throw Napi::TypeError::New(env, "lengths must be a Uint32Array");
  Napi::Buffer<uint8_t> arena = info[0].As<Napi::Buffer<uint8_t>>();
  Napi::Uint32Array lengths = ta.As<Napi::Uint32Array>();
  size_t headroom = info[2].As<Napi::Number>().Uint32Value();
  size_t maxPacket = info[3].As<Napi::Number>().Uint32Value();
  if (maxPacket == 0 || lengths.ElementLength() == 0 || arena.Length() < headroom + maxPacket) {
    throw Napi::RangeError::New(env, "the read arena must hold at least one packet of maxPacket bytes plus headroom");
  }
  arenaRef_ = Napi::Persistent(arena);
  lengthsRef_ = Napi::Persistent(lengths);
  arena_ = arena.Data();
  arenaLen_ = arena.Length();
  lengths_ = lengths.Data();
  maxBatch_ = lengths.ElementLength();
  headroom_ = headroom;
  maxPacket_ = maxPacket;
  onRead_ = Napi::Persistent(info[4].As<Napi::Function>());
  onError_ = Napi::Persistent(info[5].As<Napi::Function>());
  reading_ = true;
  UpdatePoll();
  return env.Undefined();
}

// setArena(arena): the next batches land in this buffer instead (the caller
// keeps the previous one while it still needs what it holds). Same layout.
Napi::Value Tun::SetArena(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!reading_) throw Napi::Error::New(env, "setArena: not reading");
  if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "setArena(arena: Buffer)");
  Napi::Buffer<uint8_t> arena = info[0].As<Napi::Buffer<uint8_t>>();
  if (arena.Length() < headroom_ + maxPacket_) {
    throw Napi::RangeError::New(env, "the read arena must hold at least one packet of maxPacket bytes plus headroom");
  }
  arenaRef_ = Napi::Persistent(arena);
  arena_ = arena.Data();
  arenaLen_ = arena.Length();
  return env.Undefined();
}

Napi::Value Tun::StopReading(const Napi::CallbackInfo& info) {
  reading_ = false;
  if (fd_ >= 0) UpdatePoll();
  return info.Env().Undefined();
}

// writeBatch(packets, start): writes packets[start..] in order and returns the
// index of the first packet not written. When that is short of the end,
// `lastErrno` says why (EAGAIN: wait for waitWritable; anything else: that
// packet was refused by the kernel). What to do about it is the caller's call.
Napi::Value Tun::WriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "writeBatch(packets: Buffer[], start: number)");
  }
  Napi::Array packets = info[0].As<Napi::Array>();
  uint32_t n = packets.Length();
  uint32_t i = info[1].As<Napi::Number>().Uint32Value();
  lastErrno_ = 0;
  while (i < n) {
    Napi::Value v = packets.Get(i);
    if (!v.IsBuffer()) throw Napi::TypeError::New(env, "writeBatch: packets[" + std::to_string(i) + "] is not a Buffer");
    Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
    ssize_t r = write(fd_, b.Data(), b.Length());
    if (r < 0) {
      if (errno == EINTR) continue;
      lastErrno_ = errno;
      break;
    }
    i++;
  }
  return Napi::Number::New(env, i);
}

// waitWritable(cb): cb() runs once, the next time the device accepts writes.
Napi::Value Tun::WaitWritable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) throw Napi::Error::New(env, "TUN device is closed");
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "waitWritable(cb)");
  onWritable_ = Napi::Persistent(info[0].As<Napi::Function>());
  wantWritable_ = true;
  UpdatePoll();
  return env.Undefined();
}

Napi::Value Tun::Close(const Napi::CallbackInfo& info) {
  CloseInternal();
  return info.Env().Undefined();
}

void Tun::UpdatePoll() {
  int events = (reading_ ? UV_READABLE : 0) | (wantWritable_ ? UV_WRITABLE : 0);
  if (poll_ == nullptr) {
    if (events == 0) return;
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env_, &loop) != napi_ok) {
      throw Napi::Error::New(Napi::Env(env_), "cannot get the event loop of this Node environment");
    }
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(loop, poll_, fd_);
    if (rc != 0) {
      delete poll_;
      poll_ = nullptr;
      throw ErrnoError(Napi::Env(env_), -rc, "uv_poll_init", "watching " + name_);
    }
    poll_->data = this;
  }
  if (events == 0) {
    WatchStop(poll_);
  } else {
    int rc = WatchStart(poll_, events, OnPoll);
    if (rc != 0) throw ErrnoError(Napi::Env(env_), -rc, "uv_poll_start", "watching " + name_);
  }
}

// Runs from libuv, with no JavaScript below: nothing is thrown out of here
// (errors.h). One HandleScope covers everything, UpdatePoll's errors included,
// and whatever is thrown goes to onError as a failed poll's error does.
void Tun::OnPoll(uv_poll_t* handle, int status, int events) {
  Tun* self = static_cast<Tun*>(handle->data);
  if (self == nullptr || self->fd_ < 0) return;
  napi_handle_scope scope = nullptr;
  if (napi_open_handle_scope(self->env_, &scope) != napi_ok) {
    ReportUncaught(self->env_, nullptr, "TUN poll callback");
    return;
  }
  try {
    if (status < 0) {
      Napi::Env env(self->env_);
      Napi::Error e = ErrnoError(env, -status, "uv_poll", "waiting for " + self->name_);
      // With no onError (waitWritable without startReading) nobody else would hear of it.
      if (self->onError_.IsEmpty()) ReportUncaught(self->env_, e.Value(), "TUN poll callback");
      else self->CallJs(self->onError_, {e.Value()});
    } else {
      if ((events & UV_WRITABLE) && self->wantWritable_) self->HandleWritable();
      if ((events & UV_READABLE) && self->reading_ && self->fd_ >= 0) self->HandleReadable();
    }
  } catch (...) {
    self->ReportCaught();
  }
  napi_close_handle_scope(self->env_, scope);
}

void Tun::ReadNow() noexcept {
  if (!reading_ || fd_ < 0 || tearingDown_) return;
  try {
    if (HandleReadable() > 0) readsAfterWrite_++;
  } catch (...) {
    ReportCaught();
  }
}

// Inside a catch block of a libuv callback: what was caught goes to onError,
// the caller's (as for a read error); to 'uncaughtException' if there is no
// onError (waitWritable without startReading). Dropped once the device is
// closed, as a read error is: the caller closed it, nothing is left to fail.
void Tun::ReportCaught() noexcept {
  char w[64];
  snprintf(w, sizeof(w), "TUN device %s", name_.c_str());
  napi_value err = CaughtAsJs(env_, w);
  if (fd_ < 0) return;
  if (err != nullptr && !onError_.IsEmpty()) {
    CallJs(onError_, {err});
  } else {
    ReportUncaught(env_, err, w);
  }
}

// One batch per poll callback: the poll is level-triggered, so anything left
// in the device queue comes back on the next loop turn, after the sockets had
// their turn.
//
// A read that returns no more than the virtio_net_hdr (or nothing, without
// one) carries no packet, and one that claims more than the maxPacket_ bytes
// it was given would put the next packet, and lengths_, past the arena: the
// kernel does neither, and neither is handed on. Such reads count toward the
// batch all the same, so a run of them cannot keep the loop here.
size_t Tun::HandleReadable() {
  const size_t minRead = vnetHdr_ ? static_cast<size_t>(kVirtioNetHdrBytes) + 1 : 1;
  size_t off = 0;
  size_t n = 0;
  size_t reads = 0;
  int err = 0;
  while (reads < maxBatch_ && off + headroom_ + maxPacket_ <= arenaLen_) {
    ssize_t r = read(fd_, arena_ + off + headroom_, maxPacket_);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) err = errno;
      break;
    }
    reads++;
    size_t got = static_cast<size_t>(r);
    if (got < minRead || got > maxPacket_) {
      readDiscards_++;
      continue;
    }
    lengths_[n++] = static_cast<uint32_t>(got);
    off += headroom_ + got;
  }
  Napi::Env env(env_);  // OnPoll holds the HandleScope
  // The send path takes what it can from the start; JavaScript gets the rest (onRead(count, start)).
  size_t start = n > 0 && send_ != nullptr ? send_->Send(arena_, lengths_, n, headroom_) : 0;
  if (start < n) {
    CallJs(onRead_, {Napi::Number::New(env, static_cast<double>(n)), Napi::Number::New(env, static_cast<double>(start))});
  }
  if (err != 0 && fd_ >= 0) {
    // EBADFD: the device went away under us; the caller decides what that means.
    CallJs(onError_, {ErrnoError(env, err, "read", "reading from " + name_).Value()});
  }
  return n;
}

// Stops asking for writability before the callback, which may ask again. If
// that fails the writer is owed its callback all the same; the failure is
// rethrown after it, for OnPoll to report.
void Tun::HandleWritable() {
  wantWritable_ = false;
  std::exception_ptr failed;
  try {
    UpdatePoll();
  } catch (...) {
    failed = std::current_exception();
  }
  CallJs(onWritable_, {});
  if (failed) std::rethrow_exception(failed);
}

// Never throws: an exception thrown by the callback is handed to
// 'uncaughtException', as Node does for its own callbacks; so is a failure to
// call it at all.
void Tun::CallJs(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) noexcept {
  if (fn.IsEmpty()) return;
  try {
    Napi::Env env(env_);
    fn.MakeCallback(env.Global(), args, *asyncContext_);
  } catch (...) {
    // Nothing above us can catch it.
    ReportUncaught(env_, CaughtAsJs(env_, "TUN callback"), "TUN callback");
  }
}

// setSendPath(path: SendPath | null): the native send path that takes the
// packets at the start of each batch it can send (sendpath.h); null: none,
// every packet goes to onRead.
Napi::Value Tun::SetSendPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || (!info[0].IsNull() && !HasTag(env, info[0], &kSendPathTag))) {
    throw Napi::TypeError::New(env, "setSendPath(path: SendPath | null)");
  }
  if (info[0].IsNull()) {
    send_ = nullptr;
    sendRef_.Reset();
  } else {
    sendRef_ = Napi::Persistent(info[0].As<Napi::Object>());
    send_ = Napi::ObjectWrap<SendPath>::Unwrap(info[0].As<Napi::Object>());
  }
  return env.Undefined();
}

// Order matters: stop watching the fd before closing it, so epoll never holds
// a descriptor number that could be reused by the next open().
void Tun::CloseInternal() {
  reading_ = false;
  wantWritable_ = false;
  if (poll_ != nullptr) {
    WatchStop(poll_);
    poll_->data = nullptr;
    // libuv finishes closing on a later loop turn; the close callback frees the
    // handle. Not when the environment is being torn down (the hook): Node may
    // have unloaded this addon by then, and a callback pointing into it would
    // crash the process (the handle's few bytes are left to the exiting process).
    uv_close_cb freeHandle = [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); };
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), tearingDown_ ? nullptr : freeHandle);
    poll_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  if (cleanupHookAdded_) {
    napi_remove_env_cleanup_hook(env_, OnCleanup, this);
    cleanupHookAdded_ = false;
  }
  arena_ = nullptr;
  lengths_ = nullptr;
  send_ = nullptr;
  // The callbacks hold the caller's device object, which holds this one: kept, they would be a
  // cycle through a GC root, and a closed device and its arenas would never be freed. (Safe during
  // a callback: MakeCallback holds the function it runs.) Not while the environment is torn down.
  if (!tearingDown_) {
    onRead_.Reset();
    onError_.Reset();
    onWritable_.Reset();
    sendRef_.Reset();
    arenaRef_.Reset();
    lengthsRef_.Reset();
  }
}

}  // namespace dptcp
