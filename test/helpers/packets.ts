// Packet builders for tests: just enough IPv4/IPv6 + UDP (and an ICMP echo) to look real.

function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += (buf[buf.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function ipv4Udp(src: string, dst: string, payload: Buffer, id = 0): Buffer {
  const total = 20 + 8 + payload.length;
  const p = Buffer.alloc(total);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p.writeUInt16BE(id & 0xffff, 4);
  p[8] = 64;
  p[9] = 17;
  Buffer.from(src.split('.').map(Number)).copy(p, 12);
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  p.writeUInt16BE(checksum(p.subarray(0, 20)), 10);
  p.writeUInt16BE(40000, 20);
  p.writeUInt16BE(40001, 22);
  p.writeUInt16BE(8 + payload.length, 24);
  payload.copy(p, 28);
  return p;
}

/** An IPv4 ICMP echo request carrying `payload` (identifier 0x5151, sequence 1). */
export function ipv4EchoRequest(src: string, dst: string, payload: Buffer): Buffer {
  const p = Buffer.alloc(20 + 8 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 1;
  Buffer.from(src.split('.').map(Number)).copy(p, 12);
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  p.writeUInt16BE(checksum(p.subarray(0, 20)), 10);
  p[20] = 8;
  p.writeUInt16BE(0x5151, 24);
  p.writeUInt16BE(1, 26);
  payload.copy(p, 28);
  p.writeUInt16BE(checksum(p.subarray(20)), 22);
  return p;
}

export function ipv6Udp(srcHex: string, dstHex: string, payload: Buffer): Buffer {
  const p = Buffer.alloc(40 + 8 + payload.length);
  p[0] = 0x60;
  p.writeUInt16BE(8 + payload.length, 4);
  p[6] = 17;
  p[7] = 64;
  Buffer.from(srcHex, 'hex').copy(p, 8);
  Buffer.from(dstHex, 'hex').copy(p, 24);
  p.writeUInt16BE(40000, 40);
  p.writeUInt16BE(40001, 42);
  p.writeUInt16BE(8 + payload.length, 44);
  payload.copy(p, 48);
  return p;
}

/** A numbered IPv4 packet whose number can be read back with packetNumber. */
export function numbered(n: number, src = '10.0.0.2', dst = '10.0.0.1', size = 100): Buffer {
  const payload = Buffer.alloc(Math.max(4, size - 28));
  payload.writeUInt32BE(n, 0);
  return ipv4Udp(src, dst, payload, n);
}

export function packetNumber(p: Buffer): number {
  const v = (p[0] as number) >> 4;
  return p.readUInt32BE(v === 4 ? 28 : 48);
}
