//! Serving a tip: the decision is appended as `TipServed` (durably, before anyone is told) and
//! the text to show is opened — for a todo, its title from the sealed envelope of the task
//! event that set it, under the person's key.

use crate::aggregate::{CommandError, Executed, Meta, Repository, open_fields};
use crate::vault::Vault;
use oo_domain::decision::{Candidate, Decided, Prepared};
use oo_domain::ids::TipId;
use oo_domain::personal;
use oo_domain::tip::{CandidateKind, Tip, TipCommand, TipError};
use uuid::Uuid;

/// The served decision and what to show.
pub struct Served {
    pub tip_id: TipId,
    pub kind: CandidateKind,
    pub title: String,
    pub body: String,
    /// `todoist`, `manual` or `oo`.
    pub source: String,
    pub deep_link: Option<String>,
    pub policy: String,
    pub score: f64,
    pub propensity: f64,
    pub executed: Executed<Tip>,
}

/// Appends `TipServed` for the decision and says what to show.
pub async fn serve(
    tips: &Repository<Tip>,
    vault: &Vault,
    prepared: Prepared,
    decided: Decided,
) -> Result<Served, CommandError<TipError>> {
    let chosen = decided.chosen;
    let (title, body, source, deep_link) = match &prepared.candidates[chosen] {
        Candidate::Todo(t) => {
            let key = vault.key_for(prepared.user_id).await?;
            let fields = open_fields(key.as_ref(), t.text.event_id, t.text.envelope.as_deref());
            let text = |p: &str| {
                fields
                    .as_ref()
                    .and_then(|f| f.get(p))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let title = text(personal::TASK_TITLE).unwrap_or_else(|| personal::REDACTED.to_owned());
            let body = text(personal::TASK_PROJECT).unwrap_or_default();
            let link = (t.source == "todoist").then(|| format!("todoist://task?id={}", t.external_id));
            (title, body, t.source.clone(), link)
        }
        Candidate::Advice(a) => (a.title.clone(), a.body.clone(), "oo".to_owned(), None),
        Candidate::NotNow => (String::new(), String::new(), "oo".to_owned(), None),
    };
    let tip_id = TipId::from_uuid(Uuid::now_v7());
    let kind = prepared.logged[chosen].kind;
    let (score, propensity) = (decided.scored.scores[chosen], decided.scored.probabilities[chosen]);
    let policy = decided.served_by.policy.clone();
    let now = prepared.now;
    let decision = decided.into_decision(tip_id, prepared, title.clone(), body.clone());
    let executed = tips
        .execute_new(
            &tip_id.to_string(),
            TipCommand::Serve(Box::new(decision)),
            Meta::new(now),
        )
        .await?;
    Ok(Served {
        tip_id,
        kind,
        title,
        body,
        source,
        deep_link,
        policy,
        score,
        propensity,
        executed,
    })
}
