//! `[notify] webhook`, told how a command ended: after the outcome is known and before it
//! is printed, so a notification that failed is one more warning of the command.

use cutover_config::NotifyEvent;
use cutover_notify::{Notice, Webhook};

/// Posts the notice `event` is about when the webhook wants it; what went wrong, as a
/// warning line. Never an error: the deploy, switch or rollback is over either way.
pub fn send(
    webhook: Option<&Webhook>,
    event: NotifyEvent,
    notice: impl FnOnce() -> Notice,
) -> Option<String> {
    let webhook = webhook.filter(|w| w.wants(event))?;
    let error = webhook.post(&notice()).err()?;
    Some(format!("the {event} notification failed: {error}"))
}
