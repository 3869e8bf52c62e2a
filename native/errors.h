// Errors cross into JavaScript the way Node's own system errors do: an Error
// whose `code` is the errno name, `errno` the negated errno, and `syscall`
// the call that failed. Policy (what the error means for the user) is in TS.
#pragma once
#include <napi.h>
#include <string>

namespace dptcp {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& what);

// Code run from a libuv callback (uv_poll) has no JavaScript below it to throw
// to: a C++ exception leaving the callback unwinds through libuv's C frames
// (std::terminate, an abort), and a JS exception left pending is either lost
// or surfaces at some unrelated later N-API call. Such code catches
// everything, and hands what it caught to JS through these two.
//
// CaughtAsJs: call only inside a catch block, with a HandleScope open. The JS
// Error for the exception being handled: a Napi::Error's own value; for any
// other exception a new Error "<where>: <what()>". Any JS exception still
// pending is cleared (and used when nothing better is at hand). nullptr if no
// Error could be made at all. Never throws.
napi_value CaughtAsJs(napi_env env, const char* where) noexcept;

// Hands `err` to process 'uncaughtException', as Node does with an exception
// thrown by a callback that has no JS caller; when even that is impossible,
// says so on stderr. Never throws.
void ReportUncaught(napi_env env, napi_value err, const char* where) noexcept;

}  // namespace dptcp
