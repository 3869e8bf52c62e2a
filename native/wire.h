#pragma once
#include <cstddef>
#include <cstdint>

namespace dptcp {

// The DATA frame of docs/protocol.md (src/protocol/frame.ts), as the native
// paths read and write it: length (4, big-endian: what follows it), version,
// type, flags, reserved, the sequence number (8), the packet.
constexpr uint8_t kVersion = 2;
constexpr uint8_t kTypeData = 3;
constexpr size_t kDataHeaderBytes = 16;
constexpr uint64_t kMaxSeq = 9007199254740991ull;  // 2^53 - 1: exact in a double

inline uint32_t Be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

inline uint64_t Be64(const uint8_t* p) { return (static_cast<uint64_t>(Be32(p)) << 32) | Be32(p + 4); }

// writeDataHeader of src/protocol/frame.ts (flags 0): the header of a DATA frame
// carrying `packetBytes` at `frame`, whose packet follows the header.
inline void WriteDataHeader(uint8_t* frame, uint64_t seq, size_t packetBytes) {
  uint32_t length = static_cast<uint32_t>(kDataHeaderBytes - 4 + packetBytes);
  for (int b = 0; b < 4; b++) frame[b] = static_cast<uint8_t>(length >> (24 - 8 * b));
  frame[4] = kVersion;
  frame[5] = kTypeData;
  frame[6] = 0;
  frame[7] = 0;
  for (int b = 0; b < 8; b++) frame[8 + b] = static_cast<uint8_t>(seq >> (56 - 8 * b));
}

}  // namespace dptcp
