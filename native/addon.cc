#include <napi.h>
#include <string>
#include <vector>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "aead.h"
#include "eliminator.h"
#include "errors.h"
#include "fastpath.h"
#include "reader.h"
#include "sendpath.h"
#include "tun.h"
#include "watch.h"

namespace dptcp {

// setsockoptInt(fd, level, name, value): for the TCP options Node does not
// expose (TCP_NOTSENT_LOWAT, TCP_USER_TIMEOUT, SO_MAX_PACING_RATE). Which option and which value
// is decided in TypeScript.
static Napi::Value SetsockoptInt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber()) {
    throw Napi::TypeError::New(env, "setsockoptInt(fd, level, name, value) takes four numbers");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int level = info[1].As<Napi::Number>().Int32Value();
  int name = info[2].As<Napi::Number>().Int32Value();
  int value = info[3].As<Napi::Number>().Int32Value();
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
    throw ErrnoError(env, errno, "setsockopt", "setting a socket option on fd " + std::to_string(fd));
  }
  return env.Undefined();
}

// sendSome(fd, buffer): one non-blocking send(2) of the whole buffer to a
// connected stream socket; returns the bytes the kernel took (possibly fewer,
// 0 when its buffer is full) or -errno. What to do with the rest, and with an
// error, is decided in TypeScript (it hands both to the socket's own writer).
static Napi::Value SendSome(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsBuffer()) {
    throw Napi::TypeError::New(env, "sendSome(fd, buffer) takes a number and a Buffer");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
  ssize_t r;
  do {
    r = send(fd, b.Data(), b.Length(), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Napi::Number::New(env, errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno);
  return Napi::Number::New(env, static_cast<double>(r));
}

// unsentBytes(fd): the bytes written to a TCP socket that it has not sent yet
// (ioctl SIOCOUTQNSD), or -errno. TCP_NOTSENT_LOWAT bounds them only when the
// kernel starts a new segment buffer: each write may still fill the last one,
// up to 64 KiB. What to do with the figure is decided in TypeScript.
static Napi::Value UnsentBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "unsentBytes(fd) takes a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int n = 0;
  if (ioctl(fd, SIOCOUTQNSD, &n) != 0) return Napi::Number::New(env, -errno);
  return Napi::Number::New(env, n);
}

// tcpRttMicros(fd): the kernel's smoothed round trip of a TCP connection
// (TCP_INFO tcpi_rtt, microseconds; from its SYN exchange on, so known as soon
// as it is connected), or -errno. What it is used for is decided in TypeScript.
static Napi::Value TcpRttMicros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "tcpRttMicros(fd) takes a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct tcp_info ti = {};
  socklen_t len = sizeof(ti);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return Napi::Number::New(env, -errno);
  return Napi::Number::New(env, ti.tcpi_rtt);
}

// peerCredentials(fd): who is at the other end of a connected unix socket
// (SO_PEERCRED: the pid, uid and gid of the process that listened, or
// connected, as they were then). Whether to trust them is decided in
// TypeScript (dp-tcp status: src/ops/discovery.ts).
static Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "peerCredentials(fd) takes a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw ErrnoError(env, errno, "getsockopt", "reading the peer credentials of fd " + std::to_string(fd));
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, cred.pid));
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  return o;
}

// execv(path, argv): replaces the program of this process, keeping its pid,
// environment, and stdin, stdout and stderr (Node marks them close-on-exec at
// start-up, like every descriptor it and libuv open; they are unmarked here).
// Returns only by throwing. When and with which arguments is decided in
// TypeScript (the tunnel restarts Node with its memory settings:
// src/cli/memory.ts).
static Napi::Value Execv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) {
    throw Napi::TypeError::New(env, "execv(path, argv) takes a string and an array of strings");
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<std::string> args;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "execv: every argument must be a string");
    args.push_back(v.As<Napi::String>().Utf8Value());
  }
  std::vector<char*> argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (int fd = 0; fd <= 2; fd++) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) != 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  execv(path.c_str(), argv.data());
  throw ErrnoError(env, errno, "execv", "restarting " + path);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Tun", Tun::Init(env));
  exports.Set("Eliminator", Eliminator::Init(env));
  exports.Set("FastPath", FastPath::Init(env));
  exports.Set("classifyPacket", Napi::Function::New(env, ClassifyPacketJs, "classifyPacket"));
  exports.Set("SocketReader", SocketReader::Init(env));
  exports.Set("SendPath", SendPath::Init(env));
  exports.Set("flowHash", Napi::Function::New(env, FlowHashJs, "flowHash"));
  exports.Set("Aead", Aead::Init(env));
  exports.Set("setsockoptInt", Napi::Function::New(env, SetsockoptInt, "setsockoptInt"));
  exports.Set("sendSome", Napi::Function::New(env, SendSome, "sendSome"));
  exports.Set("execv", Napi::Function::New(env, Execv, "execv"));
  exports.Set("unsentBytes", Napi::Function::New(env, UnsentBytes, "unsentBytes"));
  exports.Set("tcpRttMicros", Napi::Function::New(env, TcpRttMicros, "tcpRttMicros"));
  exports.Set("setDataLoop", Napi::Function::New(env, SetDataLoopJs, "setDataLoop"));
  exports.Set("dataLoopInfo", Napi::Function::New(env, DataLoopInfoJs, "dataLoopInfo"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("SOL_SOCKET", Napi::Number::New(env, SOL_SOCKET));
  c.Set("IPPROTO_TCP", Napi::Number::New(env, IPPROTO_TCP));
  c.Set("TCP_NOTSENT_LOWAT", Napi::Number::New(env, TCP_NOTSENT_LOWAT));
  c.Set("TCP_USER_TIMEOUT", Napi::Number::New(env, TCP_USER_TIMEOUT));
  c.Set("SO_SNDBUF", Napi::Number::New(env, SO_SNDBUF));
  c.Set("SO_MAX_PACING_RATE", Napi::Number::New(env, SO_MAX_PACING_RATE));
  c.Set("EAGAIN", Napi::Number::New(env, EAGAIN));
  c.Set("TUN_F_CSUM", Napi::Number::New(env, TUN_F_CSUM));
  c.Set("TUN_F_TSO4", Napi::Number::New(env, TUN_F_TSO4));
  c.Set("TUN_F_TSO6", Napi::Number::New(env, TUN_F_TSO6));
  // Newer than the headers of some distributions; the values are kernel ABI.
  c.Set("TUN_F_USO4", Napi::Number::New(env, 0x20));
  c.Set("TUN_F_USO6", Napi::Number::New(env, 0x40));
  c.Set("VIRTIO_NET_HDR_BYTES", Napi::Number::New(env, kVirtioNetHdrBytes));
  exports.Set("constants", c);
  return exports;
}

}  // namespace dptcp

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dptcp::Init(env, exports); }

NODE_API_MODULE(dptcp, InitModule)
