// The native TUN device on a real kernel: batched reads and writes, with and
// without offloads, idempotent close, and the cleanup hook when a Worker that
// holds a device is terminated. Runs inside a network namespace of its own.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, skipReason, Testbed } from '../helpers/netns.js';

const skip = skipReason();

describe('native TUN device', { skip, timeout: 120_000 }, () => {
  let tb: Testbed;
  before(async () => {
    tb = await Testbed.create('nat');
  });
  after(async () => {
    await tb?.destroy();
  });

  const probe = async (mode: string): Promise<Record<string, unknown>> => {
    const { stdout } = await tb.run('server', process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/native-probe.ts'), mode], 30_000);
    return JSON.parse(stdout) as Record<string, unknown>;
  };

  it('reads what the kernel routes into it and delivers what is written to it', async () => {
    assert.deepEqual(await probe('io'), {
      vnetHdrBytes: 0,
      readDst: '10.9.0.2',
      readPayload: 'to the tunnel',
      written: 1,
      delivered: 'from the tunnel',
      existedWhileOpen: true,
      goneAfterClose: true,
    });
  });

  it('with offloads, every packet carries a 10-byte virtio_net_hdr both ways', async () => {
    const r = await probe('offload');
    assert.equal(r['vnetHdrBytes'], 10);
    assert.equal(r['readDst'], '10.9.0.2');
    assert.equal(r['readPayload'], 'to the tunnel');
    assert.equal(r['delivered'], 'from the tunnel');
    assert.equal(r['goneAfterClose'], true);
  });

  const vnetProbe = async (mode: string): Promise<Record<string, unknown>> => {
    const { stdout } = await tb.run('server', process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/vnet-probe.ts'), mode], 30_000);
    return JSON.parse(stdout) as Record<string, unknown>;
  };

  it('every virtio_net_hdr this kernel writes (TSO, USO, checksum offload) passes checkVnetPacket', async () => {
    const r = (await vnetProbe('capture')) as {
      answered: number;
      udpGso: boolean;
      packets: { kind: string; hex: string; fault: string | null }[];
    };
    assert.equal(r.answered, 2, 'both TCP handshakes were answered');
    const kinds = new Set(r.packets.map((p) => p.kind));
    for (const k of ['tcp4_syn', 'tcp4', 'tcp4_gso', 'tcp6_syn', 'tcp6', 'tcp6_gso', 'udp4', 'udp6']) {
      assert.ok(kinds.has(k), `saw ${k}: ${[...kinds].join(' ')}`);
    }
    if (r.udpGso) for (const k of ['udp4_gso', 'udp6_gso']) assert.ok(kinds.has(k), `saw ${k}`);
    for (const p of r.packets) assert.equal(p.fault, null, `${p.kind} ${p.hex}`);
  });

  it('a batch with a corrupted virtio_net_hdr: the others are written, one refusal is counted, no crash', async () => {
    const r = (await vnetProbe('write')) as {
      first: { delivered: string[]; written: number; refused: Record<string, number> };
      random: { total: number; accounted: number; written: number; refused: Record<string, number> };
    };
    assert.deepEqual(r.first, { delivered: ['one', 'two'], written: 2, refused: { bad_vnet_hdr: 1 } });
    // Random headers: every packet written or counted; and what the check passed, the kernel took.
    assert.equal(r.random.accounted, r.random.total);
    assert.ok(r.random.written > 0, 'some random headers passed');
    assert.deepEqual(Object.keys(r.random.refused), ['bad_vnet_hdr']);
  });

  it('a pinned batch stays intact while later batches are read, after it in its arena or in another; a pin that would leave no room is refused; a released arena is reused', async () => {
    assert.deepEqual(await probe('pins'), {
      pinnedPastArenas: true,
      packed: true,
      intactWhilePinned: true,
      refusedWhenFull: true,
      reusedAfterRelease: true,
      arenas: 8,
      batches: true,
    });
  });

  it('a closed device lets go of its callbacks: it and its read arenas can be collected', async () => {
    assert.deepEqual(await probe('collect'), { collected: ['device'], gone: true });
  });

  it('a terminated Worker leaves no device behind (environment cleanup hook)', async () => {
    assert.deepEqual(await probe('worker'), { existedInWorker: true, goneAfterTerminate: true });
  });
});
