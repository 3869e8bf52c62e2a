#include "aead.h"

#include <string.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace dptcp {

namespace {
constexpr int kKeyBytes = 32;
constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;
constexpr size_t kAadBytes = 16;
}  // namespace

Napi::Function Aead::Init(Napi::Env env) {
  return DefineClass(env, "Aead",
                     {
                         InstanceMethod<&Aead::Seal>("seal"),
                         InstanceMethod<&Aead::Open>("open"),
                         InstanceMethod<&Aead::Destroy>("destroy"),
                     });
}

// new Aead(cipher, key, encrypt): cipher 'aes-256-gcm' or 'chacha20-poly1305',
// a 32-byte key, true to seal and false to open.
Aead::Aead(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Aead>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsBuffer() || !info[2].IsBoolean()) {
    throw Napi::TypeError::New(env, "new Aead(cipher: string, key: Buffer, encrypt: boolean)");
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  const EVP_CIPHER* cipher = name == "aes-256-gcm"         ? EVP_aes_256_gcm()
                             : name == "chacha20-poly1305" ? EVP_chacha20_poly1305()
                                                           : nullptr;
  if (cipher == nullptr) throw Napi::TypeError::New(env, "unknown AEAD '" + name + "'");
  Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
  if (key.Length() != kKeyBytes) throw Napi::RangeError::New(env, "an AEAD key is 32 bytes");
  encrypt_ = info[2].As<Napi::Boolean>().Value();
  ctx_ = EVP_CIPHER_CTX_new();
  int enc = encrypt_ ? 1 : 0;
  if (ctx_ == nullptr || EVP_CipherInit_ex(ctx_, cipher, nullptr, nullptr, nullptr, enc) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_CipherInit_ex(ctx_, nullptr, nullptr, key.Data(), nullptr, enc) != 1) {
    Free();
    throw Napi::Error::New(env, "OpenSSL could not set up " + name);
  }
}

Aead::~Aead() { Free(); }

// The key schedule is the only copy of the key the addon holds (the key
// Buffer is the caller's; it is read once, by EVP_CipherInit_ex).
// EVP_CIPHER_CTX_free cleanses it: the provider's context, key schedule
// included, goes through OPENSSL_clear_free. By destroy(), when the caller
// retires the key, else by the finalizer.
void Aead::Free() {
  if (ctx_ != nullptr) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = nullptr;
  }
}

Napi::Value Aead::Destroy(const Napi::CallbackInfo& info) {
  Free();
  return info.Env().Undefined();
}

// Arguments: (buffer, textStart, textLength, counter, aadStart). The text is
// buffer[textStart, +textLength), its tag the 16 bytes after it, the
// additional data buffer[aadStart, +16); the nonce is 4 zero bytes and the
// counter (u64, big-endian). Sets the nonce and feeds the additional data.
bool Aead::Begin(const Napi::CallbackInfo& info, uint8_t** text, size_t* len, const char* what) {
  Napi::Env env = info.Env();
  if (ctx_ == nullptr) throw Napi::Error::New(env, std::string(what) + ": the key was destroyed");
  if (info.Length() < 5 || !info[0].IsBuffer() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber() ||
      !info[4].IsNumber()) {
    throw Napi::TypeError::New(env, std::string(what) + "(buffer, textStart, textLength, counter, aadStart)");
  }
  Napi::Buffer<uint8_t> buf = info[0].As<Napi::Buffer<uint8_t>>();
  double start = info[1].As<Napi::Number>().DoubleValue();
  double length = info[2].As<Napi::Number>().DoubleValue();
  double counter = info[3].As<Napi::Number>().DoubleValue();
  double aad = info[4].As<Napi::Number>().DoubleValue();
  double size = static_cast<double>(buf.Length());
  bool whole = std::floor(start) == start && std::floor(length) == length && std::floor(aad) == aad &&
               std::floor(counter) == counter;
  if (!whole || start < 0 || length < 0 || aad < 0 || counter < 0 || counter > 9007199254740991.0 ||
      start + length + kTagBytes > size || aad + kAadBytes > size || length > 2147483647.0) {
    throw Napi::RangeError::New(env, std::string(what) + ": record bounds or counter out of range");
  }
  uint8_t nonce[kNonceBytes] = {0};
  uint64_t c = static_cast<uint64_t>(counter);
  for (int i = 0; i < 8; i++) nonce[4 + i] = static_cast<uint8_t>(c >> (56 - 8 * i));
  int outl = 0;
  uint8_t* base = buf.Data();
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce, encrypt_ ? 1 : 0) != 1 ||
      EVP_CipherUpdate(ctx_, nullptr, &outl, base + static_cast<size_t>(aad), kAadBytes) != 1) {
    throw Napi::Error::New(env, std::string(what) + ": OpenSSL refused the nonce or additional data");
  }
  *text = base + static_cast<size_t>(start);
  *len = static_cast<size_t>(length);
  return true;
}

