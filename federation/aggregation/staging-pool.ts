/**
 * StagingPool lends a bounded number of model-sized float32 buffers, one per update being
 * received. A borrower that finds every buffer taken waits in line; while it waits the
 * aggregator does not read its stream, so gRPC flow control holds the sender back and the
 * bytes stay on the sender's side. Peak memory is therefore `slots` models, whatever the number
 * of sites that push at once.
 */
export class StagingPool {
  private readonly free: Float32Array[] = [];
  private readonly waiting: Array<(buffer: Float32Array) => void> = [];
  private created = 0;

  constructor(
    readonly size: number,
    readonly slots: number,
  ) {
    if (!Number.isInteger(slots) || slots < 1) {
      throw new Error(`staging slots ${slots}: expected an integer >= 1`);
    }
  }

  /** acquire resolves with a buffer when one is free; buffers are made lazily. */
  acquire(): Promise<Float32Array> {
    const buffer = this.free.pop();
    if (buffer) return Promise.resolve(buffer);
    if (this.created < this.slots) {
      this.created += 1;
      return Promise.resolve(new Float32Array(this.size));
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /**
   * release hands a buffer back (to the next in line, or to the pool). A borrower whose stream
   * ended while it waited still gets its buffer and must release it at once.
   */
  release(buffer: Float32Array): void {
    const next = this.waiting.shift();
    if (next) next(buffer);
    else this.free.push(buffer);
  }
}
