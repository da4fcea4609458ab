//! The durable outbox: a message becomes one delivery row per interested subscription, written in the
//! same transaction as the change it announces.

use serde_json::{Value, json};

use super::payload::{render, wants};
use crate::db::{self, builds::BuildRow, webhooks::WebhookRow};

/// Something to announce to a repository's subscribers.
pub struct Message {
    pub event: &'static str,
    pub data: Value,
    /// The image tag it concerns, for tag filters (None: not known yet).
    pub tag: Option<String>,
    /// CloudEvents `subject`: the tag, or the build id.
    pub subject: String,
}

fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Queues `msg` for every active subscription of the repository that wants it. Returns delivery ids.
pub async fn enqueue(
    tx: &mut sqlx::SqliteConnection,
    public_url: &str,
    repository_id: &str,
    msg: &Message,
) -> Result<Vec<String>, sqlx::Error> {
    let hooks = db::webhooks::list(&mut *tx, repository_id).await?;
    let message_id = message_id();
    let mut ids = Vec::new();
    for hook in hooks.iter().filter(|h| {
        h.active
            && wants(
                &h.event_list(),
                h.tag_filter.as_deref(),
                msg.event,
                msg.tag.as_deref(),
            )
    }) {
        ids.push(enqueue_to(tx, public_url, hook, &message_id, msg).await?);
    }
    Ok(ids)
}

/// Queues `msg` for one subscription (a test event), whatever its filters.
pub async fn enqueue_one(
    tx: &mut sqlx::SqliteConnection,
    public_url: &str,
    hook: &WebhookRow,
    msg: &Message,
) -> Result<String, sqlx::Error> {
    enqueue_to(tx, public_url, hook, &message_id(), msg).await
}

async fn enqueue_to(
    tx: &mut sqlx::SqliteConnection,
    public_url: &str,
    hook: &WebhookRow,
    message_id: &str,
    msg: &Message,
) -> Result<String, sqlx::Error> {
    let source = format!(
        "{public_url}/repos/{}/{}",
        msg.data["namespace"].as_str().unwrap_or_default(),
        msg.data["repository"].as_str().unwrap_or_default()
    );
    let r = render(
        &hook.payload_format,
        message_id,
        &msg.data,
        &source,
        &msg.subject,
        &db::now(),
    );
    db::deliveries::enqueue(
        tx,
        &hook.id,
        message_id,
        msg.event,
        r.content_type,
        &r.body,
        None,
    )
    .await
}

pub struct ImagePushed<'a> {
    pub namespace: &'a str,
    pub repository: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    pub image: &'a str,
    pub source: &'a str,
    pub build: Option<&'a BuildRow>,
    pub previous_digest: Option<&'a str>,
    pub pushed_at: &'a str,
}

/// `image.pushed`, as api.md shows it, plus `previous_digest` when the tag moved.
pub fn image_pushed(p: &ImagePushed<'_>) -> Message {
    let mut data = json!({
        "event": "image.pushed",
        "namespace": p.namespace,
        "repository": p.repository,
        "tag": p.tag,
        "digest": p.digest,
        "image": p.image,
        "source": p.source,
        "build": p.build.map(|b| json!({"id": b.id, "ref": b.git_ref, "commit": b.commit_sha, "rule_id": b.rule_id})),
        "pushed_at": p.pushed_at,
    });
    if let Some(prev) = p.previous_digest {
        data["previous_digest"] = json!(prev);
    }
    Message {
        event: "image.pushed",
        data,
        tag: Some(p.tag.to_string()),
        subject: p.tag.to_string(),
    }
}

/// `build.started`, `build.succeeded`, `build.failed`.
pub fn build_event(event: &'static str, b: &BuildRow) -> Message {
    let data = json!({
        "event": event,
        "namespace": b.namespace,
        "repository": b.repository,
        "build": {
            "id": b.id, "rule_id": b.rule_id, "trigger": b.trigger, "ref": b.git_ref, "commit": b.commit_sha,
            "tag": b.tag, "image": b.image, "status": b.status, "error": b.error, "digest": b.digest,
            "created_at": b.created_at, "started_at": b.started_at, "finished_at": b.finished_at,
        },
    });
    Message {
        event,
        data,
        tag: b.tag.clone(),
        subject: b.id.clone(),
    }
}

/// What `POST .../webhooks/{id}/test` sends.
pub fn test_message(namespace: &str, repository: &str) -> Message {
    let data = json!({
        "event": "test",
        "namespace": namespace,
        "repository": repository,
        "message": "a test delivery from kiln",
        "sent_at": db::now(),
    });
    Message {
        event: "test",
        data,
        tag: None,
        subject: "test".into(),
    }
}
