#include "errors.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <exception>

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

napi_value CaughtAsJs(napi_env env, const char* where) noexcept {
  // A pending exception would make every later N-API call that may run JS fail.
  napi_value pending = nullptr;
  bool isPending = false;
  if (napi_is_exception_pending(env, &isPending) == napi_ok && isPending) {
    if (napi_get_and_clear_last_exception(env, &pending) != napi_ok) pending = nullptr;
  }
  // Fixed buffers: building the message must not allocate (and so throw) itself.
  char what[256] = "unknown C++ exception";
  try {
    throw;
  } catch (const Napi::Error& e) {
    try {
      napi_value v = e.Value();
      if (v != nullptr) return v;
    } catch (...) {
    }
    snprintf(what, sizeof(what), "%s", e.what());
  } catch (const std::exception& e) {
    snprintf(what, sizeof(what), "%s", e.what());
  } catch (...) {
  }
  if (pending != nullptr) return pending;
  char msg[400];
  snprintf(msg, sizeof(msg), "%s: %s", where, what);
  napi_value text = nullptr;
  napi_value err = nullptr;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text) != napi_ok ||
      napi_create_error(env, nullptr, text, &err) != napi_ok) {
    return nullptr;
  }
  return err;
}

void ReportUncaught(napi_env env, napi_value err, const char* where) noexcept {
  if (err != nullptr && napi_fatal_exception(env, err) == napi_ok) return;
  fprintf(stderr, "dp-tcp addon: %s: an error could not be handed to JavaScript\n", where);
}

}  // namespace dptcp
