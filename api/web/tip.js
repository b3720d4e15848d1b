// The tip page: asks for one tip, shows it, takes one final reaction, asks for the next.
// "Not now" (204) is a calm state that says when the page will look again, and does.
import { Problem, installable, say, sayProblem, session } from "/assets/api.js";

const LOOK_AGAIN_MINUTES = 30;
const REACTIONS = { d: "done", h: "helpful", s: "snooze", n: "not_helpful", x: "dismiss" };

const tipEl = document.getElementById("tip");
const emptyEl = document.getElementById("empty");
const buttons = Array.from(document.querySelectorAll("[data-reaction]"));
let current = null;
let busy = false;
let lookAgain = null;

let shown = 0;

/** Shows the tip, the calm state or an error; `data-state` and `data-shown` on the body say
 * which, and how many times the page has settled (for scripts and tests that wait on it). */
function show(which) {
  tipEl.hidden = which !== "tip";
  emptyEl.hidden = which !== "empty";
  document.getElementById("retry-row").hidden = which !== "error";
  shown += 1;
  document.body.dataset.state = which;
  document.body.dataset.shown = String(shown);
}

function render(tip) {
  current = tip;
  document.getElementById("tip-source").textContent =
    tip.kind === "todo" ? `To do · from ${tip.source === "todoist" ? "Todoist" : "your list"}` : "Advice from oO";
  document.getElementById("tip-title").textContent = tip.title;
  const body = document.getElementById("tip-body");
  body.textContent = tip.body || "";
  body.hidden = !tip.body;
  const link = document.getElementById("tip-link");
  let safe = null;
  try {
    const url = tip.deep_link ? new URL(tip.deep_link) : null;
    safe = url && (url.protocol === "https:" || url.protocol === "http:") ? url.href : null;
  } catch {
    safe = null;
  }
  link.hidden = !safe;
  if (safe) link.href = safe;
  buttons.forEach((b) => (b.disabled = false));
  show("tip");
  tipEl.classList.remove("arrive");
  void tipEl.offsetWidth;
  tipEl.classList.add("arrive");
  document.title = `oO · ${tip.title}`;
  say("status", "");
}

function calm() {
  current = null;
  const at = new Date(Date.now() + LOOK_AGAIN_MINUTES * 60 * 1000);
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  say(
    "empty-when",
    `Nothing is worth your attention at this moment. This page looks again at ${time}; come back then, or add something and ask again.`,
  );
  show("empty");
  document.title = "oO · not now";
  say("status", "");
  clearTimeout(lookAgain);
  lookAgain = setTimeout(() => next(), LOOK_AGAIN_MINUTES * 60 * 1000);
}

/** Asks for the next tip; `minPosition` makes the answer reflect what was just written. */
async function next(minPosition) {
  clearTimeout(lookAgain);
  say("error", "");
  say("status", "Looking for your tip…");
  document.body.dataset.state = "loading";
  const body = minPosition ? { min_position: minPosition } : {};
  try {
    const { status, body: answer } = await session("POST", "/recommend", body);
    if (status === 204 || !answer || !answer.tip) calm();
    else render(answer.tip);
  } catch (e) {
    // No tip to show: the error and a way to ask again, nothing stale.
    current = null;
    say("status", "");
    show("error");
    sayProblem("error", e);
  }
}

async function react(reaction) {
  if (!current || busy) return;
  busy = true;
  buttons.forEach((b) => (b.disabled = true));
  say("status", "Saved. Next…");
  try {
    const { body } = await session("POST", "/feedback", { tip_id: current.id, reaction });
    current = null;
    await next(body && body.position);
  } catch (e) {
    say("status", "");
    if (e instanceof Problem && e.status === 409) {
      // Already answered elsewhere: a reaction is final, so this tip is over.
      await next();
    } else {
      buttons.forEach((b) => (b.disabled = false));
      sayProblem("error", e);
    }
  } finally {
    busy = false;
  }
}

buttons.forEach((b) => b.addEventListener("click", () => react(b.dataset.reaction)));
document.getElementById("again").addEventListener("click", () => next());
document.getElementById("retry").addEventListener("click", () => next());
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target instanceof HTMLElement && event.target.closest("input, textarea, select")) return;
  const reaction = REACTIONS[event.key.toLowerCase()];
  if (reaction && current) {
    event.preventDefault();
    react(reaction);
  }
});

installable();
const after = new URLSearchParams(window.location.hash.slice(1)).get("after");
if (after) history.replaceState(null, "", "/");
next(after || undefined);
