import { WorkQueue } from '../../../operator/controller/work-queue';

describe('WorkQueue', () => {
  test('a key added many times is handed out once', async () => {
    const queue = new WorkQueue();
    queue.add('ns/a');
    queue.add('ns/a');
    queue.add('ns/b');
    expect(await queue.next()).toBe('ns/a');
    expect(await queue.next()).toBe('ns/b');
    expect(queue.length).toBe(0);
  });

  test('a key is never handed to two workers at once; an add while active queues it for after', async () => {
    const queue = new WorkQueue();
    queue.add('ns/a');
    const key = await queue.next();
    queue.add('ns/a');
    expect(queue.length).toBe(0);

    let second: string | undefined;
    void queue.next().then((k) => (second = k));
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBeUndefined();

    queue.done(key!);
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBe('ns/a');
  });

  test('retries back off exponentially per key up to the limit, and forget resets them', () => {
    jest.useFakeTimers();
    try {
      const queue = new WorkQueue(100, 350);
      expect(queue.retry('ns/a')).toBe(100);
      expect(queue.retry('ns/a')).toBe(200);
      expect(queue.retry('ns/a')).toBe(350);
      expect(queue.retry('ns/b')).toBe(100);
      queue.forget('ns/a');
      expect(queue.retry('ns/a')).toBe(100);
      queue.close();
    } finally {
      jest.useRealTimers();
    }
  });

  test('addAfter queues the key once its delay has passed', async () => {
    jest.useFakeTimers();
    try {
      const queue = new WorkQueue();
      queue.addAfter('ns/a', 1000);
      expect(queue.length).toBe(0);
      jest.advanceTimersByTime(999);
      expect(queue.length).toBe(0);
      jest.advanceTimersByTime(1);
      expect(queue.length).toBe(1);
      expect(await queue.next()).toBe('ns/a');
    } finally {
      jest.useRealTimers();
    }
  });

  test('of two pending delays for a key the sooner one wins', () => {
    jest.useFakeTimers();
    try {
      const queue = new WorkQueue();
      queue.addAfter('ns/a', 30_000);
      queue.addAfter('ns/a', 2_000);
      queue.addAfter('ns/a', 10_000);
      jest.advanceTimersByTime(2_000);
      expect(queue.length).toBe(1);
      queue.close();
    } finally {
      jest.useRealTimers();
    }
  });

  test('close wakes waiting workers with undefined', async () => {
    const queue = new WorkQueue();
    const waiting = queue.next();
    queue.close();
    expect(await waiting).toBeUndefined();
    queue.add('ns/a');
    expect(await queue.next()).toBeUndefined();
  });
});
