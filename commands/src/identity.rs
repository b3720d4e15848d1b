//! Registration, the blind index and sessions.
//!
//! A user is found by a keyed hash of their email (dev sign-in) — never by the plaintext. A
//! registration writes the user's data key, the blind-index row and `UserRegistered` in one
//! transaction, so two concurrent first sign-ins with one email make one user. Sessions are
//! opaque random tokens; only their SHA-256 is stored.

use crate::aggregate::{CommandError, Meta, Repository, prepare_event};
use crate::cursor::Cursor;
use crate::store::{AppendRequest, EventStore, Expected, StoreError};
use crate::vault::{LookupKind, Vault};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use oo_domain::event::Aggregate;
use oo_domain::ids::{SessionId, UserId};
use oo_domain::user::{Email, User, UserCommand, UserError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

pub type UserCommandError = CommandError<UserError>;

/// Finds the user with this email, registering them on first sign-in (development sign-in).
pub async fn find_or_register(
    store: &EventStore,
    vault: &Vault,
    email: &Email,
    meta: Meta,
) -> Result<(UserId, Option<Cursor>), UserCommandError> {
    find_or_register_by(store, vault, LookupKind::Email, email.as_str(), email, meta).await
}

/// Finds the user whose `kind` lookup value is `value` (an email, or an OpenID Connect issuer and
/// subject), registering them with `email` the first time.
pub async fn find_or_register_by(
    store: &EventStore,
    vault: &Vault,
    kind: LookupKind,
    value: &str,
    email: &Email,
    meta: Meta,
) -> Result<(UserId, Option<Cursor>), UserCommandError> {
    let hash = vault.blind_index(kind, value);
    if let Some(user_id) = lookup(store.pool(), kind, &hash).await? {
        return Ok((user_id, None));
    }
    let user_id = UserId::from_uuid(Uuid::new_v4());
    let events = User::default()
        .decide(&UserCommand::Register {
            user_id,
            email: email.clone(),
            at: meta.now,
        })
        .map_err(CommandError::Domain)?;
    let mut tx = store.pool().begin().await.map_err(sqlx_err)?;
    let inserted =
        sqlx::query("INSERT INTO user_lookup (kind, hash, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(kind.as_str())
            .bind(&hash)
            .bind(user_id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?
            .rows_affected();
    if inserted == 0 {
        // Someone registered this email a moment ago.
        drop(tx);
        let existing = lookup(store.pool(), kind, &hash).await?;
        return existing
            .map(|u| (u, None))
            .ok_or_else(|| CommandError::Store(StoreError::Conflict));
    }
    let key = vault.create_key(&mut tx, user_id).await?;
    let mut new_events = Vec::new();
    for e in &events {
        new_events.push(
            prepare_event(e, user_id, meta.now, None, Some(&key), &meta)
                .map_err(|e| CommandError::Corrupt(e.to_string()))?,
        );
    }
    let request = AppendRequest {
        aggregate_type: User::TYPE,
        aggregate_id: user_id.to_string(),
        expected: Expected::Exact(0),
        events: new_events,
    };
    let appended = store.append_in_tx(&mut tx, request).await?;
    tx.commit().await.map_err(sqlx_err)?;
    store.committed(&appended);
    vault.remember(user_id, key);
    Ok((user_id, appended.cursor))
}

async fn lookup(pool: &PgPool, kind: LookupKind, hash: &[u8]) -> Result<Option<UserId>, UserCommandError> {
    let row: Option<(Uuid,)> = sqlx::query_as("SELECT user_id FROM user_lookup WHERE kind = $1 AND hash = $2")
        .bind(kind.as_str())
        .bind(hash)
        .fetch_optional(pool)
        .await
        .map_err(sqlx_err)?;
    Ok(row.map(|(u,)| UserId::from_uuid(u)))
}

fn sqlx_err(e: sqlx::Error) -> UserCommandError {
    CommandError::Store(StoreError::from_sqlx(e))
}

/// A new session: the token to hand to the client (once) and where its event stands.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub session_id: SessionId,
    pub expires_at: DateTime<Utc>,
    pub cursor: Option<Cursor>,
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Starts a session for a registered user.
pub async fn start_session(
    users: &Repository<User>,
    pool: &PgPool,
    user_id: UserId,
    ttl: Duration,
    meta: Meta,
) -> Result<NewSession, UserCommandError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("oo_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let session_id = SessionId::from_uuid(Uuid::new_v4());
    let expires_at = meta.now + ttl;
    let executed = users
        .execute(
            &user_id.to_string(),
            UserCommand::StartSession {
                session_id,
                at: meta.now,
                expires_at,
            },
            meta,
        )
        .await?;
    sqlx::query("INSERT INTO sessions (token_hash, session_id, user_id, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash_token(&token))
        .bind(session_id.as_uuid())
        .bind(user_id.as_uuid())
        .bind(expires_at)
        .execute(pool)
        .await
        .map_err(sqlx_err)?;
    Ok(NewSession {
        token,
        session_id,
        expires_at,
        cursor: executed.cursor,
    })
}

/// The live session of a token: `$1` the token's hash ([`hash_token`]), `$2` the time now. A
/// session counts only while it is unrevoked and unexpired and its user still has a key: a
/// session row written while a deletion ran cannot outlive it. Queries that authenticate as
/// they read use it as a subquery.
pub const SESSION_QUERY: &str = "SELECT s.user_id, s.session_id FROM sessions s \
    WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
    AND EXISTS (SELECT 1 FROM key_vault k WHERE k.user_id = s.user_id)";

/// The user and session a token stands for, if it is valid now ([`SESSION_QUERY`]).
pub async fn authenticate(
    pool: &PgPool,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<(UserId, SessionId)>, StoreError> {
    let row: Option<(Uuid, Uuid)> = sqlx::query_as(SESSION_QUERY)
        .bind(hash_token(token))
        .bind(now)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(row.map(|(u, s)| (UserId::from_uuid(u), SessionId::from_uuid(s))))
}

/// Revokes one session (logout). Revoking twice is harmless.
pub async fn revoke_session(
    users: &Repository<User>,
    pool: &PgPool,
    user_id: UserId,
    session_id: SessionId,
    meta: Meta,
) -> Result<Option<Cursor>, UserCommandError> {
    sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE session_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(session_id.as_uuid())
        .bind(user_id.as_uuid())
        .bind(meta.now)
        .execute(pool)
        .await
        .map_err(sqlx_err)?;
    let executed = users
        .execute(
            &user_id.to_string(),
            UserCommand::RevokeSession {
                session_id,
                at: meta.now,
            },
            meta,
        )
        .await?;
    Ok(executed.cursor)
}

/// Deletes a user by crypto-shredding (DESIGN section 7): records the request, revokes every
/// session, destroys the data key and every row that could find or identify the user (blind
/// index, session hashes, idempotency ids, snapshots), then records `UserShredded`. Every step is
/// idempotent, so running it again completes a deletion that a crash interrupted. Returns the
/// position of `UserShredded` (or the head when it was already recorded).
pub async fn delete_user(
    users: &Repository<User>,
    vault: &Vault,
    connections: &Repository<oo_domain::connection::Connection>,
    pool: &PgPool,
    user_id: UserId,
    meta: Meta,
) -> Result<Option<Cursor>, UserCommandError> {
    let id = user_id.to_string();
    users
        .execute(&id, UserCommand::RequestDeletion { at: meta.now }, meta)
        .await?;
    // Providers' tokens are handed over for revocation while the person's key can still open
    // them; the revoker revokes them after the key is gone.
    crate::connections::hand_over_for_deletion(pool, vault, connections, user_id, meta)
        .await
        .map_err(|e| match e {
            crate::connections::ConnectorError::Store(s) => CommandError::Store(s),
            crate::connections::ConnectorError::Vault(v) => CommandError::Vault(v),
            other => CommandError::Corrupt(format!("cannot hand over the connections' tokens: {other}")),
        })?;
    let uid = user_id.as_uuid();
    let mut tx = pool.begin().await.map_err(sqlx_err)?;
    for sql in [
        "DELETE FROM connections WHERE user_id = $1",
        "DELETE FROM sessions WHERE user_id = $1",
        "DELETE FROM key_vault WHERE user_id = $1",
        "DELETE FROM user_lookup WHERE user_id = $1",
        "DELETE FROM ingested_signals WHERE user_id = $1",
        "DELETE FROM signal_quota WHERE user_id = $1",
        "DELETE FROM snapshots WHERE aggregate_id = $1::text",
    ] {
        sqlx::query(sql).bind(uid).execute(&mut *tx).await.map_err(sqlx_err)?;
    }
    tx.commit().await.map_err(sqlx_err)?;
    vault.forget(user_id);
    let executed = users
        .execute(&id, UserCommand::CompleteShredding { at: meta.now }, meta)
        .await?;
    Ok(executed.cursor)
}

/// Users whose deletion was requested but not completed (a crash between the two).
pub async fn interrupted_deletions(pool: &PgPool) -> Result<Vec<UserId>, StoreError> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT user_id FROM events WHERE event_type = 'UserDeletionRequested' \
         EXCEPT SELECT user_id FROM events WHERE event_type = 'UserShredded'",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(rows.into_iter().map(|(u,)| UserId::from_uuid(u)).collect())
}
