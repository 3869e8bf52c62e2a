// Errors cross into JavaScript the way Node's own system errors do: an Error
// whose `code` is the errno name, `errno` the negated errno, and `syscall`
// the call that failed. Policy (what the error means for the user) is in TS.
#pragma once
#include <napi.h>
#include <string>

namespace dptcp {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& what);

}  // namespace dptcp
