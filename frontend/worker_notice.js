// The notice that no worker is running while runs wait in the queue. GET /api/v1/health
// counts the workers alive (``workers.alive``); with none, the API still accepts runs, and they
// wait until a worker starts. The pages say when to read /health again, from their live streams.
import { api } from "./api.js";
import { h, replace } from "./dom.js";

const howToStart = () => ["(", h("code", {}, "dynascope worker"), ", or ", h("code", {}, "dynascope up"),
  " for everything on one machine)."];

/**
 * The notice (a hidden element until needed) and ``check()``, which reads /health again: one
 * read at a time, and a call during one reads once more after it. When no worker is alive it
 * asks ``queuedRuns()`` (a number, or a promise of one) how many queued runs wait, and shows
 * ``waiting(n)`` (the sentence's subject and verb, "this run waits") if there are any. It shows
 * nothing while /health cannot be read, or does not list workers (an older server).
 */
export function workerNotice({ queuedRuns, waiting }) {
  const element = h("div", { class: "banner warn", id: "no-worker", role: "status", hidden: true });
  let reading = null;
  let again = false;

  async function read() {
    let alive = null;
    try {
      alive = (await api.get("/health"))?.workers?.alive ?? null;
    } catch {
      alive = null; // the page says what it cannot load; this notice is about workers only
    }
    const queued = alive === 0 ? await Promise.resolve(queuedRuns()).catch(() => 0) : 0;
    if (queued > 0) {
      replace(element, h("strong", {}, "No worker is running: "),
        `${waiting(queued)} until one starts `, howToStart());
    }
    element.hidden = !(queued > 0);
    element.dataset.workersAlive = String(alive ?? "unknown"); // what the last read said
  }

  async function check() {
    if (reading) {
      again = true;
      return reading;
    }
    reading = read();
    try {
      await reading;
    } finally {
      reading = null;
      if (again) {
        again = false;
        check();
      }
    }
  }

  return { element, check };
}
