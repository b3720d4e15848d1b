//! The key vault against a database someone else can write: planted keys are refused; the
//! master-key rotation runs in committed batches, resumes, and needs both keys while it runs.

use crate::common::*;
use oo_commands::sealing::DataKey;
use oo_commands::vault::{MasterKey, Rotation, Vault, VaultError};
use oo_domain::ids::UserId;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// What someone who can write the database but does not hold the master key can do: wrap a key
/// they know to the vault's public recipient (age needs nothing more).
async fn plant_key(pool: &sqlx::PgPool, user: Uuid) -> DataKey {
    let recipient: String = sqlx::query_scalar("SELECT recipient FROM vault_master WHERE id = 1")
        .fetch_one(pool)
        .await
        .expect("recipient");
    let recipient: age::x25519::Recipient = recipient.parse().expect("an age recipient");
    let known = DataKey::generate();
    let mut plain = known.key_id.as_bytes().to_vec();
    plain.extend_from_slice(known.secret_bytes());
    let wrapped = age::encrypt(&recipient, &plain).expect("wrapped");
    // The MAC cannot be computed without the master key: keep the old one, or none at all.
    sqlx::query("UPDATE key_vault SET key_id = $2, wrapped = $3 WHERE user_id = $1")
        .bind(user)
        .bind(known.key_id)
        .bind(wrapped)
        .execute(pool)
        .await
        .expect("planted");
    known
}

