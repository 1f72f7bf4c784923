// The dashboard's only way to the server: JSON over /api/v1, and server-sent event streams.

export class ApiError extends Error {
  /** ``status``: HTTP status (0: no response); ``detail``: the server's detail (a string,
   * or for 422 a list of {field, msg, type}). */
  constructor(status, detail, message) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

function describe(status, detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${d.field || "request"}: ${d.msg}`).join("; ");
  return `HTTP ${status}`;
}

async function request(method, path, body) {
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, null, `the server could not be reached (${error.message})`);
  }
  if (response.status === 204) return null;
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const detail = payload?.detail ?? null;
    throw new ApiError(response.status, detail, describe(response.status, detail));
  }
  return payload;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body ?? {}),
  delete: (path) => request("DELETE", path),
};

/**
 * Follow a server-sent event stream under /api/v1 (``/events``, ``/runs/{id}/events``).
 * ``handlers``: {run(run), end(run), deleted({id}), open(isReconnect), lost()}. The server
 * closes a stream every few seconds and the browser reconnects; ``end`` closes it for good.
 * Returns a function that closes the stream.
 */
export function follow(path, handlers) {
  const source = new EventSource(`/api/v1${path}`);
  let opened = 0;
  const parse = (event) => JSON.parse(event.data);
  source.addEventListener("open", () => handlers.open?.(opened++ > 0));
  source.addEventListener("run", (event) => handlers.run?.(parse(event)));
  source.addEventListener("deleted", (event) => {
    handlers.deleted?.(parse(event));
    if (path !== "/events") source.close();
  });
  source.addEventListener("end", (event) => {
    source.close();
    handlers.end?.(parse(event));
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) handlers.lost?.();
  });
  return () => source.close();
}
