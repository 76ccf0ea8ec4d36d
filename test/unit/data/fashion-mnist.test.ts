import { loadDataset } from '../../../federation/data/dataset';

const FASHION_MNIST = process.env.FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist';

describe('loadDataset on the installed Fashion-MNIST', () => {
  it.each([
    ['train', 60000],
    ['test', 10000],
  ] as const)(
    'reads the %s split: %i images of [1, 28, 28] in [0, 1], 10 classes',
    async (split, n) => {
      const ds = await loadDataset(FASHION_MNIST, split);

      expect(ds.count).toBe(n);
      expect(ds.sampleShape).toEqual([1, 28, 28]);
      expect(ds.features).toHaveLength(n * 784);
      expect(ds.labels).toHaveLength(n);
      expect(ds.numClasses).toBe(10);
      let min = Infinity;
      let max = -Infinity;
      for (const v of ds.features) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
      expect(min).toBe(0);
      expect(max).toBe(1);
      // Fashion-MNIST is balanced: n / 10 samples of every class.
      const counts = new Array(10).fill(0);
      for (const label of ds.labels) counts[label]++;
      expect(counts).toEqual(new Array(10).fill(n / 10));
    },
  );
});