#[tokio::test]
async fn a_data_key_planted_by_someone_without_the_master_key_is_refused() {
    let app = spawn_app().await;
    let (_, uid) = app.login("planted@example.org").await;
    let user: Uuid = uid.parse().expect("uuid");
    plant_key(&app.pool, user).await;

    // A server that has not cached the genuine key reads the planted one from the database.
    let (master, _) = MasterKey::load(None, &app.data_dir).expect("the app's master key");
    let vault = Vault::open(app.pool.clone(), master).await.expect("vault");
    assert!(
        matches!(vault.key_for(UserId::from_uuid(user)).await, Err(VaultError::Forged)),
        "the planted key is refused"
    );
    sqlx::query("UPDATE key_vault SET mac = NULL WHERE user_id = $1")
        .bind(user)
        .execute(&app.pool)
        .await
        .expect("mac removed");
    assert!(
        matches!(vault.key_for(UserId::from_uuid(user)).await, Err(VaultError::Forged)),
        "a key without a MAC is refused too"
    );

    // Through the API: nothing is sealed under the planted key.
    let other = spawn_at(&app.database_url, app.data_dir.clone(), |_| {}).await;
    let (token, _) = other.login("planted@example.org").await;
    let before = app.event_count().await;
    let r = other
        .post(
            "/signals",
            &token,
            json!({"signals": [task("a", "t1", "Sealed under whose key?", 2, false)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", r.body);
    assert_eq!(
        app.event_count().await,
        before,
        "nothing was sealed under the planted key"
    );
}

#[tokio::test]
async fn a_planted_service_secret_keeps_the_vault_shut() {
    let app = spawn_app().await;
    let recipient: String = sqlx::query_scalar("SELECT recipient FROM vault_master WHERE id = 1")
        .fetch_one(&app.pool)
        .await
        .expect("recipient");
    let recipient: age::x25519::Recipient = recipient.parse().expect("an age recipient");
    let wrapped = age::encrypt(&recipient, &[7u8; 32]).expect("wrapped");
    sqlx::query("UPDATE vault_secrets SET wrapped = $1 WHERE name = 'transit'")
        .bind(wrapped)
        .execute(&app.pool)
        .await
        .expect("planted");
    let (master, _) = MasterKey::load(None, &app.data_dir).expect("the app's master key");
    assert!(matches!(
        Vault::open(app.pool.clone(), master).await,
        Err(VaultError::Forged)
    ));
}

#[tokio::test]
async fn keys_stored_before_they_carried_a_mac_are_authenticated_once_and_planted_ones_after_are_not() {
    let app = spawn_app().await;
    let (token, uid) = app.login("legacy@example.org").await;
    app.post(
        "/signals",
        &token,
        json!({"signals": [task("a", "t1", "From before the MAC", 2, false)]}),
    )
    .await;
    // The state a database had before migration 0010.
    sqlx::query("UPDATE key_vault SET wrapped_for = NULL, mac = NULL")
        .execute(&app.pool)
        .await
        .expect("legacy keys");
    sqlx::query("UPDATE vault_secrets SET wrapped_for = NULL, mac = NULL")
        .execute(&app.pool)
        .await
        .expect("legacy secrets");
    sqlx::query("UPDATE vault_master SET authenticated = false")
        .execute(&app.pool)
        .await
        .expect("legacy vault");

    let upgraded = spawn_at(&app.database_url, app.data_dir.clone(), |_| {}).await;
    let (token, again) = upgraded.login("legacy@example.org").await;
    assert_eq!(again, uid);
    assert!(
        upgraded
            .get("/me/export", &token)
            .await
            .body
            .to_string()
            .contains("From before the MAC")
    );
    let unauthenticated: i64 = sqlx::query_scalar("SELECT count(*) FROM key_vault WHERE mac IS NULL")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(unauthenticated, 0);

    // Once authenticated, a key without a MAC is no longer taken on trust.
    let user: Uuid = uid.parse().expect("uuid");
    plant_key(&app.pool, user).await;
    sqlx::query("UPDATE key_vault SET mac = NULL WHERE user_id = $1")
        .bind(user)
        .execute(&app.pool)
        .await
        .expect("mac removed");
    let (master, _) = MasterKey::load(None, &app.data_dir).expect("the app's master key");
    let vault = Vault::open(app.pool.clone(), master).await.expect("vault");
    assert!(matches!(
        vault.key_for(UserId::from_uuid(user)).await,
        Err(VaultError::Forged)
    ));
}

#[tokio::test]
async fn a_rotation_commits_batch_by_batch_needs_both_keys_while_it_runs_and_resumes() {
    let app = spawn_app().await;
    let mut people = Vec::new();
    for i in 0..3 {
        let email = format!("batch{i}@example.org");
        let (token, _) = app.login(&email).await;
        app.post(
            "/signals",
            &token,
            json!({"signals": [task("a", "t1", &format!("Errand of {i}"), 2, false)]}),
        )
        .await;
        people.push(email);
    }
    let (old, _) = MasterKey::load(None, &app.data_dir).expect("the app's master key");
    let new = MasterKey::generate();
    let under_new = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM key_vault WHERE wrapped_for = $1")
            .bind(new.recipient())
            .fetch_one(&app.pool)
            .await
            .expect("count")
    };

    let mut rotation = Rotation::begin(&app.pool, &old, &new).await.expect("begun");
    assert_eq!(rotation.step(1).await.expect("one batch"), 1);
    // The batch is committed and nothing of the rotation stays open between batches.
    assert_eq!(under_new().await, 1, "seen from another connection");
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%' AND query ILIKE '%key_vault%'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("activity");
    assert_eq!(open, 0, "no transaction held between batches");
    drop(rotation); // interrupted

    // Mid-rotation, the old key alone opens nothing new: a server must hold both.
    let mut only_old = oo_api::config::ServeConfig::for_database(&app.database_url, app.data_dir.clone());
    only_old.bind = "127.0.0.1:0".parse().expect("addr");
    assert!(oo_api::Application::build(only_old).await.is_err());
    let both = temp_dir("oo-keys").join("both.key");
    std::fs::write(&both, format!("{}\n{}\n", old.secret_string(), new.secret_string())).expect("key file");
    let mid = spawn_at(&app.database_url, temp_dir("oo-data"), |c| {
        c.db.master_key = Some(both.display().to_string())
    })
    .await;
    for (i, email) in people.iter().enumerate() {
        let (token, _) = mid.login(email).await;
        let export = mid.get("/me/export", &token).await;
        assert!(export.body.to_string().contains(&format!("Errand of {i}")), "{email}");
    }
    // Someone registering now gets a key wrapped to the new master key.
    mid.login("during@example.org").await;
    assert_eq!(under_new().await, 2);

    // Resumed with the same keys, the rotation finishes what is left.
    let (keys, _) = oo_commands::vault::rotate_master_key(&app.pool, &old, &new, 1, |_, _| {})
        .await
        .expect("resumed");
    assert_eq!(keys, 2, "only the keys still under the old master key");
    assert_eq!(under_new().await, 4);
    let previous: Option<String> = sqlx::query_scalar("SELECT previous_recipient FROM vault_master")
        .fetch_one(&app.pool)
        .await
        .expect("master");
    assert_eq!(previous, None, "the rotation is over");

    // The new key alone now opens everything; the old one alone nothing.
    let only_new = temp_dir("oo-keys").join("new.key");
    std::fs::write(&only_new, format!("{}\n", new.secret_string())).expect("key file");
    let after = spawn_at(&app.database_url, temp_dir("oo-data"), |c| {
        c.db.master_key = Some(only_new.display().to_string())
    })
    .await;
    for (i, email) in people.iter().enumerate() {
        let (token, _) = after.login(email).await;
        let export = after.get("/me/export", &token).await;
        assert!(export.body.to_string().contains(&format!("Errand of {i}")), "{email}");
    }
    assert!(matches!(
        Vault::open(app.pool.clone(), old).await,
        Err(VaultError::StaleMaster)
    ));
}
