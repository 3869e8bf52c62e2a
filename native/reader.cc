#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "watch.h"
#include "tags.h"
#include "wire.h"

namespace dptcp {

Napi::Function SocketReader::Init(Napi::Env env) {
  return DefineClass(env, "SocketReader",
                     {
                         InstanceAccessor<&SocketReader::GetReads>("reads"),
                         InstanceMethod<&SocketReader::Close>("close"),
                         InstanceMethod<&SocketReader::Pause>("pause"),
                         InstanceMethod<&SocketReader::Resume>("resume"),
                         InstanceMethod<&SocketReader::SetFast>("setFast"),
                     });
}

// new SocketReader(fd, buffer, onData(n, start), onEnd(errno[, error])): starts at once.
// onData(n, start): buffer[start..n) holds the next bytes of the stream (the
// native path may have taken bytes before them, see setFast); they are valid
// until onData returns (the next read overwrites them). It returns how many
// more bytes the caller's decoder needs to finish the frame it holds part of
// (0: none, -1: it cannot tell yet). onEnd(0): the
// peer closed its side; onEnd(errno): the read failed; onEnd(EIO, error): the
// addon itself failed in its poll callback (ReportCaught). After onEnd nothing
// more is read; close() is still due.
SocketReader::SocketReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SocketReader>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsBuffer() || !info[2].IsFunction() ||
      !info[3].IsFunction()) {
    throw Napi::TypeError::New(env, "new SocketReader(fd, buffer, onData, onEnd)");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  if (buf.Length() == 0) throw Napi::RangeError::New(env, "the read buffer is empty");
  // Before anything that must be released: if this throws, nothing is held.
  asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "dptcp:SocketReader");
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) throw ErrnoError(env, errno, "fcntl(F_DUPFD_CLOEXEC)", "duplicating socket fd " + std::to_string(fd));
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(dup);
    throw Napi::Error::New(env, "cannot get the event loop of this Node environment");
  }
  poll_ = new uv_poll_t;
  int rc = uv_poll_init(loop, poll_, dup);
  if (rc != 0) {
    delete poll_;
    poll_ = nullptr;
    close(dup);
    throw ErrnoError(env, -rc, "uv_poll_init", "watching socket fd " + std::to_string(fd));
  }
  poll_->data = this;
  fd_ = dup;
  bufRef_ = Napi::Persistent(buf);
  buf_ = buf.Data();
  bufLen_ = buf.Length();
  onData_ = Napi::Persistent(info[2].As<Napi::Function>());
  onEnd_ = Napi::Persistent(info[3].As<Napi::Function>());
  if (napi_add_env_cleanup_hook(env, OnCleanup, this) == napi_ok) cleanupHookAdded_ = true;
  rc = WatchStart(poll_, UV_READABLE, OnPoll);
  if (rc != 0) {
    CloseInternal();
    throw ErrnoError(env, -rc, "uv_poll_start", "watching socket fd " + std::to_string(fd));
  }
  TagObject(env, info.This().As<Napi::Object>(), &kSocketReaderTag);
}

SocketReader::~SocketReader() { CloseInternal(); }

void SocketReader::OnCleanup(void* arg) {
  SocketReader* self = static_cast<SocketReader*>(arg);
  self->cleanupHookAdded_ = false;  // the hook is being run; removing it now is not allowed
  self->tearingDown_ = true;
  self->CloseInternal();
}

Napi::Value SocketReader::GetReads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(reads_));
}

Napi::Value SocketReader::Close(const Napi::CallbackInfo& info) {
  CloseInternal();
  return info.Env().Undefined();
}

// pause(): nothing more is read until resume() (the kernel's receive window
// then closes, as for a peer that stops reading). Both are no-ops once ended.
Napi::Value SocketReader::Pause(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr) WatchStop(poll_);
  return info.Env().Undefined();
}

