// oO's service worker: it keeps the app's shell (pages, script, style, icons) and nothing else.
// API answers and anything personal are never cached: they always go to the network. When the
// network fails, a page asked for is answered by the offline page.

const CACHE = "oo-shell-v1";
const SHELL = [
  "/",
  "/signin",
  "/connect",
  "/account",
  "/console",
  "/offline",
  "/manifest.webmanifest",
  "/assets/app.css",
  "/assets/api.js",
  "/assets/tip.js",
  "/assets/signin.js",
  "/assets/connect.js",
  "/assets/account.js",
  "/assets/console.js",
  "/assets/offline.js",
  "/assets/icon.svg",
  "/assets/icon-192.png",
  "/assets/icon-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: "reload" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

function inShell(url) {
  return url.origin === self.location.origin && SHELL.includes(url.pathname);
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (request.mode === "navigate") {
    // Pages: the network first (a new version shows at once), the offline page without it.
    event.respondWith(fetch(request).catch(() => caches.match("/offline")));
    return;
  }
  if (inShell(url)) {
    // The shell's files: the network first, the kept copy without it.
    event.respondWith(fetch(request).catch(() => caches.match(url.pathname)));
  }
  // Everything else (the API) is left to the browser: never cached here.
});
