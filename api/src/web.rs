//! The web app's files (ADR 0017): the pages, their script and style, the manifest, icons and
//! service worker, embedded in the binary from `api/web/` and served from the API's own origin,
//! and the security headers every answer carries.
//!
//! The pages are static shells: nothing personal is ever written into them, so they can be
//! cached and served to anyone. Everything a person sees comes from the JSON API, fetched by the
//! page with the session cookie.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

/// One embedded file.
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!("../web/", $file)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the app. The service worker's shell list (`web/sw.js`) names the same paths; a
/// unit test holds the two together.
pub static ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/signin", "signin.html", HTML),
    asset!("/connect", "connect.html", HTML),
    asset!("/account", "account.html", HTML),
    asset!("/console", "console.html", HTML),
    asset!("/offline", "offline.html", HTML),
    asset!("/sw.js", "sw.js", JS),
    asset!(
        "/manifest.webmanifest",
        "manifest.webmanifest",
        "application/manifest+json"
    ),
    asset!("/assets/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/assets/api.js", "api.js", JS),
    asset!("/assets/tip.js", "tip.js", JS),
    asset!("/assets/signin.js", "signin.js", JS),
    asset!("/assets/connect.js", "connect.js", JS),
    asset!("/assets/account.js", "account.js", JS),
    asset!("/assets/console.js", "console.js", JS),
    asset!("/assets/offline.js", "offline.js", JS),
    asset!("/assets/icon.svg", "icon.svg", "image/svg+xml"),
    asset!("/assets/icon-192.png", "icon-192.png", "image/png"),
    asset!("/assets/icon-512.png", "icon-512.png", "image/png"),
];

/// Each asset's strong validator, from its bytes.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    use sha2::Digest;
    ASSETS
        .iter()
        .map(|a| {
            let tag = format!("\"{}\"", &hex::encode(sha2::Sha256::digest(a.bytes))[..32]);
            HeaderValue::from_str(&tag).expect("a quoted hex string is a header value")
        })
        .collect()
});

/// The policy of the pages: scripts, styles, images, fetches and the worker from this origin
/// only; no inline script or style, no plugin, no framing, forms posting only here.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; manifest-src 'self'; worker-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The policy of everything else (JSON, Markdown): nothing runs, nothing frames it.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// Serves the asset at `path` with a validator; `If-None-Match` gets 304.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.path == path) else {
        return crate::error::ApiError::not_found().into_response();
    };
    let etag = &ETAGS[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().as_bytes() == etag.as_bytes() || t.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    // Revalidated on every use: a new binary's files replace the old ones at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The pages' policy on every app file: it is the one that counts for a document, and for
    // the service worker (a worker runs under the policy its script is served with, and this
    // one fetches from its origin).
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if path == "/sw.js" {
        // The worker controls the whole origin from the root.
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    response
}

async fn page(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    serve(uri.path(), &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("/assets/{file}"), &headers)
}

/// The routes of the app's files: each page (and the worker and manifest) at its own path, the
/// rest under `/assets/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    ASSETS
        .iter()
        .filter(|a| !a.path.starts_with("/assets/"))
        .fold(axum::Router::new(), |router, a| {
            router.route(a.path, axum::routing::get(page))
        })
        .route("/assets/{file}", axum::routing::get(asset))
}

/// The security headers of every answer: a policy that runs nothing unless the answer set its
/// own (the app's files set the pages'), and on all of them `nosniff`, no referrer, no framing.
pub async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_worker_caches_exactly_the_embedded_shell() {
        let sw = std::str::from_utf8(
            ASSETS
                .iter()
                .find(|a| a.path == "/sw.js")
                .expect("sw.js is embedded")
                .bytes,
        )
        .expect("utf-8");
        let start = sw.find("const SHELL = [").expect("the SHELL list");
        let list = &sw[start..start + sw[start..].find("];").expect("end of SHELL")];
        let mut cached: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        cached.sort_unstable();
        let mut embedded: Vec<&str> = ASSETS.iter().map(|a| a.path).filter(|p| *p != "/sw.js").collect();
        embedded.sort_unstable();
        assert_eq!(
            cached, embedded,
            "sw.js's SHELL must list every embedded file but itself"
        );
    }

    #[test]
    fn pages_load_nothing_inline() {
        for a in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(a.bytes).expect("utf-8");
            assert!(!text.contains("<script>"), "{}: inline script", a.path);
            assert!(!text.contains(" style="), "{}: inline style", a.path);
            let inline_handler = text.match_indices(" on").any(|(i, _)| {
                let rest = &text[i + 3..];
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!inline_handler, "{}: inline event handler", a.path);
            assert!(text.contains("<html lang=\"en\">"), "{}: language", a.path);
        }
    }
}