// setFast(fastPath, counters: Float64Array(kLinkCounters), decoderNeed, maxFrameBytes):
// whole DATA frames that start a read, or follow the end of a frame the
// caller's decoder was finishing, go the session's native path (fastpath.h)
// before onData sees the rest; decoderNeed is what the decoder needs now (as
// onData returns it). A DATA frame the read ends inside of (CutDataFrame) is
// kept in the reader's own buffer and finished by the next reads, then goes
// the native path whole; if the path cannot take it then (taken away, the TUN
// pushing back, a check refusing it) or the socket ends first, its bytes go
// to onData as the stream's next. setFast(null): every byte to onData.
Napi::Value SocketReader::SetFast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || info[0].IsNull() || info[0].IsUndefined()) {
    DropFast();
    return env.Undefined();
  }
  if (!HasTag(env, info[0], &kFastPathTag)) {
    throw Napi::TypeError::New(env, "setFast(fastPath, counters, decoderNeed, maxFrameBytes): not a FastPath");
  }
  if (info.Length() < 4 || !info[2].IsNumber() || !info[3].IsNumber()) {
    throw Napi::TypeError::New(env, "setFast(fastPath, counters, decoderNeed, maxFrameBytes)");
  }
  Napi::Float64Array counters = CounterArray(env, info[1], kLinkCounters, "setFast");
  double max = info[3].As<Napi::Number>().DoubleValue();
  if (!(max >= 0) || max > 4294967295.0) throw Napi::RangeError::New(env, "setFast: maxFrameBytes out of range");
  Napi::Object fast = info[0].As<Napi::Object>();
  fast_ = Napi::ObjectWrap<FastPath>::Unwrap(fast);
  fastRef_ = Napi::Persistent(fast);
  countersRef_ = Napi::Persistent(counters);
  counters_ = counters.Data();
  lagging_ = false;
  maxFrameBytes_ = static_cast<size_t>(max);
  double need = info[2].As<Napi::Number>().DoubleValue();
  jsNeed_ = need >= 0 && need <= 4294967295.0 ? static_cast<int64_t>(need) : -1;
  return env.Undefined();
}

// onData(n, start), and what it says the decoder needs next. False if the reader
// closed meanwhile (its buffer is gone: nothing more is handed on).
bool SocketReader::CallOnData(size_t n, size_t start) {
  if (fd_ < 0 || buf_ == nullptr) return false;
  Napi::Env env(env_);  // OnPoll holds the HandleScope
  napi_value need = CallJs(onData_, {Napi::Number::New(env, static_cast<double>(n)),
                                     Napi::Number::New(env, static_cast<double>(start))});
  double v = -1;
  if (need == nullptr || napi_get_value_double(env_, need, &v) != napi_ok || !(v >= 0) || v > 4294967295.0) v = -1;
  jsNeed_ = static_cast<int64_t>(v);
  return fd_ >= 0 && buf_ != nullptr;
}

void SocketReader::DropFast() {
  lagging_ = false;
  fast_ = nullptr;
  counters_ = nullptr;
  fastRef_.Reset();
  countersRef_.Reset();
}

Napi::Value SocketReader::Resume(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr && !ended_) {
    int rc = WatchStart(poll_, UV_READABLE, OnPoll);
    if (rc != 0) throw ErrnoError(info.Env(), -rc, "uv_poll_start", "watching a socket");
  }
  return info.Env().Undefined();
}

// Runs from libuv, with no JavaScript below: nothing is thrown out of here
// (errors.h). One HandleScope covers everything; whatever is thrown ends the
// reader through onEnd, as a failed read does (ReportCaught).
void SocketReader::OnPoll(uv_poll_t* handle, int status, int events) {
  SocketReader* self = static_cast<SocketReader*>(handle->data);
  if (self == nullptr || self->fd_ < 0) return;
  napi_handle_scope scope = nullptr;
  if (napi_open_handle_scope(self->env_, &scope) != napi_ok) {
    ReportUncaught(self->env_, nullptr, "socket reader poll callback");
    return;
  }
  try {
    if (status < 0) {
      // libuv reports any EPOLLERR as UV_EBADF; the socket's own error (ECONNRESET
      // for a peer's reset) is what the read failed with, as Node would report it.
      int err = 0;
      socklen_t errLen = sizeof(err);
      if (getsockopt(self->fd_, SOL_SOCKET, SO_ERROR, &err, &errLen) != 0 || err == 0) err = -status;
      // A frame the reader holds the start of goes to the decoder first, as its bytes would have.
      if ((self->carryWant_ == 0 || self->FlushCarry()) && self->fd_ >= 0) self->Finish(err);
    } else if (events & UV_READABLE) {
      self->HandleReadable();
    }
  } catch (...) {
    self->ReportCaught();
  }
  napi_close_handle_scope(self->env_, scope);
}

