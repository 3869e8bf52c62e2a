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

  it('a terminated Worker leaves no device behind (environment cleanup hook)', async () => {
    assert.deepEqual(await probe('worker'), { existedInWorker: true, goneAfterTerminate: true });
  });
});
