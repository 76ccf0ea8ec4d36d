/**
 * SeededRandom is a small deterministic random source (xoshiro128**, seeded through
 * splitmix32) so that a partition, a shuffle or an initialisation is the same on every
 * machine for the same seed. Math.random cannot be seeded, so nothing here uses it.
 */
export class SeededRandom {
  private readonly state = new Uint32Array(4);
  /** A second standard normal from the last polar draw, handed out by the next normal(). */
  private spareNormal: number | undefined;

  constructor(seed: number) {
    // splitmix32 spreads even a small or zero seed over all 128 bits of state.
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.state[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** nextUint32 returns 32 uniformly random bits. */
  nextUint32(): number {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** next returns a number in the open interval (0, 1), so its logarithm is finite. */
  next(): number {
    return (this.nextUint32() + 0.5) / 0x100000000;
  }

  /** uniform returns a number in the open interval (low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.next();
  }

  /** int returns an integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** normal returns a standard normal draw (Marsaglia's polar method). */
  normal(): number {
    if (this.spareNormal !== undefined) {
      const spare = this.spareNormal;
      this.spareNormal = undefined;
      return spare;
    }
    for (;;) {
      const u = 2 * this.next() - 1;
      const v = 2 * this.next() - 1;
      const s = u * u + v * v;
      if (s >= 1 || s === 0) continue;
      const scale = Math.sqrt((-2 * Math.log(s)) / s);
      this.spareNormal = v * scale;
      return u * scale;
    }
  }

  /**
   * logGamma returns the logarithm of a Gamma(shape, 1) draw. Marsaglia and Tsang's method
   * serves shape >= 1; a smaller shape uses Gamma(shape + 1) * U^(1/shape), kept in log space
   * because for shape near 0.01 the product underflows to 0 in plain floating point.
   */
  logGamma(shape: number): number {
    if (shape < 1) return this.logGamma(shape + 1) + Math.log(this.next()) / shape;
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      const x = this.normal();
      const t = 1 + c * x;
      if (t <= 0) continue;
      const v = t * t * t;
      const u = this.next();
      if (u < 1 - 0.0331 * x ** 4) return Math.log(d * v);
      if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return Math.log(d * v);
    }
  }

  /** gamma returns a Gamma(shape, 1) draw. */
  gamma(shape: number): number {
    return Math.exp(this.logGamma(shape));
  }

  /** dirichlet returns k proportions summing to 1, drawn from Dir(alpha, ..., alpha). */
  dirichlet(alpha: number, k: number): number[] {
    const logs = Array.from({ length: k }, () => this.logGamma(alpha));
    const max = Math.max(...logs);
    const weights = logs.map((l) => Math.exp(l - max));
    const sum = weights.reduce((a, b) => a + b, 0);
    return weights.map((w) => w / sum);
  }

  /** shuffle permutes `items` in place (Fisher-Yates) and returns it. */
  shuffle<A extends { length: number; [i: number]: unknown }>(items: A): A {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }

  /** permutation returns 0..n-1 in a random order. */
  permutation(n: number): Uint32Array {
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    return this.shuffle(order);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
