#include "errors.h"

#include <string.h>
#include <uv.h>

namespace dptcp {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& what) {
  std::string msg = what + ": " + syscall + " failed: " + strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  // On Unix libuv's error codes are negated errno values, so uv_err_name gives
  // the same names ("EPERM", "EBUSY") that Node puts on its own errors.
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

}  // namespace dptcp
