//! `GET /me`: the signed-in user's profile; `DELETE /me`: crypto-shredding of the account.

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use oo_commands::aggregate::open_payload;
use oo_domain::user::UserEvent;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub terms_hash: String,
    pub privacy_hash: String,
    pub given_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    pub email: String,
    pub registered_at: DateTime<Utc>,
    /// The versions (SHA-256) of the terms and privacy notice I accepted, latest first.
    pub consents: Vec<ConsentView>,
    /// Connected integrations.
    pub connections: Vec<String>,
    pub open_sessions: usize,
}

/// My profile.
#[utoipa::path(get, path = "/me", security(("session" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::Problem)))]
pub async fn me(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Me>, ApiError> {
    let id = user.user_id.to_string();
    let loaded = state
        .write
        .users
        .load(&id)
        .await
        .map_err(|e| crate::error::command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    // The profile is the first event of the user's stream, opened.
    let first = oo_commands::store::read_event(&state.pool, "user", &id, 1)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let key = state.write.vault.key_for(user.user_id).await?;
    let payload = open_payload(key.as_ref(), &first).map_err(ApiError::internal)?;
    let UserEvent::UserRegistered {
        email, registered_at, ..
    } = serde_json::from_value::<UserEvent>(payload).map_err(ApiError::internal)?
    else {
        return Err(ApiError::internal(
            "the first event of a user stream is not UserRegistered",
        ));
    };
    Ok(Json(Me {
        user_id: id,
        email: email.as_str().to_owned(),
        registered_at,
        consents: loaded
            .state
            .consent
            .iter()
            .map(|c| ConsentView {
                terms_hash: c.terms_hash.clone(),
                privacy_hash: c.privacy_hash.clone(),
                given_at: c.given_at,
            })
            .collect(),
        connections: state
            .connectors
            .list(user.user_id)
            .await
            .map_err(crate::routes::integrations::connector_error)?
            .into_iter()
            .map(|c| c.provider.as_str().to_owned())
            .collect(),
        open_sessions: loaded.state.open_sessions.len(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedResponse {
    /// Position of `UserShredded`.
    pub position: String,
    /// True once every projection has purged the user (the answer waits up to 10 s for it).
    pub complete: bool,
}

/// Deletes my account: my data key is destroyed, so every personal field of mine — in the log,
/// projections, exports — is unreadable from now on; my sessions end. 200 once every projection
/// has purged me, 202 if they are still catching up.
#[utoipa::path(delete, path = "/me", security(("session" = [])),
    responses((status = 200, body = DeletedResponse), (status = 202, body = DeletedResponse), (status = 401, body = crate::error::Problem)))]
pub async fn delete_me(State(state): State<AppState>, user: CurrentUser) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let meta = oo_commands::aggregate::Meta::new(Utc::now());
    // Detached from the request: a client that hangs up does not stop a deletion half-way (and
    // one stopped otherwise is completed by the sweep, `jobs::sweep_deletions`).
    let write = state.write.clone();
    let pool = state.pool.clone();
    let user_id = user.user_id;
    let connectors = state.connectors.clone();
    let cursor = tokio::spawn(async move {
        // Providers' tokens are revoked before the key that seals them is destroyed (what fails
        // is retried afterwards, from a copy sealed under oO's own key).
        if let Err(e) = connectors
            .prepare_deletion(user_id, std::time::Duration::from_secs(10))
            .await
        {
            tracing::warn!(error = %e, "cannot hand over the connections before a deletion; the deletion does");
        }
        oo_commands::identity::delete_user(&write.users, &write.vault, &write.connections, &pool, user_id, meta).await
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| crate::error::command_error(e, |d| ApiError::invalid_value(d.to_string())))?;
    let target = match cursor {
        Some(c) => c,
        None => state.write.store.head().await?,
    };
    let complete = oo_projections::projector::wait_for(
        &state.pool,
        &state.status,
        &oo_projections::names(),
        target,
        std::time::Duration::from_secs(10),
    )
    .await?;
    let status = if complete {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::ACCEPTED
    };
    let cookie = crate::auth::set_cookie(crate::auth::SESSION_COOKIE, "", 0, state.cookie_secure)?;
    Ok((
        status,
        [(axum::http::header::SET_COOKIE, cookie)],
        Json(DeletedResponse {
            position: target.encode(),
            complete,
        }),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedEvent {
    pub event_id: String,
    pub position: String,
    pub aggregate_type: String,
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The event with its personal fields opened.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub user_id: String,
    pub exported_at: DateTime<Utc>,
    /// Every event of mine, in the log's order, decrypted.
    pub events: Vec<ExportedEvent>,
    /// What oO currently derives from them.
    #[schema(value_type = Object)]
    pub features: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub tips: Vec<serde_json::Value>,
}

/// Events read per page of a streamed export.
const EXPORT_PAGE: i64 = 500;

/// All my data, decrypted, as JSON: every event I caused, with its personal fields opened, and
/// the features and tip log derived from them. Streamed in pages from one consistent snapshot
/// (a read-only repeatable-read transaction, which holds no transaction id and so holds back no
/// reader of the log), so memory stays flat however long the history: the members come in the
/// order `user_id`, `exported_at`, `features`, `tips`, `events`. A failure midway cuts the
/// response short (the JSON does not close), never a well-formed partial export.
#[utoipa::path(get, path = "/me/export", security(("session" = [])),
    responses((status = 200, body = Export), (status = 401, body = crate::error::Problem)))]
pub async fn export(State(state): State<AppState>, user: CurrentUser) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let key = state.write.vault.key_for(user.user_id).await?;
    let mut tx = state.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // A few pages in flight at most: the client's pace is the export's pace.
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        if let Err(e) = write_export(tx, user.user_id, key, &chunks).await {
            tracing::warn!(error = %e, "an export failed midway; the response is cut short");
            let _ = chunks.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let stream = futures::stream::unfold(body, |mut body| async move { body.recv().await.map(|c| (c, body)) });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Writes the export to `out` page by page; stops quietly when the client has gone.
async fn write_export(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    user_id: oo_domain::ids::UserId,
    key: Option<oo_commands::sealing::DataKey>,
    out: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) -> anyhow::Result<()> {
    let uid = user_id.as_uuid();
    let features: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(f) FROM user_features f WHERE user_id = $1")
            .bind(uid)
            .fetch_optional(&mut *tx)
            .await?;
    let mut buf = Vec::with_capacity(64 * 1024);
    buf.extend_from_slice(b"{\"user_id\":");
    serde_json::to_writer(&mut buf, &user_id.to_string())?;
    buf.extend_from_slice(b",\"exported_at\":");
    serde_json::to_writer(&mut buf, &Utc::now())?;
    buf.extend_from_slice(b",\"features\":");
    serde_json::to_writer(&mut buf, &features)?;
    buf.extend_from_slice(b",\"tips\":[");
    let mut first = true;
    let mut after: Option<(DateTime<Utc>, uuid::Uuid)> = None;
    loop {
        let page: Vec<(DateTime<Utc>, uuid::Uuid, serde_json::Value)> = sqlx::query_as(
            "SELECT served_at, tip_id, to_jsonb(t) FROM tip_log t WHERE user_id = $1 \
             AND ($2::timestamptz IS NULL OR (served_at, tip_id) > ($2, $3)) ORDER BY served_at, tip_id LIMIT $4",
        )
        .bind(uid)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(EXPORT_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        for (served_at, tip_id, tip) in &page {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, tip)?;
            after = Some((*served_at, *tip_id));
        }
        if !send(out, &mut buf).await {
            return Ok(());
        }
        if (page.len() as i64) < EXPORT_PAGE {
            break;
        }
    }
    buf.extend_from_slice(b"],\"events\":[");
    let mut first = true;
    let mut after = None;
    loop {
        let page = oo_commands::store::read_user_events_after(&mut tx, uid, after, EXPORT_PAGE).await?;
        let full = page.len() as i64 == EXPORT_PAGE;
        for e in page {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            let payload = open_payload(key.as_ref(), &e)?;
            after = Some(e.cursor);
            serde_json::to_writer(
                &mut buf,
                &ExportedEvent {
                    event_id: e.event_id.to_string(),
                    position: e.cursor.encode(),
                    aggregate_type: e.aggregate_type,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    occurred_at: e.occurred_at,
                    recorded_at: e.recorded_at,
                    payload,
                },
            )?;
        }
        if !full {
            break;
        }
        if !send(out, &mut buf).await {
            return Ok(());
        }
    }
    buf.extend_from_slice(b"]}");
    send(out, &mut buf).await;
    tx.commit().await?;
    Ok(())
}

/// Hands `buf` to the response; false when the client has gone.
async fn send(out: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>, buf: &mut Vec<u8>) -> bool {
    out.send(Ok(std::mem::replace(buf, Vec::with_capacity(64 * 1024))))
        .await
        .is_ok()
}
