#pragma once
#include <napi.h>
#include <uv.h>

namespace dptcp {

// Where the addon's descriptors are watched: libuv's poll (uv_poll_start and
// uv_poll_stop, through these), and for readability also the data loop's own
// epoll set, which lets a wake-up for a packet be handled without a turn of
// Node's event loop.
//
// The data loop runs in a uv_prepare callback, where libuv is about to wait
// for events: if nothing else is due (uv_backend_timeout is not 0: no
// immediates, pending callbacks or closing handles; up to the next timer), it
// waits on its own set, which holds the watched descriptors and libuv's own
// backend descriptor. A packet on a watched descriptor is handled right there,
// by the same callback libuv would have called (status 0, UV_READABLE), and
// the data loop waits again; anything else (a descriptor of libuv's own is
// ready, a timer is due, an error or hang-up on a watched one, a signal)
// returns to libuv, which finds it ready. libuv's set holds the watched
// descriptors too, so it is ready along with them. The callbacks have read
// them, so the next wait reports libuv's descriptor again only if something
// there is still ready; reported along with watched ones in two waits in a
// row, the data loop looks at what libuv's set holds (a wait of 0 on it,
// level-triggered: libuv still finds it) and goes back only if something there
// is not a watched descriptor's readability.
// A turn of libuv's own runs at least every kTurnEveryMs (20 ms) all the same,
// and as soon as libuv has descriptors to start or stop watching (it applies
// that in its own poll: a socket of Node's that waits to be writable is in no
// set until then).
// So what runs is what Node's loop would have run, in the same order per
// descriptor, without the rest of a loop turn (Node's check handle alone opens
// a callback scope every turn) between two packets. Off (setDataLoop(false))
// the prepare callback returns at once. libuv counts the data loop's wait as
// busy time (performance.eventLoopUtilization), which dp-tcp does not use.
int WatchStart(uv_poll_t* poll, int events, uv_poll_cb cb);
int WatchStop(uv_poll_t* poll);

// Turns the data loop of `loop` (env's) on or off (off until asked); 0 or the errno of
// creating its epoll set.
int SetDataLoop(napi_env env, uv_loop_t* loop, bool on);

// setDataLoop(on: boolean): SetDataLoop for this environment's loop. Whether it is on
// is decided in TypeScript (src/core/data-loop.ts).
Napi::Value SetDataLoopJs(const Napi::CallbackInfo& info);
// dataLoopInfo(): { on, watched (descriptors), wakeups (callbacks the data loop's own
// wait ran) }.
Napi::Value DataLoopInfoJs(const Napi::CallbackInfo& info);

}  // namespace dptcp
