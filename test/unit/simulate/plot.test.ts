import { renderRoundPlot } from '../../../operator/cli/simulate-plot';

/** The symbols of one mark group: Vega writes one <path> per point inside it. */
function symbolCount(svg: string): number {
  const groups = svg.match(/<g class="mark-symbol role-mark[^>]*>(.*?)<\/g>/gs) ?? [];
  return groups.reduce((n, g) => n + (g.match(/<path /g) ?? []).length, 0);
}

describe('renderRoundPlot', () => {
  test('draws one accuracy panel and one loss panel with a point per round', async () => {
    const svg = await renderRoundPlot('fmnist: global model per round', [
      { round: 1, accuracy: 0.61, loss: 1.2 },
      { round: 2, accuracy: 0.78, loss: 0.7 },
      { round: 3, accuracy: 0.83, loss: 0.5 },
    ]);

    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('fmnist: global model per round');
    expect(svg).toMatch(/>accuracy</);
    expect(svg).toMatch(/>loss</);
    expect(symbolCount(svg)).toBe(6);
  });

  test('leaves out a metric a round did not report', async () => {
    const svg = await renderRoundPlot('no held-out loss', [
      { round: 1, accuracy: 0.5 },
      { round: 2, accuracy: 0.6, loss: Number.NaN },
    ]);

    expect(symbolCount(svg)).toBe(2);
    expect(svg).not.toMatch(/>loss</);
  });
});