// seal(buffer, textStart, textLength, counter, aadStart[, source]): encrypts
// the text in place, or `source` (textLength bytes) into its place, and writes
// the tag after it.
Napi::Value Aead::Seal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ctx_ == nullptr) throw Napi::Error::New(env, "seal: the key was destroyed");
  if (!encrypt_) throw Napi::Error::New(env, "seal: this key opens");
  bool hasSource = info.Length() > 5 && !info[5].IsUndefined();
  if (hasSource && !info[5].IsBuffer()) throw Napi::TypeError::New(env, "seal: source must be a Buffer");
  // The bounds are checked (Begin) before any of them is used.
  uint8_t* text = nullptr;
  size_t len = 0;
  Begin(info, &text, &len, "seal");
  const uint8_t* from = text;
  if (hasSource) {
    Napi::Buffer<uint8_t> src = info[5].As<Napi::Buffer<uint8_t>>();
    if (src.Length() != len) throw Napi::RangeError::New(env, "seal: source length differs from textLength");
    from = src.Data();
    // In place or apart: a stream cipher over a partly overlapping source reads bytes it already wrote.
    auto at = reinterpret_cast<uintptr_t>(from);
    auto to = reinterpret_cast<uintptr_t>(text);
    if (from != text && len > 0 && at < to + len && to < at + len) {
      throw Napi::RangeError::New(env, "seal: source overlaps the text without being it");
    }
  }
  int outl = 0;
  int finl = 0;
  if (EVP_CipherUpdate(ctx_, text, &outl, from, static_cast<int>(len)) != 1 ||
      EVP_CipherFinal_ex(ctx_, text + outl, &finl) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, kTagBytes, text + len) != 1) {
    throw Napi::Error::New(env, "seal: OpenSSL failed");
  }
  return env.Undefined();
}

// open(buffer, textStart, textLength, counter, aadStart): true and the text
// decrypted in place if the tag authenticates it; false otherwise (the text
// is then garbage, and must not be used).
Napi::Value Aead::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ctx_ == nullptr) throw Napi::Error::New(env, "open: the key was destroyed");
  if (encrypt_) throw Napi::Error::New(env, "open: this key seals");
  uint8_t* text = nullptr;
  size_t len = 0;
  Begin(info, &text, &len, "open");
  uint8_t tag[kTagBytes];
  memcpy(tag, text + len, kTagBytes);
  int outl = 0;
  int finl = 0;
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, kTagBytes, tag) != 1 ||
      EVP_CipherUpdate(ctx_, text, &outl, text, static_cast<int>(len)) != 1) {
    throw Napi::Error::New(env, "open: OpenSSL failed");
  }
  bool ok = EVP_CipherFinal_ex(ctx_, text + outl, &finl) == 1;
  return Napi::Boolean::New(env, ok);
}

}  // namespace dptcp
