// The connect page: the connectors and the person's connections (`GET /integrations`), and the
// signals a person adds by hand (`POST /signals`: a task, a mood, a place).
import { el, installable, say, sayProblem, session, when } from "/assets/api.js";

const NAMES = { todoist: "Todoist" };


function connectorCard(c) {
  const name = NAMES[c.provider] || c.provider;
  const card = el("section", { class: "card", "aria-label": name, "data-provider": c.provider });
  card.append(el("h3", { text: name }));
  if (!c.configured) {
    card.append(el("p", { class: "muted", text: `${name} is not set up on this server.` }));
    return card;
  }
  const conn = c.connection;
  if (!conn) {
    card.append(el("p", { class: "muted", text: `Not connected. oO would read your open tasks and close them in ${name} when you say "done".` }));
    card.append(el("a", { class: "button", href: `/integrations/${c.provider}/connect`, text: `Connect ${name}` }));
    return card;
  }
  card.dataset.status = conn.status;
  card.dataset.openTasks = String(conn.open_tasks);
  const facts = el("dl");
  const fact = (k, v) => facts.append(el("dt", { text: k }), el("dd", { text: v }));
  fact("Status", conn.status === "broken" ? `broken: ${name} refused oO's access; connect again` : "connected");
  fact("Connected", when(conn.connected_at));
  fact("Last sync", conn.last_sync_at ? `${when(conn.last_sync_at)} (${conn.last_outcome || "synced"})` : "the first one is running…");
  fact("Open tasks", String(conn.open_tasks));
  card.append(facts);
  const row = el("div", { class: "row" });
  if (conn.status === "broken") {
    row.append(el("a", { class: "button", href: `/integrations/${c.provider}/connect`, text: `Connect ${name} again` }));
  } else {
    const sync = el("button", { type: "button", text: "Sync now" });
    sync.addEventListener("click", async () => {
      sync.disabled = true;
      say("status", `Syncing ${name}…`);
      try {
        const { body } = await session("POST", `/integrations/${c.provider}/sync`);
        say("status", `Synced: ${body.tasks} task change${body.tasks === 1 ? "" : "s"}.`);
      } catch (e) {
        say("status", "");
        sayProblem("error", e);
      }
      await load();
    });
    row.append(sync);
  }
  const off = el("button", { type: "button", class: "danger", text: "Disconnect" });
  off.addEventListener("click", async () => {
    off.disabled = true;
    say("status", `Disconnecting ${name}…`);
    try {
      await session("DELETE", `/integrations/${c.provider}`);
      say("status", `${name} is disconnected; oO's access is revoked and its tasks are gone from your tips.`);
    } catch (e) {
      say("status", "");
      sayProblem("error", e);
    }
    await load();
  });
  row.append(off);
  card.append(row);
  return card;
}

let firstSyncWatch = null;

async function load() {
  clearTimeout(firstSyncWatch);
  try {
    const { body } = await session("GET", "/integrations");
    const list = document.getElementById("connectors");
    list.replaceChildren(...body.connectors.map(connectorCard));
    // A connection just made syncs for the first time in the background: look again shortly.
    if (body.connectors.some((c) => c.connection && c.connection.status === "connected" && !c.connection.last_sync_at)) {
      firstSyncWatch = setTimeout(load, 1000);
    }
  } catch (e) {
    sayProblem("error", e);
  }
}

async function send(kind, data, what) {
  say("error", "");
  const signal = { id: crypto.randomUUID(), kind, occurred_at: new Date().toISOString(), data };
  try {
    const { body } = await session("POST", "/signals", { signals: [signal] });
    const added = document.getElementById("added");
    added.replaceChildren(
      document.createTextNode(`${what} `),
      el("a", { href: `/#after=${encodeURIComponent(body.position)}`, text: "See your tip" }),
    );
    return true;
  } catch (e) {
    sayProblem("error", e);
    return false;
  }
}

function optional(value) {
  const v = value.trim();
  return v ? v : undefined;
}

document.getElementById("task-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const title = form.title.value.trim();
  if (!title) {
    say("error", "Say what there is to do.");
    form.title.focus();
    return;
  }
  const data = {
    source: "manual",
    external_id: `web-${crypto.randomUUID()}`,
    title,
    priority: Number(form.priority.value),
    completed: false,
  };
  if (form.due.value) data.due = new Date(form.due.value).toISOString();
  if (await send("task", data, "Task added.")) form.reset();
});

document.getElementById("mood-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const data = { score: Number(form.score.value) };
  const note = optional(form.note.value);
  if (note) data.note = note;
  if (await send("mood", data, "Noted.")) form.note.value = "";
});

document.getElementById("place-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const data = { place: form.place.value };
  const activity = optional(form.activity.value);
  if (activity) data.activity = activity;
  if (await send("context", data, "Noted.")) form.activity.value = "";
});

installable();
load();
