// The sign-in page: shows the ways in that this server offers (`GET /auth/methods`) and what
// consent is given to. Development sign-in posts JSON (the API refuses a native form post).
import { call, installable, say, sayProblem } from "/assets/api.js";

async function start() {
  installable();
  let methods;
  try {
    ({ body: methods } = await call("GET", "/auth/methods"));
  } catch (e) {
    sayProblem("error", e, "oO cannot be reached.");
    return;
  }
  document.getElementById("terms-hash").textContent = methods.terms_sha256;
  document.getElementById("privacy-hash").textContent = methods.privacy_sha256;
  document.getElementById("oidc").hidden = !methods.oidc;
  document.getElementById("dev").hidden = !methods.dev_login;
  document.getElementById("none").hidden = methods.oidc || methods.dev_login;
  // Already signed in: straight to the tip.
  try {
    await call("GET", "/me");
    window.location.replace("/");
  } catch {
    /* not signed in: stay */
  }
}

document.getElementById("dev").addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = document.getElementById("email").value.trim();
  say("dev-error", "");
  if (!email) {
    say("dev-error", "Type an email address.");
    return;
  }
  try {
    await call("POST", "/auth/dev-login", { email });
    window.location.replace("/");
  } catch (e) {
    sayProblem("dev-error", e, "Sign-in failed.");
  }
});

start();
