/**
 * WorkQueue holds the keys (`namespace/name`) of the jobs that need a reconcile. It keeps the
 * promises a controller relies on: a key is queued at most once however often it is added, a
 * key is never handed to two workers at once (an add while it is being worked on queues it
 * again for after), and a key that failed comes back after a per-key exponential backoff.
 */
export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly order: string[] = [];
  private readonly active = new Set<string>();
  /** Keys added while active; they are queued again when their worker is done. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { timer: NodeJS.Timeout; due: number }>();
  private readonly waiting: Array<(key: string | undefined) => void> = [];
  private closed = false;

  /**
   * @param baseDelayMs first retry delay after a failure (default 500 ms)
   * @param maxDelayMs longest retry delay (default 60 s)
   */
  constructor(
    private readonly baseDelayMs = 500,
    private readonly maxDelayMs = 60_000,
  ) {}

  /** add queues `key` now, unless it is queued already. */
  add(key: string): void {
    if (this.closed) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    const waiter = this.waiting.shift();
    if (waiter) {
      this.active.add(key);
      waiter(key);
      return;
    }
    this.queued.add(key);
    this.order.push(key);
  }

  /** addAfter queues `key` once `delayMs` has passed; of two pending delays the sooner wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.closed) return;
    const due = Date.now() + delayMs;
    const pending = this.timers.get(key);
    if (pending && pending.due <= due) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.timers.set(key, { timer, due });
  }

  /** retry queues `key` after its backoff, which doubles with each failure in a row. */
  retry(key: string): number {
    const failures = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, failures);
    const delay = Math.min(this.baseDelayMs * 2 ** (failures - 1), this.maxDelayMs);
    this.addAfter(key, delay);
    return delay;
  }

  /** forget resets the backoff of `key` after a reconcile that succeeded. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /**
   * next resolves with the next key to work on, marking it active until `done(key)`; it
   * resolves with undefined once the queue is closed.
   */
  next(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.order.shift();
    if (key !== undefined) {
      this.queued.delete(key);
      this.active.add(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** done ends the work on `key`; an add that came meanwhile queues it again. */
  done(key: string): void {
    this.active.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  /** length is the number of keys waiting (not the active ones). */
  get length(): number {
    return this.order.length;
  }

  /** close wakes every waiting worker with undefined and drops the timers. */
  close(): void {
    this.closed = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const waiter of this.waiting.splice(0)) waiter(undefined);
  }
}
