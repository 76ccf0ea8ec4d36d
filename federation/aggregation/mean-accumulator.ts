/**
 * MeanAccumulator keeps the example-weighted sum of the round's accepted updates in one
 * float64 vector of model size, whatever the number of sites: memory is O(model).
 *
 * Float64 keeps the weighted sum of float32 deltas exact enough that the order in which
 * sites arrive changes the mean only in its last float32 bit, if at all.
 *
 * TODO: updates are folded in arrival order, so two runs of the same job can differ in the last
 * bit of the global model; bit-for-bit reproducible runs would need a fixed fold order.
 */
export class MeanAccumulator {
  private readonly sum: Float64Array;
  private weight = 0;
  private count = 0;

  constructor(readonly size: number) {
    this.sum = new Float64Array(size);
  }

  /** updates is how many updates have been folded in. */
  get updates(): number {
    return this.count;
  }

  /** totalWeight is the sum of the folded updates' weights (their example counts). */
  get totalWeight(): number {
    return this.weight;
  }

  /**
   * fold adds `weight * update` to the sum. It runs to completion synchronously, so no other
   * update can interleave with it, and it is only called with an update that has passed every
   * check: a partially folded update cannot exist.
   */
  fold(update: Float32Array, weight: number): void {
    if (update.length !== this.size) {
      throw new Error(
        `update of ${update.length} elements folded into an aggregate of ${this.size}`,
      );
    }
    if (!(weight > 0) || !Number.isFinite(weight)) {
      throw new Error(`update weight ${weight}: expected a positive finite number`);
    }
    const sum = this.sum;
    for (let i = 0; i < sum.length; i++) sum[i] += weight * update[i];
    this.weight += weight;
    this.count += 1;
  }

  /**
   * takeMean turns the running sum into the weighted mean in place and returns it: no second
   * model-sized vector is allocated. The accumulator must be reset before the next fold.
   */
  takeMean(): Float64Array {
    if (this.count === 0) throw new Error('mean of an empty aggregate');
    const sum = this.sum;
    const inv = 1 / this.weight;
    for (let i = 0; i < sum.length; i++) sum[i] *= inv;
    this.weight = 0;
    this.count = 0;
    return sum;
  }

  /** snapshot copies the running sum, for tests and checks that it did not change. */
  snapshot(): { sum: Float64Array; weight: number; updates: number } {
    return { sum: new Float64Array(this.sum), weight: this.weight, updates: this.count };
  }

  /** reset empties the aggregate for the next round, reusing its memory. */
  reset(): void {
    this.sum.fill(0);
    this.weight = 0;
    this.count = 0;
  }
}
