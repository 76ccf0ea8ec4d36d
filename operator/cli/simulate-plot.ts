import * as vega from 'vega';
import { compile, TopLevelSpec } from 'vega-lite';

/** RoundPoint is one closed round's global-model figures, as metrics.json records them. */
export interface RoundPoint {
  round: number;
  accuracy?: number;
  loss?: number;
}

/**
 * renderRoundPlot draws accuracy and loss per round, side by side with their own y scales,
 * as a standalone SVG a browser opens. Vega-Lite describes the chart and Vega renders it
 * headless (no canvas is needed for SVG).
 */
export async function renderRoundPlot(
  title: string,
  points: ReadonlyArray<RoundPoint>,
): Promise<string> {
  const values = points.flatMap((p) =>
    (['accuracy', 'loss'] as const)
      .filter((metric) => Number.isFinite(p[metric]))
      .map((metric) => ({ round: p.round, metric, value: p[metric] })),
  );
  const spec: TopLevelSpec = {
    title,
    background: 'white',
    data: { values },
    facet: { column: { field: 'metric', type: 'nominal', title: null } },
    spec: {
      width: 300,
      height: 200,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'round', type: 'quantitative', axis: { tickMinStep: 1 } },
        y: { field: 'value', type: 'quantitative', scale: { zero: false }, title: null },
        color: { field: 'metric', type: 'nominal', legend: null },
      },
    },
    resolve: { scale: { y: 'independent' } },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
