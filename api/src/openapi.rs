//! The OpenAPI document: generated from the handlers' annotations, then made exact about what
//! every route can answer (`exact`): error bodies are `application/problem+json`, and each
//! operation lists the statuses the layers around it produce as well as its own — 408 from the
//! request deadline, 429 from the limits, 401 and 403 from authentication and the cross-site
//! check, 400, 413, 415 and 422 for bodies, 500 where the database or the vault is involved, 503
//! from load shedding and an unreachable database. Checked against the running server by schemathesis (`contract/run`).

use axum::Json;
use serde_json::{Value, json};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("session", bearer());
        components.add_security_scheme("admin", bearer());
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "oO", description = "One tip, at the right moment. Errors are application/problem+json with a stable `code` (see ErrorCode)."),
    paths(
        crate::routes::health::health,
        crate::routes::health::ready,
        crate::routes::health::metrics,
        crate::oidc::login,
        crate::oidc::callback,
        crate::routes::auth::methods,
        crate::routes::auth::dev_login,
        crate::routes::auth::terms,
        crate::routes::auth::privacy,
        crate::routes::auth::logout,
        crate::routes::me::me,
        crate::routes::me::delete_me,
        crate::routes::me::export,
        crate::routes::signals::post_signals,
        crate::routes::recommend::recommend,
        crate::routes::feedback::feedback,
        crate::routes::admin::projections,
        crate::routes::admin::rebuild,
        crate::routes::admin::events,
        crate::routes::policies::policies,
        crate::routes::policies::promote_policy,
        crate::routes::integrations::list,
        crate::routes::integrations::connect,
        crate::routes::integrations::callback,
        crate::routes::integrations::sync,
        crate::routes::integrations::disconnect,
    ),
    components(schemas(
        crate::error::ErrorCode,
        crate::error::Problem,
        crate::routes::signals::TaskData,
        crate::routes::signals::HabitData,
        crate::routes::signals::CalendarData,
        crate::routes::signals::MoodData,
        crate::routes::signals::ContextData,
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document as served: generated once, made exact.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
        exact(&mut doc);
        enumerate(&mut doc);
        doc
    })
}

/// The generated OpenAPI document.
pub async fn openapi_json() -> Json<Value> {
    Json(document().clone())
}

/// Routes that touch neither the database nor the vault: they cannot answer 500.
const STATIC_ROUTES: [&str; 4] = ["/health", "/openapi.json", "/legal/terms", "/legal/privacy"];

/// Adds to every operation the statuses the layers around its handler can answer, and serves
/// every problem as `application/problem+json`.
fn exact(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            let unsafe_method = matches!(method.as_str(), "post" | "put" | "patch" | "delete");
            let Some(op) = op.as_object_mut() else { continue };
            let schemes: Vec<String> = op
                .get("security")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys().cloned())
                .collect();
            let session = schemes.iter().any(|s| s == "session");
            let admin = schemes.iter().any(|s| s == "admin");
            let body = op.contains_key("requestBody");
            let query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let responses = op.entry("responses").or_insert_with(|| json!({})).as_object_mut();
            let Some(responses) = responses else { continue };
            let mut add = |status: &str, why: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem_response(why));
            };
            add(
                "408",
                "request_timeout: the request took longer than OO_REQUEST_TIMEOUT_SECS",
            );
            add(
                "429",
                if session {
                    "rate_limited: past the per-person rate limit (Retry-After says when to retry)"
                } else if admin {
                    "rate_limited: too many wrong admin tokens from this address (Retry-After)"
                } else {
                    "rate_limited: past the per-address limit of requests without credentials (Retry-After)"
                },
            );
            if session || admin {
                add("401", "unauthorized or admin_token_required: no valid credentials");
            }
            if session && unsafe_method {
                add("403", "cross_origin: a cookie-authenticated request from another site");
            }
            if query {
                add(
                    "400",
                    "invalid_body: a query parameter this operation does not take, or of the wrong type",
                );
            }
            if body {
                add("400", "bad_body: the body is not the JSON this operation takes");
                add("413", "payload_too_large: the body is larger than OO_BODY_LIMIT");
                add(
                    "415",
                    "unsupported_media_type: a body that does not declare application/json",
                );
                add("422", "invalid_value: a value outside what the schema allows");
            }
            if !STATIC_ROUTES.contains(&path.as_str()) {
                add("500", "internal: an unexpected error (logged with its cause)");
            }
            // Load shedding answers 503 on every route but liveness, readiness and metrics.
            if !matches!(path.as_str(), "/health" | "/metrics") {
                add(
                    "503",
                    "unavailable: at capacity (OO_MAX_IN_FLIGHT), or the database or a provider cannot be reached; retry",
                );
            }
            for response in responses.values_mut() {
                problem_media_type(response);
            }
        }
    }
}

/// What the annotations cannot say: the time zones `/recommend` takes, the projections that
/// can be rebuilt, and that `/recommend`'s body is optional.
fn enumerate(doc: &mut Value) {
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
    if let Some(tz) = doc.pointer_mut("/components/schemas/RecommendContext/properties/time_zone") {
        *tz = json!({"type": ["string", "null"], "enum": zones.iter().map(|z| json!(z)).chain([Value::Null]).collect::<Vec<_>>(),
            "description": "An IANA time zone name."});
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1admin~1projections~1{name}~1rebuild/post/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "name") {
            p["schema"] = json!({"type": "string", "enum": oo_projections::names()});
        }
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1admin~1events/get/parameters")
        .and_then(Value::as_array_mut)
    {
        // A query string has no null: the optional parameters are plain when present.
        for p in params.iter_mut() {
            if let Some(kinds) = p.pointer_mut("/schema/type")
                && kinds.is_array()
            {
                *kinds = kinds
                    .as_array()
                    .and_then(|k| k.iter().find(|t| *t != "null").cloned())
                    .unwrap_or(Value::Null);
            }
        }
    }
    // Each kind of signal takes exactly its own fields.
    if let Some(kinds) = doc
        .pointer_mut("/components/schemas/Signal/oneOf")
        .and_then(Value::as_array_mut)
    {
        for kind in kinds {
            kind["additionalProperties"] = json!(false);
        }
    }
    if let Some(body) = doc.pointer_mut("/paths/~1recommend/post/requestBody") {
        body["required"] = json!(false);
    }
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// Serves a response whose body is a `Problem` as `application/problem+json`.
fn problem_media_type(response: &mut Value) {
    let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let is_problem =
        |v: &Value| v.pointer("/schema/$ref").and_then(Value::as_str) == Some("#/components/schemas/Problem");
    if let Some(json) = content.get("application/json").filter(|v| is_problem(v)).cloned() {
        content.remove("application/json");
        content.insert("application/problem+json".into(), json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_problem_json_and_every_operation_lists_the_layers_statuses() {
        let doc = document();
        let text = doc.to_string();
        assert!(!text.contains(r##""application/json":{"schema":{"$ref":"#/components/schemas/Problem"}}"##));
        let signals = &doc["paths"]["/signals"]["post"]["responses"];
        for status in [
            "200", "400", "401", "403", "408", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(signals.get(status).is_some(), "POST /signals {status}");
        }
        let health = &doc["paths"]["/health"]["get"]["responses"];
        assert!(health.get("429").is_some() && health.get("503").is_none());
        assert!(
            doc["paths"]["/me"]["get"]["responses"].get("403").is_none(),
            "GET is not checked"
        );
    }
}
