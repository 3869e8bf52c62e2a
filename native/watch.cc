#include "watch.h"

#include "errors.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdint>
#include <unordered_map>

namespace dptcp {

namespace {

// Events taken from the data loop's set per wait.
constexpr int kEvents = 16;
// The longest the data loop keeps libuv from a turn of its own, ms: what only a turn runs
// and nothing makes due (Node's unreferenced native immediates, run in its check phase)
// runs at least this often.
constexpr uint64_t kTurnEveryMs = 20;

struct DataLoop {
  uv_loop_t* loop = nullptr;
  int epfd = -1;
  uv_prepare_t* prepare = nullptr;
  // Started when the data loop hands libuv a turn of its own: while active, libuv does not
  // wait in that turn (it would otherwise wait for the next timer, packets and all).
  uv_idle_t* nowait = nullptr;
  bool on = false;
  // The polls watched for readability by descriptor, whatever the data loop's state: in its
  // set while on.
  std::unordered_map<int, uv_poll_t*> readable;
  double dispatches = 0;
  // Waits of 0 on libuv's own set (LibuvHasOwn).
  double looks = 0;
};

// Per thread: a loop is run by one thread (Node's main thread, or a worker's), and so is
// every call here for it.
std::unordered_map<uv_loop_t*, DataLoop>& Loops() {
  thread_local std::unordered_map<uv_loop_t*, DataLoop> loops;
  return loops;
}

int FdOf(uv_poll_t* poll) {
  uv_os_fd_t fd = -1;
  return uv_fileno(reinterpret_cast<uv_handle_t*>(poll), &fd) == 0 ? fd : -1;
}

void Add(const DataLoop& d, int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  // Not watched here if this fails: libuv still watches it, the packet only takes a loop turn.
  epoll_ctl(d.epfd, EPOLL_CTL_ADD, fd, &ev);
}

void Remove(const DataLoop& d, int fd) { epoll_ctl(d.epfd, EPOLL_CTL_DEL, fd, nullptr); }

void OnNoWait(uv_idle_t* handle) { uv_idle_stop(handle); }

// Whether libuv's own set holds a ready descriptor that is not one of the watched ones (which
// the data loop's set reports itself). libuv's set is level-triggered: what this wait returns
// stays ready for libuv's own.
bool LibuvHasOwn(DataLoop& d) {
  d.looks++;
  epoll_event ev[kEvents];
  int n = epoll_wait(uv_backend_fd(d.loop), ev, kEvents, 0);
  if (n < 0) return true;
  for (int i = 0; i < n; i++) {
    // A watched descriptor libuv has for more than readability (the TUN, writable) is libuv's then.
    if (d.readable.count(ev[i].data.fd) == 0 || ev[i].events != EPOLLIN) return true;
  }
  return n == kEvents;
}

// libuv has descriptors to start or stop watching: it applies that only at its next poll, so
// until then they are in no set (a socket of Node's that wants to be writable, a new one).
bool LibuvChanging(const uv_loop_t* loop) { return loop->watcher_queue.next != &loop->watcher_queue; }

void OnPrepare(uv_prepare_t* handle) {
  DataLoop* d = static_cast<DataLoop*>(handle->data);
  if (d == nullptr || !d->on || d->readable.empty()) return;
  uv_loop_t* loop = handle->loop;
  uv_update_time(loop);
  const uint64_t until = uv_now(loop) + kTurnEveryMs;
  // libuv's descriptor was ready along with watched ones in the last wait.
  bool alongside = false;
  while (d->on) {
    int timeout = uv_backend_timeout(loop);
    uint64_t now = uv_now(loop);
    if (timeout == 0) return;
    if (now >= until || LibuvChanging(loop)) {
      // libuv's turn, without its wait (its poll applies the changes): the data loop waits again
      // in the next one.
      uv_idle_start(d->nowait, OnNoWait);
      return;
    }
    int left = static_cast<int>(until - now);
    if (timeout < 0 || timeout > left) timeout = left;
    epoll_event ev[kEvents];
    int n = epoll_wait(d->epfd, ev, kEvents, timeout);
    if (n < 0) return;  // a signal: libuv's (its handler wrote to libuv's descriptor)
    bool libuvs = false;  // libuv's own descriptor: ready, with what it watches
    bool hangup = false;  // an error or hang-up: libuv reports those as it does
    bool ours = false;
    for (int i = 0; i < n; i++) {
      if (ev[i].data.fd == uv_backend_fd(loop)) {
        libuvs = true;
        continue;
      }
      if (ev[i].events != EPOLLIN) {
        hangup = true;
        continue;
      }
      // Not found: stopped by a callback before it in this batch.
      auto it = d->readable.find(ev[i].data.fd);
      if (it == d->readable.end()) continue;
      uv_poll_t* poll = it->second;
      ours = true;
      d->dispatches++;
      poll->poll_cb(poll, 0, UV_READABLE);
    }
    uv_update_time(loop);
    if (hangup || (libuvs && !ours)) return;
    if (!libuvs) {
      alongside = false;
      continue;
    }
    // libuv's descriptor holds the watched ones too: ready with them, it may have nothing else.
    // Their callbacks have read them, so the next wait reports it only if something there is
    // still ready. Reported with ours twice in a row, libuv's set is looked at (a watched
    // descriptor that stays readable keeps it ready too).
    if (alongside && LibuvHasOwn(*d)) return;
    alongside = !alongside;
  }
}

DataLoop* Find(uv_loop_t* loop) {
  auto it = Loops().find(loop);
  return it == Loops().end() ? nullptr : &it->second;
}

}  // namespace

int WatchStart(uv_poll_t* poll, int events, uv_poll_cb cb) {
  int rc = uv_poll_start(poll, events, cb);
  if (rc != 0) return rc;
  DataLoop& d = Loops()[poll->loop];
  d.loop = poll->loop;
  int fd = FdOf(poll);
  if (fd < 0) return 0;
  if (events & UV_READABLE) {
    if (d.readable.emplace(fd, poll).second && d.on) Add(d, fd);
  } else if (d.readable.erase(fd) > 0 && d.on) {
    Remove(d, fd);
  }
  return 0;
}

int WatchStop(uv_poll_t* poll) {
  DataLoop* d = Find(poll->loop);
  int fd = FdOf(poll);
  if (d != nullptr && fd >= 0 && d->readable.erase(fd) > 0 && d->on) Remove(*d, fd);
  return uv_poll_stop(poll);
}

// The environment is going away: its loop's handles are closed (no callback: Node may unload
// the addon before the loop runs them), the set with them.
void OnCleanup(void* arg) {
  uv_loop_t* loop = static_cast<uv_loop_t*>(arg);
  DataLoop* d = Find(loop);
  if (d == nullptr) return;
  d->on = false;
  if (d->prepare != nullptr) {
    uv_prepare_stop(d->prepare);
    d->prepare->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(d->prepare), nullptr);
  }
  if (d->nowait != nullptr) {
    uv_idle_stop(d->nowait);
    uv_close(reinterpret_cast<uv_handle_t*>(d->nowait), nullptr);
  }
  if (d->epfd >= 0) close(d->epfd);
  Loops().erase(loop);
}