// Inside a catch block of a libuv callback. Until onEnd has run, what was
// caught ends the reader: onEnd(EIO, error), the error saying what failed
// (the socket's state is unknown now; the link closes, as after a failed
// read). After onEnd it goes to 'uncaughtException'. Dropped once closed.
void SocketReader::ReportCaught() noexcept {
  napi_value err = CaughtAsJs(env_, "socket reader");
  if (fd_ < 0) return;
  if (!endCalled_) {
    Finish(EIO, err);
  } else {
    ReportUncaught(env_, err, "socket reader");
  }
}

// Fills the buffer with what the socket holds (a few reads at most, so one
// busy link cannot keep the loop from the others: the poll is level-triggered
// and comes back), then hands it on in one call.
void SocketReader::HandleReadable() {
  if (carryWant_ > 0) {
    // Its callbacks may have paused the reader (or closed it): no more reads this turn then.
    if (!FinishCarry() || poll_ == nullptr || uv_is_active(reinterpret_cast<uv_handle_t*>(poll_)) == 0) return;
  }
  if ((dropLeft_ > 0 || lagging_) && !DropCopies()) return;
  size_t got = 0;
  int err = -1;  // -1: the socket is merely drained
  for (int i = 0; i < 4 && got < bufLen_; i++) {
    size_t want = bufLen_ - got;
    ssize_t r = recv(fd_, buf_ + got, want, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) {
        i--;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
    if (r == 0) {
      err = 0;
      break;
    }
    reads_++;
    got += static_cast<size_t>(r);
    // Less than asked: the receive queue is empty now (another recv would only say EAGAIN;
    // what arrives later makes the poll fire again).
    if (static_cast<size_t>(r) < want) break;
  }
  if (got > 0) {
    size_t pos = 0;
    // The end of a frame the decoder holds the start of: its, first (a busy link's reads end
    // anywhere; the frames after that end are whole again).
    if (fast_ != nullptr && jsNeed_ > 0 && static_cast<size_t>(jsNeed_) <= got && fast_->Usable()) {
      pos = static_cast<size_t>(jsNeed_);
      if (!CallOnData(pos, 0)) pos = got;
    }
    if (pos < got && fast_ != nullptr && jsNeed_ == 0 && fast_->Usable()) {
      pos += DeliverNative(buf_ + pos, got - pos);
      // The read ended inside a DATA frame right after the frames taken: kept here until its
      // end comes (unless the socket ended: the decoder's, to judge as a cut frame). Deliver may
      // have run JavaScript, which may have closed the reader or taken the path away.
      if (err < 0 && fd_ >= 0 && buf_ != nullptr && fast_ != nullptr && fast_->Usable()) {
        size_t frameBytes = CutDataFrame(buf_ + pos, got - pos, maxFrameBytes_);
        if (frameBytes > 0) {
          // Unless another link delivered it already: then the rest is dropped unread.
          bool dropped = got - pos >= kDataHeaderBytes && DropCarried(buf_ + pos, frameBytes - (got - pos));
          if (!dropped) StartCarry(pos, got, frameBytes);
          pos = got;
        }
      }
    }
    if (pos < got) CallOnData(got, pos);
  }
  if (err >= 0 && fd_ >= 0) Finish(err);
}

// While the link lags (lagging_), or a frame is being dropped (dropLeft_): the copies at the
// head of the stream that another link delivered already are judged from their header
// (FastPath::JudgeCopy) and dropped in the kernel, never copied out: a lagging link's copies
// are what a duplicating tunnel reads most, and copying them was a third of the receiving
// side's copies. True when the reader goes on with the usual read (the next frame is not
// such a copy, or its header is not all there, or the native path is not usable); false when
// nothing more is read this turn (the socket is drained, the reader ended, or enough frames
// were dropped for one turn: the poll comes back).
bool SocketReader::DropCopies() {
  for (int i = 0; i < kMaxDropsPerTurn; i++) {
    if (dropLeft_ == 0) {
      if (!lagging_ || fast_ == nullptr || jsNeed_ != 0 || !fast_->Usable()) return true;
      uint8_t h[kDataHeaderBytes];
      ssize_t r = recv(fd_, h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
      if (r < 0 && errno == EINTR) {
        i--;
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      // An error, the end, or a header not all there yet: the usual read finds out.
      if (r < static_cast<ssize_t>(sizeof h)) return true;
      size_t frameBytes = fast_->JudgeCopy(h, maxFrameBytes_, counters_);
      if (frameBytes == 0) {
        lagging_ = false;
        return true;
      }
      dropLeft_ = frameBytes;
      counters_[kDroppedUnread]++;
    }
    ssize_t r = recv(fd_, nullptr, dropLeft_, MSG_TRUNC | MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) {
        i--;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) Finish(errno);
      return false;
    }
    if (r == 0) {
      // The peer closed inside a copy already delivered: nothing of it is missed.
      Finish(0);
      return false;
    }
    reads_++;
    dropLeft_ -= static_cast<size_t>(r);
    MarkHeard();
    if (dropLeft_ > 0) return false;
  }
  return false;
}

// A frame this link has the start of (header `h`) and `rest` bytes still to come: if another
// link delivered it already (FastPath::JudgeCopy judged and counted it), the rest is dropped
// in the kernel (dropLeft_, DropCopies) and true returned. Measured: with two equal links most
// copies were read so (the read ends inside a 64 KiB offload frame the other link delivered
// by the time its rest comes), and the lagging test (DropCopies) saw under 10% of them;
// with this, 95-99%, and 7-12% less CPU per GB on both sides (one interleaved A/B run
// of 4+4 iperf3 runs). The bytes read of it are a sign of life, as StartCarry's are.
bool SocketReader::DropCarried(const uint8_t* h, size_t rest) {
  if (fast_->JudgeCopy(h, maxFrameBytes_, counters_) == 0) return false;
  dropLeft_ = rest;
  counters_[kDroppedUnread]++;
  MarkHeard();
  return true;
}

// FastPath::Deliver of p[0, n) with this link's counters (fast_ set); the bytes it took.
size_t SocketReader::DeliverNative(const uint8_t* p, size_t n) {
  // Both held in this scope (handles in OnPoll's scope): a callback of Deliver's may drop them
  // from the reader, and the path and the counters must outlive the call.
  napi_value holdFast = nullptr;
  napi_value holdCounters = nullptr;
  if (napi_get_reference_value(env_, fastRef_, &holdFast) != napi_ok || holdFast == nullptr ||
      napi_get_reference_value(env_, countersRef_, &holdCounters) != napi_ok || holdCounters == nullptr) {
    throw Napi::Error::New(Napi::Env(env_), "the native receive path's references are gone");
  }
  return fast_->Deliver(p, n, maxFrameBytes_, counters_, &lagging_);
}

// Open mode's sign of life: bytes came (the native path's counters, folded by TypeScript).
void SocketReader::MarkHeard() {
  if (counters_ == nullptr) return;
  counters_[kLastRxHrMs] = static_cast<double>(uv_hrtime()) / 1e6;
}

// buf_[pos, got) is the start of a DATA frame of frameBytes: into the carry buffer.
void SocketReader::StartCarry(size_t pos, size_t got, size_t frameBytes) {
  if (carryCap_ < frameBytes) {
    carry_.reset(new uint8_t[frameBytes]);
    carryCap_ = frameBytes;
  }
  std::memcpy(carry_.get(), buf_ + pos, got - pos);
  carryHave_ = got - pos;
  carryWant_ = frameBytes;
  MarkHeard();
}

// Reads the rest of the carried frame straight into it and delivers it. True
// when it is done with and the reader goes on as usual; false when the socket
// has no more of it yet, or the reader ended or closed. While the native path
// is not usable (taken away, or the TUN pushing back) the bytes go to the
// decoder instead, as they would have.
bool SocketReader::FinishCarry() {
  // Another link delivered the frame meanwhile: the rest of this copy is dropped unread.
  if (carryHave_ >= kDataHeaderBytes && fast_ != nullptr && fast_->Usable() && DropCarried(carry_.get(), carryWant_ - carryHave_)) {
    DoneCarry();
    return true;
  }
  while (carryHave_ < carryWant_ && fast_ != nullptr && fast_->Usable()) {
    ssize_t r = recv(fd_, carry_.get() + carryHave_, carryWant_ - carryHave_, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      int err = errno;
      if (FlushCarry() && fd_ >= 0) Finish(err);
      return false;
    }
    if (r == 0) {
      if (FlushCarry() && fd_ >= 0) Finish(0);
      return false;
    }
    reads_++;
    carryHave_ += static_cast<size_t>(r);
    MarkHeard();
  }
  if (carryHave_ < carryWant_ || fast_ == nullptr || !fast_->Usable()) return FlushCarry();
  if (DeliverNative(carry_.get(), carryWant_) == 0) return FlushCarry();
  DoneCarry();
  return fd_ >= 0 && buf_ != nullptr && !ended_;
}

// The carry is empty; a buffer made for a frame longer than an offload packet's is let go.
void SocketReader::DoneCarry() {
  carryHave_ = 0;
  carryWant_ = 0;
  if (carryCap_ > kCarryKeptBytes) {
    carry_.reset();
    carryCap_ = 0;
  }
}

// The carried bytes to onData, through the read buffer (in pieces if they are
// more than it holds), as the stream's next bytes; the carry is then empty.
// False if the reader closed meanwhile.
bool SocketReader::FlushCarry() {
  size_t have = carryHave_;
  carryHave_ = 0;
  carryWant_ = 0;
  // Held here: the buffer may be let go (DoneCarry) only after the bytes are handed on, and a
  // callback may start nothing new meanwhile (the reader reads only from its poll callback).
  for (size_t from = 0; from < have;) {
    if (fd_ < 0 || buf_ == nullptr) return false;
    size_t n = std::min(bufLen_, have - from);
    std::memcpy(buf_, carry_.get() + from, n);
    from += n;
    if (!CallOnData(n, 0)) return false;
  }
  DoneCarry();
  return fd_ >= 0 && buf_ != nullptr && !ended_;
}

// Never throws (ReportCaught calls it): raw N-API calls only.
void SocketReader::Finish(int err, napi_value error) noexcept {
  ended_ = true;
  if (poll_ != nullptr) WatchStop(poll_);
  endCalled_ = true;
  napi_value code = nullptr;
  if (napi_create_int32(env_, err, &code) != napi_ok) {
    ReportUncaught(env_, error, "socket reader end");
    return;
  }
  if (error != nullptr) {
    CallJs(onEnd_, {code, error});
  } else {
    CallJs(onEnd_, {code});
  }
}

// Never throws: an exception thrown by the callback is handed to
// 'uncaughtException', as Node does for its own callbacks; so is a failure to
// call it at all.
napi_value SocketReader::CallJs(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) noexcept {
  if (fn.IsEmpty()) return nullptr;
  try {
    Napi::Env env(env_);
    return fn.MakeCallback(env.Global(), args, *asyncContext_);
  } catch (...) {
    // Nothing above us can catch it.
    ReportUncaught(env_, CaughtAsJs(env_, "socket reader callback"), "socket reader callback");
    return nullptr;
  }
}

// Stop watching before closing the descriptor. The handle is freed by its
// close callback, except when the environment is being torn down (the hook):
// then, as Tun::CloseInternal, no callback into an addon that may be gone.
// The references go too: the callbacks hold the caller's objects, and those
// hold this reader's JS object; kept, they would be a cycle through a GC root
// and every closed link would stay in memory.
void SocketReader::CloseInternal() {
  if (poll_ != nullptr) {
    WatchStop(poll_);
    poll_->data = nullptr;
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
  buf_ = nullptr;
  bufLen_ = 0;
  fast_ = nullptr;
  counters_ = nullptr;
  carryHave_ = 0;
  carryWant_ = 0;
  if (!tearingDown_) {
    onData_.Reset();
    onEnd_.Reset();
    bufRef_.Reset();
    DropFast();
  }
}

}  // namespace dptcp
