// oO's pages talk to the JSON API of their own origin through these helpers. The session is the
// HttpOnly cookie the server set: nothing here reads, writes or keeps a token.

/** A problem answer (`application/problem+json`), or a network failure. */
export class Problem extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the API: same origin, JSON in and out. Returns `{status, body}` for 2xx answers (body
 * null for 204) and throws a Problem otherwise. `bearer` is for the console only.
 */
export async function call(method, path, body, bearer) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: bearer ? "omit" : "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new Problem(0, "offline", "oO cannot be reached. Check your connection and try again.");
  }
  if (response.status === 204) return { status: 204, body: null };
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  if (response.ok) return { status: response.status, body: parsed };
  throw new Problem(
    response.status,
    (parsed && parsed.code) || "error",
    (parsed && (parsed.detail || parsed.title)) || `The server answered ${response.status}.`,
  );
}

/** Sends the person to the sign-in page when the session is missing or over. */
export function signInAgain() {
  window.location.replace("/signin");
}

/** Shows `message` in the element with id `id` (a live region), or clears it. */
export function say(id, message) {
  const el = document.getElementById(id);
  if (el) el.textContent = message || "";
}

/** Says in the live region `id` what went wrong: the API's own words for a problem, else
 * `fallback`. */
export function sayProblem(id, e, fallback = "Something went wrong.") {
  say(id, e instanceof Problem ? e.message : fallback);
}

/** A new element with attributes (`text` sets its text) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/** Calls `call` and handles a lost session by going to sign in; other problems are thrown. */
export async function session(method, path, body) {
  try {
    return await call(method, path, body);
  } catch (e) {
    if (e instanceof Problem && e.status === 401) {
      signInAgain();
      return new Promise(() => {});
    }
    throw e;
  }
}

/** A date and time in the person's own locale. */
export function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** Registers the service worker that keeps the app's shell for offline use. */
export function installable() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  }
}
