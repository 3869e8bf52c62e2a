#pragma once
#include <napi.h>
#include <openssl/evp.h>

namespace dptcp {

// One AEAD key for one direction (AES-256-GCM or ChaCha20-Poly1305 through
// the OpenSSL that Node links), sealing or opening records in place in a
// caller's buffer: no allocation and no copy per record. Which key, which
// counter, and whether a counter may be used (replay window, limits) is
// decided in TypeScript (src/secure/record.ts, keypair.ts).
class Aead : public Napi::ObjectWrap<Aead> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Aead(const Napi::CallbackInfo& info);
  ~Aead() override;

 private:
  Napi::Value Seal(const Napi::CallbackInfo& info);
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  // The record's bytes from the arguments (buffer, textStart, textLength, counter, aadStart), checked.
  bool Begin(const Napi::CallbackInfo& info, uint8_t** text, size_t* len, const char* what);
  void Free();

  EVP_CIPHER_CTX* ctx_ = nullptr;
  bool encrypt_ = false;
};

}  // namespace dptcp
