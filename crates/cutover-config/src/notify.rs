//! `[notify]`: a webhook told what each deploy, switch and rollback did.

use serde::{Deserialize, Serialize};

/// How long one notification may take when `notify.timeout_seconds` is not set: a
/// webhook that hangs delays the end of the command by at most this.
pub const DEFAULT_NOTIFY_TIMEOUT_SECONDS: u64 = 5;

/// The longest `notify.timeout_seconds` accepted: the deploy is over by then, and a
/// command that waits minutes for a chat server is worse than a missed message.
pub const MAX_NOTIFY_TIMEOUT_SECONDS: u64 = 60;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    /// An `http://` or `https://` URL a JSON document is POSTed to after each deploy,
    /// switch and rollback (Slack and Mattermost incoming webhooks read its `text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Seconds the one attempt may take, connection included (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The events sent; default every one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<NotifyEvent>>,
}

impl NotifySettings {
    /// `timeout_seconds`, or the default.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.timeout_seconds
                .unwrap_or(DEFAULT_NOTIFY_TIMEOUT_SECONDS),
        )
    }

    /// Whether `event` is one to send.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.on.as_ref().is_none_or(|on| on.contains(&event))
    }
}

/// What a notification is about; its `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A deploy switched every host to the new release and committed.
    Deployed,
    /// A deploy failed: before any switch (nothing changed), at the check (every host
    /// back), or in an `after_switch` hook (the release stays live).
    DeployFailed,
    /// `cutover switch` made a release current.
    Switched,
    SwitchFailed,
    /// `cutover rollback` went back to an earlier release.
    RolledBack,
    RollbackFailed,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Deployed => "deployed",
            NotifyEvent::DeployFailed => "deploy_failed",
            NotifyEvent::Switched => "switched",
            NotifyEvent::SwitchFailed => "switch_failed",
            NotifyEvent::RolledBack => "rolled_back",
            NotifyEvent::RollbackFailed => "rollback_failed",
        }
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule for `notify.webhook`: an absolute `http://` or `https://` URL with a host.
/// The error says what is wrong without repeating the URL, whose path is often a secret
/// (a Slack webhook's token).
pub fn webhook_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme is `{}`; a webhook is `https://` (or `http://`)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(url)
}
