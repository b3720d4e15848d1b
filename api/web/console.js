// The operator's console: projections and relay, rebuilds and their progress, the serving and
// shadow policies, the log's latest events. The admin token lives in this module's memory only
// and goes out as a bearer token; no cookie is ever sent with it (`call` omits credentials).
// Read-only except starting a rebuild.
import { Problem, call, say, when } from "/assets/api.js";

const REFRESH_MS = 1000;
let token = null;
let timer = null;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function num(n) {
  return typeof n === "number" ? n.toLocaleString() : "—";
}

async function admin(method, path) {
  return call(method, path, undefined, token);
}

function projectionRow(p) {
  const tr = row(
    cell(p.name),
    cell(p.kind),
    cell(p.last_error ? `${p.status}: ${p.last_error}` : p.status),
    cell(p.position || "—", "num"),
    cell(num(p.lag_events), "num"),
    cell(num(p.events_applied), "num"),
  );
  tr.dataset.name = p.name;
  tr.dataset.status = p.status;
  const progress = document.createElement("td");
  if (p.rebuild) {
    const bar = document.createElement("progress");
    bar.max = Math.max(p.rebuild.events_total, 1);
    bar.value = p.rebuild.events_applied;
    bar.setAttribute("aria-label", `${p.name} rebuild`);
    const label = document.createElement("span");
    label.textContent = ` ${num(p.rebuild.events_applied)} / ${num(p.rebuild.events_total)} (${Math.round(p.rebuild.events_per_second)}/s)`;
    progress.append(bar, label);
  } else {
    progress.textContent = p.status === "queued" ? "queued" : "—";
  }
  tr.append(progress);
  const action = document.createElement("td");
  if (p.kind === "projection") {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Rebuild";
    button.setAttribute("aria-label", `Rebuild ${p.name}`);
    button.disabled = p.status === "rebuilding" || p.status === "queued";
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await admin("POST", `/admin/projections/${encodeURIComponent(p.name)}/rebuild`);
        say("status", `Rebuild of ${p.name} queued.`);
      } catch (e) {
        say("error", e instanceof Problem ? e.message : "The rebuild did not start.");
      }
      refresh();
    });
    action.append(button);
  }
  tr.append(action);
  return tr;
}

function policyRow(p) {
  return row(
    cell(p.spec),
    cell(p.role),
    cell(num(p.decisions), "num"),
    cell(p.mean_reward === null || p.mean_reward === undefined ? "—" : p.mean_reward.toFixed(3), "num"),
  );
}

function eventRow(e) {
  const payload = document.createElement("td");
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(e.payload);
  payload.append(pre);
  return row(
    cell(e.position, "num"),
    cell(when(e.recorded_at)),
    cell(e.event_type),
    cell(`${e.aggregate_type} ${e.aggregate_id.slice(0, 8)}… #${e.sequence}`),
    payload,
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
    say("error", e instanceof Problem ? e.message : "The console could not refresh.");
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
