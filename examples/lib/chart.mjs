// The loss curves of several runs on one chart, as SVG, with Vega-Lite (rendered in Node,
// no browser): each run's per-step training loss faintly, and its moving average on top.
import * as vega from 'vega';
import { compile } from 'vega-lite';

/** `runs`: [{ label, steps: [{ step, loss }] }] → SVG text. */
export async function lossChartSvg(runs, title) {
  const values = runs.flatMap((r) => r.steps.map((s) => ({ run: r.label, step: s.step, loss: s.loss })));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 640,
    height: 360,
    data: { values },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'optimiser step' },
      color: { field: 'run', type: 'nominal', title: null, legend: { orient: 'top-right' } },
    },
    layer: [
      {
        mark: { type: 'line', opacity: 0.25, strokeWidth: 1 },
        encoding: { y: { field: 'loss', type: 'quantitative', title: 'training loss' } },
      },
      {
        transform: [
          { window: [{ op: 'mean', field: 'loss', as: 'smoothed' }], frame: [-7, 7], groupby: ['run'], sort: [{ field: 'step' }] },
        ],
        mark: { type: 'line', strokeWidth: 2.5 },
        encoding: { y: { field: 'smoothed', type: 'quantitative' } },
      },
    ],
    config: { background: 'white' },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}
