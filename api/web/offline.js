// The offline page: served by the service worker when a page cannot be fetched.
document.getElementById("retry").addEventListener("click", () => window.location.reload());
window.addEventListener("online", () => window.location.reload());
