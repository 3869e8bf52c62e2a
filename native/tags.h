#pragma once
#include <napi.h>

namespace dptcp {

// Type tags (napi_type_tag_object) of the classes whose objects are handed to
// other native objects (FastPath takes a Tun and an Eliminator, SocketReader a
// FastPath, SendPath a Tun and SocketReaders, Tun a SendPath): an object is unwrapped as one of them only if its constructor
// tagged it, which JavaScript cannot fake (unlike instanceof).
inline constexpr napi_type_tag kTunTag = {0x6470746370747530ull, 0x9d3f2a51c4e87b06ull};
inline constexpr napi_type_tag kEliminatorTag = {0x6470746370656c30ull, 0x2b8e61f0a4d35c97ull};
inline constexpr napi_type_tag kFastPathTag = {0x6470746370667030ull, 0xc71a05e93f6b28d4ull};
inline constexpr napi_type_tag kSocketReaderTag = {0x6470746370727230ull, 0x5e0b93d2a17c46f1ull};
inline constexpr napi_type_tag kSendPathTag = {0x6470746370737030ull, 0x83c4f1a96d20be57ull};

inline void TagObject(Napi::Env env, Napi::Object obj, const napi_type_tag* tag) {
  if (napi_type_tag_object(env, obj, tag) != napi_ok) throw Napi::Error::New(env, "cannot tag a native object");
}

inline bool HasTag(Napi::Env env, Napi::Value v, const napi_type_tag* tag) {
  if (!v.IsObject()) return false;
  bool result = false;
  if (napi_check_object_type_tag(env, v, tag, &result) != napi_ok) return false;
  return result;
}

}  // namespace dptcp
