//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
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

/// The generated OpenAPI document.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