int SetDataLoop(napi_env env, uv_loop_t* loop, bool on) {
  DataLoop& d = Loops()[loop];
  d.loop = loop;
  if (on == d.on) return 0;
  if (!on) {
    d.on = false;
    for (const auto& [fd, poll] : d.readable) Remove(d, fd);
    return 0;
  }
  if (d.epfd < 0) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return errno;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = uv_backend_fd(loop);
    if (epoll_ctl(fd, EPOLL_CTL_ADD, uv_backend_fd(loop), &ev) != 0) {
      int err = errno;
      close(fd);
      return err;
    }
    d.epfd = fd;
  }
  if (d.prepare == nullptr) {
    d.prepare = new uv_prepare_t;
    d.nowait = new uv_idle_t;
    uv_prepare_init(loop, d.prepare);
    uv_idle_init(loop, d.nowait);
    d.prepare->data = &d;
    uv_prepare_start(d.prepare, OnPrepare);
    // Neither keeps the loop alive: what it watches does.
    uv_unref(reinterpret_cast<uv_handle_t*>(d.prepare));
    uv_unref(reinterpret_cast<uv_handle_t*>(d.nowait));
    napi_add_env_cleanup_hook(env, OnCleanup, loop);
  }
  d.on = true;
  for (const auto& [fd, poll] : d.readable) Add(d, fd);
  return 0;
}

Napi::Value SetDataLoopJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBoolean()) throw Napi::TypeError::New(env, "setDataLoop(on: boolean)");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "cannot get the event loop of this Node environment");
  int err = SetDataLoop(env, loop, info[0].As<Napi::Boolean>().Value());
  if (err != 0) throw ErrnoError(env, err, "epoll", "starting the data loop");
  return env.Undefined();
}

Napi::Value DataLoopInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "cannot get the event loop of this Node environment");
  DataLoop* d = Find(loop);
  Napi::Object o = Napi::Object::New(env);
  o.Set("on", Napi::Boolean::New(env, d != nullptr && d->on));
  o.Set("watched", Napi::Number::New(env, d == nullptr ? 0 : static_cast<double>(d->readable.size())));
  o.Set("wakeups", Napi::Number::New(env, d == nullptr ? 0 : d->dispatches));
  o.Set("looks", Napi::Number::New(env, d == nullptr ? 0 : d->looks));
  return o;
}

}  // namespace dptcp
