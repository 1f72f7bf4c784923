// Mount chart definitions (charts.js, compare_charts.js) as panels, and draw them from a
// context: each panel keeps its own settings (log axes, selections) and redraws alone; a
// definition's heading(ctx), if it has one, retitles its panel for the runs drawn.
import { Panel } from "./plotting.js";

const TOGGLES = { logY: "log y", logZ: "log colour" };

/** A panel for ``def`` with its controls; ``chart.draw(ctx)`` draws it from ``ctx``. */
export function mountChart(def, { onRetry, prepare } = {}) {
  const panel = new Panel(def);
  const settings = { ...(def.settings ?? {}) };
  let context = null;
  let selectsBuilt = false;
  const chart = {
    def, panel, settings,
    async draw(ctx) {
      context = ctx;
      if (def.heading) panel.setHeading(def.heading(ctx));
      const failed = (def.needs ?? []).find((source) => ctx.errors?.[source]);
      if (failed) {
        panel.setError(`Could not load the ${failed}: ${ctx.errors[failed]}.`, onRetry);
        return;
      }
      const pending = (def.needs ?? []).find((source) => ctx.loading?.has(source));
      if (pending) {
        panel.setLoading();
        return;
      }
      if (!selectsBuilt && def.selects) {
        selectsBuilt = true;
        for (const select of def.selects) {
          const choices = select.choices(ctx);
          if (choices.length > 1) {
            settings[select.key] ??= choices[0][0];
            panel.select(select.label, choices, settings[select.key], (value) => {
              settings[select.key] = value;
              chart.draw(context);
            });
          }
        }
      }
      let out;
      try {
        if (prepare) await prepare(def, settings, ctx, panel);
        out = def.build(ctx, settings);
      } catch (error) {
        console.error(def.id, error);
        panel.setError(`This chart could not be drawn: ${error.message}`);
        return;
      }
      panel.setNote(out.note);
      if (out.empty) panel.setEmpty(out.empty);
      else {
        try {
          await panel.draw(out.traces, out.layout, out.base);
        } catch (error) {
          console.error(def.id, error);
          panel.setError(`This chart could not be drawn: ${error.message}`);
        }
      }
    },
  };
  chart.buttons = {};
  for (const [key, label] of Object.entries(TOGGLES)) {
    if (key in settings) {
      chart.buttons[key] = panel.toggle(label, settings[key], (on) => {
        settings[key] = on;
        if (context) chart.draw(context);
      });
    }
  }
  return chart;
}
