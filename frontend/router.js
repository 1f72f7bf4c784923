// Hash URLs (shareable, no server routes needed):
//   #/runs?status=&name=&hp=     runs table
//   #/new?clone=ID               new-run form (a copy of run ID's spec)
//   #/runs/ID                    one run, every chart
//   #/compare?ids=1,2&x=step     runs overlaid

/** The current route: {page, id, params}. */
export function currentRoute() {
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "runs" && parts[1]) return { page: "detail", id: Number(parts[1]), params };
  if (parts[0] === "new") return { page: "new", params };
  if (parts[0] === "compare") return { page: "compare", params };
  return { page: "runs", params };
}

/** Rewrite the current URL's query (no navigation, no history entry). */
export function setQuery(values) {
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  for (const [key, value] of Object.entries(values)) {
    if (value === null || value === undefined || value === "") params.delete(key);
    else params.set(key, value);
  }
  const text = params.toString().replaceAll("%2C", ",");
  history.replaceState(null, "", `#${path}${text ? `?${text}` : ""}`);
}

/** A one-shot message for the next page (e.g. "run 12 submitted"). */
export function setFlash(value) {
  sessionStorage.setItem("dynascope.flash", JSON.stringify(value));
}

export function takeFlash() {
  const value = sessionStorage.getItem("dynascope.flash");
  sessionStorage.removeItem("dynascope.flash");
  return value ? JSON.parse(value) : null;
}
