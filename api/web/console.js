// The operator's console: projections and relay, rebuilds and their progress, the serving and
// shadow policies, the log's latest events. The admin token lives in this module's memory only
// and goes out as a bearer token; no cookie is ever sent with it (`call` omits credentials).
// Read-only except starting a rebuild.
import { Problem, call, el, say, sayProblem, when } from "/assets/api.js";

const REFRESH_MS = 1000;
let token = null;
let timer = null;

function cell(text, cls) {
  return el("td", cls ? { text, class: cls } : { text });
}

function num(n) {
  return typeof n === "number" ? n.toLocaleString() : "—";
}

async function admin(method, path) {
  return call(method, path, undefined, token);
}

function projectionRow(p) {
  const tr = el(
    "tr",
    { "data-name": p.name, "data-status": p.status },
    cell(p.name),
    cell(p.kind),
    cell(p.last_error ? `${p.status}: ${p.last_error}` : p.status),
    cell(p.position || "—", "num"),
    cell(num(p.lag_events), "num"),
    cell(num(p.events_applied), "num"),
  );
  const r = p.rebuild;
  tr.append(
    r
      ? el(
          "td",
          {},
          el("progress", {
            max: Math.max(r.events_total, 1),
            value: r.events_applied,
            "aria-label": `${p.name} rebuild`,
          }),
          el("span", {
            text: ` ${num(r.events_applied)} / ${num(r.events_total)} (${Math.round(r.events_per_second)}/s)`,
          }),
        )
      : cell(p.status === "queued" ? "queued" : "—"),
  );
  const action = el("td");
  if (p.kind === "projection") {
    const button = el("button", { type: "button", text: "Rebuild", "aria-label": `Rebuild ${p.name}` });
    button.disabled = p.status === "rebuilding" || p.status === "queued";
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await admin("POST", `/admin/projections/${encodeURIComponent(p.name)}/rebuild`);
        say("status", `Rebuild of ${p.name} queued.`);
      } catch (e) {
        sayProblem("error", e, "The rebuild did not start.");
      }
      refresh();
    });
    action.append(button);
  }
  tr.append(action);
  return tr;
}

function policyRow(p) {
  return el(
    "tr",
    {},
    cell(p.spec),
    cell(p.role),
    cell(num(p.decisions), "num"),
    cell(p.mean_reward === null || p.mean_reward === undefined ? "—" : p.mean_reward.toFixed(3), "num"),
  );
}

function eventRow(e) {
  return el(
    "tr",
    {},
    cell(e.position, "num"),
    cell(when(e.recorded_at)),
    cell(e.event_type),
    cell(`${e.aggregate_type} ${e.aggregate_id.slice(0, 8)}… #${e.sequence}`),
    el("td", {}, el("pre", { text: JSON.stringify(e.payload) })),
  );
}

async function refresh() {
  clearTimeout(timer);
  if (!token) return;
  try {
    const [projections, policies, events] = await Promise.all([
      admin("GET", "/admin/projections"),
      admin("GET", "/admin/policies"),
      admin("GET", "/admin/events?latest=20"),
    ]);
    document.getElementById("projections").replaceChildren(...projections.body.projections.map(projectionRow));
    const p = policies.body;
    document.getElementById("policies").replaceChildren(policyRow(p.serving), ...p.shadows.map(policyRow));
    say("policies-window", `Over the latest ${num(p.window)} settled decisions.`);
    say(
      "promotion",
      p.last_promotion
        ? `Last promotion ${when(p.last_promotion.promoted_at)}: ${p.last_promotion.serving} replaced ${p.last_promotion.replaced}${p.last_promotion.forced ? " (forced)" : ""}.`
        : "No promotion yet: the configured line-up serves.",
    );
    document.getElementById("events").replaceChildren(...events.body.events.map(eventRow));
    document.getElementById("panels").hidden = false;
    document.getElementById("token-form").hidden = true;
    say("error", "");
  } catch (e) {
    if (e instanceof Problem && e.status === 401) {
      token = null;
      document.getElementById("panels").hidden = true;
      document.getElementById("token-form").hidden = false;
      say("status", "");
      say("error", "That token is not accepted.");
      return;
    }
    sayProblem("error", e, "The console could not refresh.");
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = document.getElementById("token");
  token = field.value.trim() || null;
  field.value = "";
  say("status", token ? "Token taken; refreshing every second." : "");
  refresh();
});
