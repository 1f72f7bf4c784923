// The dashboard: mounts one page at a time in <main> as the URL's hash changes.
import { h, replace } from "./dom.js";
import { prefetchPlotly } from "./plotting.js";
import { currentRoute } from "./router.js";

const view = document.getElementById("view");
const pages = {
  runs: () => import("./runs_view.js"),
  new: () => import("./form_view.js"),
  detail: () => import("./detail_view.js"),
  compare: () => import("./compare_view.js"),
};
let dispose = null;
let token = 0;

async function route() {
  const mine = ++token;
  dispose?.();
  dispose = null;
  const where = currentRoute();
  delete document.documentElement.dataset.chartsDrawn;
  const section = where.page === "detail" ? "runs" : where.page;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // Compare charts need Plotly.js (the 1.5 MB cartesian bundle): download it beside the page's
  // code; the page runs it once its data requests are on their way. (A run's page knows which
  // bundle it needs only from the run.)
  if (where.page === "compare") prefetchPlotly("cartesian");
  try {
    const module = await pages[where.page]();
    if (mine !== token) return;
    replace(view);
    view.dataset.page = where.page;
    dispose = module.render(view, where) ?? null;
  } catch (error) {
    replace(view, h("p", { class: "banner error" }, `This page could not be shown: ${error.message}`));
  }
}

window.addEventListener("hashchange", () => {
  route();
  view.focus({ preventScroll: true });
  window.scrollTo(0, 0);
});
route();

// In-page jumps must not touch the hash (the hash is the route).
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  view.focus();
});
