//! `policies`: every promotion of the serving line-up (the `policy` stream's `PolicyPromoted`),
//! with its evidence; the latest is the line-up that serves. Running servers read it to switch
//! to a promoted policy ([`latest`]); nothing in it belongs to a person.

use crate::{ApplyError, Projection, decode};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use oo_commands::store::StoredEvent;
use oo_domain::promotion::{Evidence, Lineup, PolicyEvent};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub struct Policies;

impl Projection for Policies {
    fn name(&self) -> &'static str {
        "policies"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["policy_promotions"]
    }
    fn user_tables(&self) -> &'static [&'static str] {
        &[]
    }
    fn payloads_of(&self) -> Option<&'static [&'static str]> {
        Some(&["PolicyPromoted"])
    }
    fn fold<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(fold(conn, events))
    }
}

async fn fold(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ApplyError> {
    for event in events.iter().filter(|e| e.event_type == "PolicyPromoted") {
        let PolicyEvent::PolicyPromoted {
            serving,
            replaced,
            shadows,
            evidence,
            forced,
            promoted_at,
        } = decode(event)?;
        sqlx::query(
            "INSERT INTO policy_promotions \
             (event_id, position, promoted_at, serving, replaced, shadows, forced, evidence) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.event_id)
        .bind(event.cursor.position)
        .bind(promoted_at)
        .bind(serving)
        .bind(replaced)
        .bind(shadows)
        .bind(forced)
        .bind(Json(evidence))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A promotion as the projection holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub event_id: Uuid,
    pub position: i64,
    pub promoted_at: DateTime<Utc>,
    pub lineup: Lineup,
    pub replaced: String,
    pub forced: bool,
    pub evidence: Evidence,
}

type Row = (
    Uuid,
    i64,
    DateTime<Utc>,
    String,
    String,
    Vec<String>,
    bool,
    Json<Evidence>,
);

fn promotion(row: Row) -> Promotion {
    let (event_id, position, promoted_at, serving, replaced, shadows, forced, evidence) = row;
    Promotion {
        event_id,
        position,
        promoted_at,
        lineup: Lineup { serving, shadows },
        replaced,
        forced,
        evidence: evidence.0,
    }
}

/// The latest `limit` promotions, newest first.
pub async fn history(pool: &PgPool, limit: i64) -> Result<Vec<Promotion>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event_id, position, promoted_at, serving, replaced, shadows, forced, evidence \
         FROM policy_promotions ORDER BY position DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(promotion).collect())
}

/// The latest promotion (`None`: never promoted).
pub async fn latest(pool: &PgPool) -> Result<Option<Promotion>, sqlx::Error> {
    Ok(history(pool, 1).await?.into_iter().next())
}
