// Linux capabilities as /proc/self/status shows them: what `doctor` reports
// and what a refused TUN device is explained by.

/** CAP_DAC_OVERRIDE (linux/capability.h). */
export const CAP_DAC_OVERRIDE = 1;
/** CAP_NET_ADMIN (linux/capability.h). */
export const CAP_NET_ADMIN = 12;
/** CAP_SYS_NICE (linux/capability.h). */
export const CAP_SYS_NICE = 23;

/** The effective capability set from /proc/self/status, or undefined if it is not there. */
export function capEff(procStatus: string): bigint | undefined {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(procStatus);
  return m?.[1] === undefined ? undefined : BigInt(`0x${m[1]}`);
}

export function hasCap(procStatus: string, cap: number): boolean {
  const eff = capEff(procStatus);
  return eff !== undefined && ((eff >> BigInt(cap)) & 1n) === 1n;
}
