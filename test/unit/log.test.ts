import { Writable } from 'stream';
import { createLogger } from '../../federation/log';

function captureLines(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().trim().split('\n'));
      done();
    },
  });
  return { stream, lines };
}

describe('createLogger', () => {
  it('writes one JSON object per line with the component, a fixed message and fields', () => {
    const { stream, lines } = captureLines();
    const log = createLogger('trainer', stream);

    log.info({ job: 'mnist', round: 3, site: 'a' }, 'round started');

    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]);
    expect(entry).toMatchObject({
      level: 'info',
      component: 'trainer',
      job: 'mnist',
      round: 3,
      site: 'a',
      msg: 'round started',
    });
    expect(typeof entry.time).toBe('string');
  });
});
