import * as fs from 'fs';
import { Aggregator } from '../federation/aggregator/aggregator';
import { createLogger } from '../federation/log';

/**
 * The aggregator process that bench/aggregator-memory.ts measures: a real Aggregator over a
 * synthetic one-tensor model of `argv[2]` MB, plain TCP (development mode, so the figure is
 * the aggregator's own memory, not TLS buffers), staging slots `argv[3]`. It prints its port.
 */
async function main(): Promise<void> {
  const modelMb = Number(process.argv[2]);
  const slots = Number(process.argv[3] ?? 2);
  const size = Math.floor((modelMb * 1024 * 1024) / 4);
  const aggregator = new Aggregator({
    job: 'bench',
    initialModel: [{ name: 'w', dims: [size], data: new Float32Array(size) }],
    strategy: 'fedavg',
    insecureDev: true,
    stagingSlots: slots,
    logger: createLogger('aggregator', fs.createWriteStream('/dev/null')),
  });
  const port = await aggregator.listen('127.0.0.1:0');
  process.stdout.write(`${port}\n`);
}

void main();
