/**
 * renderRoundPlot draws accuracy and loss per round as a standalone SVG a browser opens.
 *
 * Hand-written rather than a plotting package: the plot is two polylines with axes, and the
 * maintained packages that render charts server-side (vega, chart.js with a canvas) bring a
 * headless canvas or a large runtime for that.
 */
export function renderRoundPlot(
  title: string,
  points: ReadonlyArray<{ round: number; accuracy?: number; loss?: number }>,
): string {
  const width = 720;
  const height = 300;
  const panel = { w: 300, h: 200, top: 50 };
  const panels = [
    { key: 'accuracy' as const, label: 'accuracy', x: 60, color: '#1f77b4' },
    { key: 'loss' as const, label: 'loss', x: 420, color: '#d62728' },
  ];
  const rounds = points.map((p) => p.round);
  const minRound = Math.min(...rounds, 1);
  const maxRound = Math.max(...rounds, minRound + 1);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
  ];
  for (const p of panels) {
    const values = points
      .filter((q) => Number.isFinite(q[p.key]))
      .map((q) => ({ round: q.round, v: q[p.key]! }));
    let lo = p.key === 'accuracy' ? 0 : Math.min(...values.map((v) => v.v), 0);
    let hi = p.key === 'accuracy' ? 1 : Math.max(...values.map((v) => v.v), 1e-9);
    if (hi === lo) [lo, hi] = [lo - 1, hi + 1];
    const sx = (r: number): number => p.x + ((r - minRound) / (maxRound - minRound)) * panel.w;
    const sy = (v: number): number => panel.top + panel.h - ((v - lo) / (hi - lo)) * panel.h;
    parts.push(
      `<g><text x="${p.x + panel.w / 2}" y="${panel.top - 8}" text-anchor="middle">${p.label} per round</text>`,
      `<line x1="${p.x}" y1="${panel.top + panel.h}" x2="${p.x + panel.w}" y2="${panel.top + panel.h}" stroke="black"/>`,
      `<line x1="${p.x}" y1="${panel.top}" x2="${p.x}" y2="${panel.top + panel.h}" stroke="black"/>`,
    );
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      parts.push(
        `<text x="${p.x - 4}" y="${sy(v) + 4}" text-anchor="end">${formatTick(v)}</text>`,
        `<line x1="${p.x}" y1="${sy(v)}" x2="${p.x + panel.w}" y2="${sy(v)}" stroke="#ddd"/>`,
      );
    }
    parts.push(
      `<text x="${p.x}" y="${panel.top + panel.h + 16}" text-anchor="middle">${minRound}</text>`,
      `<text x="${p.x + panel.w}" y="${panel.top + panel.h + 16}" text-anchor="middle">${maxRound}</text>`,
      `<text x="${p.x + panel.w / 2}" y="${panel.top + panel.h + 30}" text-anchor="middle">round</text>`,
    );
    if (values.length > 0) {
      const path = values.map((v) => `${sx(v.round).toFixed(1)},${sy(v.v).toFixed(1)}`).join(' ');
      parts.push(`<polyline fill="none" stroke="${p.color}" stroke-width="2" points="${path}"/>`);
      for (const v of values) {
        parts.push(
          `<circle cx="${sx(v.round).toFixed(1)}" cy="${sy(v.v).toFixed(1)}" r="2.5" fill="${p.color}"><title>round ${v.round}: ${v.v.toFixed(4)}</title></circle>`,
        );
      }
    }
    parts.push('</g>');
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function formatTick(v: number): string {
  return Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(2);
}

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!,
  );
}
