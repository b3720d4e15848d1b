// The "me" page: the profile and consents (`GET /me`), the export, signing out, and deleting the
// account (`DELETE /me`) after a confirmation that says what is destroyed.
import { el, installable, say, sayProblem, session, signInAgain, when } from "/assets/api.js";

async function load() {
  try {
    const { body: me } = await session("GET", "/me");
    say("email", me.email);
    say("since", when(me.registered_at));
    say("connections", me.connections.length ? me.connections.join(", ") : "nothing yet");
    say("sessions", `${me.open_sessions} device${me.open_sessions === 1 ? "" : "s"}`);
    const list = document.getElementById("consents");
    list.replaceChildren(
      ...me.consents.map((c) =>
        el(
          "dl",
          {},
          el("dt", { text: "Terms" }),
          el("dd", {}, el("code", { text: c.terms_hash })),
          el("dt", { text: "Privacy" }),
          el("dd", {}, el("code", { text: c.privacy_hash })),
          el("dt", { text: "Given" }),
          el("dd", { text: when(c.given_at) }),
        ),
      ),
    );
  } catch (e) {
    sayProblem("error", e);
  }
}

document.getElementById("signout").addEventListener("click", async () => {
  try {
    await session("POST", "/auth/logout");
  } catch (e) {
    sayProblem("error", e);
    return;
  }
  signInAgain();
});

const dialog = document.getElementById("confirm");
const word = document.getElementById("confirm-word");
document.getElementById("delete").addEventListener("click", () => {
  word.value = "";
  say("confirm-error", "");
  dialog.showModal();
  word.focus();
});
document.getElementById("confirm-cancel").addEventListener("click", () => dialog.close());
document.getElementById("confirm-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (word.value.trim().toLowerCase() !== "delete") {
    say("confirm-error", "Type the word delete to confirm.");
    word.focus();
    return;
  }
  const button = document.getElementById("confirm-delete");
  button.disabled = true;
  say("confirm-error", "Deleting…");
  try {
    const { body } = await session("DELETE", "/me");
    dialog.close();
    document.getElementById("profile").hidden = true;
    document.getElementById("nav").hidden = true;
    say(
      "deleted-detail",
      body.complete
        ? "Your key is destroyed and every part of oO has purged you. Nothing of yours can be read any more."
        : "Your key is destroyed, so nothing of yours can be read any more; oO's tables are still purging what is left, within a minute.",
    );
    document.getElementById("deleted").hidden = false;
    document.getElementById("deleted-title").focus();
  } catch (e) {
    button.disabled = false;
    sayProblem("confirm-error", e);
  }
});

installable();
load();
