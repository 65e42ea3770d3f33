//! Telling a webhook what a deploy, switch or rollback did.
//!
//! A [`Notice`] is built from what the pipeline returned (a [`DeployOutcome`], a
//! [`SwitchOutcome`] or a [`FleetError`]); a [`Webhook`] POSTs it as JSON, once, within its
//! timeout. Its `text` field is one sentence for people, so Slack's and Mattermost's
//! incoming webhooks show it as it is.
//!
//! The deploy is over when a notice is sent: a webhook that fails is the caller's warning,
//! never its error, so nothing here retries or waits beyond the one bounded attempt.

mod tls;

use std::io::Read;
use std::time::Duration;

use cutover_config::{NotifyEvent, NotifySettings};
use cutover_core::history::Source;
use cutover_core::ReleaseId;
use cutover_pipeline::{
    DeployOutcome, FleetError, HostReport, HostState, SwitchOutcome, LOCAL_HOST,
};
use serde::Serialize;

/// The first bytes of a refusing webhook's answer, for the warning (Slack says
/// `invalid_payload`, `no_service`, …).
const ANSWER_SHOWN: u64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL in the settings is none a webhook can have.
    #[error("`notify.webhook`: {why}")]
    BadUrl { why: String },
    #[error("the webhook at {at} could not be reached: {why}")]
    Unreachable { at: String, why: String },
    #[error("the webhook at {at} answered {status}{answer}")]
    Refused {
        at: String,
        status: u16,
        /// `: "…"` with the start of the body, or nothing.
        answer: String,
    },
}

/// Where notices go, resolved once from `[notify]`.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: url::Url,
    timeout: Duration,
    settings: NotifySettings,
}

impl Webhook {
    /// The webhook of `[notify]`, when one is set.
    pub fn from_settings(settings: &NotifySettings) -> Result<Option<Webhook>, NotifyError> {
        let Some(text) = &settings.webhook else {
            return Ok(None);
        };
        let url = cutover_config::webhook_url(text).map_err(|why| NotifyError::BadUrl { why })?;
        Ok(Some(Webhook {
            url,
            timeout: settings.timeout(),
            settings: settings.clone(),
        }))
    }

    /// Whether `[notify] on` asks for `event` (every event when it is not set).
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.settings.wants(event)
    }

    /// The webhook's scheme, host and port: what warnings and logs name. The path and
    /// query of a chat webhook are its secret.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// One POST of `notice` as JSON, bounded by the timeout as a whole (name lookup,
    /// connection, TLS, request and answer). Any 2xx is delivered; a redirect is not
    /// followed, so the notice never goes to a host the settings do not name.
    pub fn post(&self, notice: &Notice) -> Result<(), NotifyError> {
        let at = self.origin();
        let body = serde_json::to_vec(notice).map_err(|e| NotifyError::Unreachable {
            at: at.clone(),
            why: format!("the notice is not JSON: {e}"),
        })?;
        let tls = tls::connector().map_err(|why| NotifyError::Unreachable {
            at: at.clone(),
            why,
        })?;
        let agent = ureq::AgentBuilder::new()
            .timeout(self.timeout)
            .redirects(0)
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .tls_connector(tls)
            .build();
        let answer = agent
            .request_url("POST", &self.url)
            .set("Content-Type", "application/json")
            .send_bytes(&body);
        let response = match answer {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(e)) => {
                return Err(NotifyError::Unreachable {
                    at,
                    why: transport_error(&e, self.timeout),
                })
            }
        };
        let status = response.status();
        tracing::info!(webhook = %at, status, event = %notice.event, "notified");
        if (200..300).contains(&status) {
            return Ok(());
        }
        let mut start = String::new();
        let _ = response
            .into_reader()
            .take(ANSWER_SHOWN)
            .read_to_string(&mut start);
        let start = start.trim();
        Err(NotifyError::Refused {
            at,
            status,
            answer: if start.is_empty() {
                String::new()
            } else {
                format!(": {start:?}")
            },
        })
    }
}

/// Never the URL: ureq's own message starts with it, and its path is a secret.
fn transport_error(error: &ureq::Transport, timeout: Duration) -> String {
    let detail = std::error::Error::source(error)
        .map(ToString::to_string)
        .or_else(|| error.message().map(str::to_string))
        .unwrap_or_else(|| error.kind().to_string());
    if detail.contains("timed out") || detail.contains("deadline") {
        return format!("no answer within {} s ({detail})", timeout.as_secs());
    }
    match error.kind() {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
            format!("cannot connect: {detail}")
        }
        kind => format!("{kind}: {detail}"),
    }
}

/// The JSON document a webhook receives. Every key is always there (`null` when unknown),
/// so a receiver needs no knowledge of which event carries what.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub event: NotifyEvent,
    /// One sentence for people: what happened, where, who did it, and on failure what
    /// stands now.
    pub text: String,
    /// The release deployed or switched to; on a failed deploy, the one that was being
    /// deployed (`null` when it failed before an id was chosen).
    pub release: Option<ReleaseId>,
    /// The release that was current before, when every host had the same.
    pub previous: Option<ReleaseId>,
    pub hosts: Vec<HostOutcome>,
    /// The OS user cutover ran as.
    pub user: String,
    /// Who deployed besides the OS user, when known: the CI actor or the git user.
    pub deployer: Option<String>,
    pub commit: Option<String>,
    /// The ref as given (`--ref`, `[deploy] branch`), else the work tree's branch.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The commit's author, `Name <email>`.
    pub author: Option<String>,
    /// From the command's start to the outcome.
    pub duration_ms: u64,
    pub deploy_paths: Vec<String>,
    /// For a failure: the first host's error (or what failed across the fleet), one line.
    pub error: Option<String>,
    /// For a failure: what the user can rely on now ("every host is as it was", "… is live
    /// and stays so").
    pub state: Option<String>,
    /// When the notice was made, RFC 3339 in UTC.
    pub time: String,
}

/// One host's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub name: String,
    /// As in `--json` output: `deployed`, `switched`, `rolled back`, `not switched`,
    /// `failed`, …
    pub status: HostState,
    pub deploy_path: String,
    pub error: Option<String>,
}

/// One run of a command, as every notice of it tells it: what it deployed, who ran it
/// and for how long.
pub struct Run<'a> {
    /// What a deploy staged; `None` for a switch or rollback.
    pub source: Option<&'a Source>,
    /// Who asked, besides the OS user; a deploy's comes from its source.
    pub deployer: Option<String>,
    pub duration: Duration,
}

impl Notice {
    pub fn deployed(outcome: &DeployOutcome, run: &Run<'_>) -> Notice {
        let mut notice = Notice::new(NotifyEvent::Deployed, &outcome.hosts, run);
        notice.release = Some(outcome.release.clone());
        notice.text = format!(
            "{} deployed {}{} to {} in {}",
            notice.who(),
            outcome.release,
            notice.source_words(),
            place(&notice.hosts),
            seconds(run.duration),
        );
        if let Some(previous) = &notice.previous {
            notice.text.push_str(&format!(" (was {previous})"));
        }
        notice
    }

    pub fn deploy_failed(error: &FleetError, run: &Run<'_>) -> Notice {
        let mut notice = Notice::new(NotifyEvent::DeployFailed, &error.hosts, run);
        let of = match &error.release {
            Some(release) => format!(" of {release}"),
            None => String::new(),
        };
        let what = format!(
            "deploy{of}{} to {}",
            notice.source_words(),
            place(&notice.hosts)
        );
        notice.release = error.release.clone();
        notice.failed(&what, error);
        notice
    }

    /// `cutover switch` (or `rollback`) stood on every host.
    pub fn switched(outcome: &SwitchOutcome, rollback: bool, run: &Run<'_>) -> Notice {
        let event = match rollback {
            true => NotifyEvent::RolledBack,
            false => NotifyEvent::Switched,
        };
        let mut notice = Notice::new(event, &outcome.hosts, run);
        notice.release = Some(outcome.release.clone());
        let verb = match rollback {
            true => "rolled back",
            false => "switched",
        };
        let already = outcome.hosts.iter().all(|h| h.unchanged == Some(true));
        notice.text = format!(
            "{} {verb} {} to {}",
            notice.who(),
            place(&notice.hosts),
            outcome.release
        );
        match &notice.previous {
            _ if already => notice.text.push_str(" (already current)"),
            Some(previous) => notice.text.push_str(&format!(" (was {previous})")),
            None => {}
        }
        notice
    }

    pub fn switch_failed(error: &FleetError, rollback: bool, run: &Run<'_>) -> Notice {
        let event = match rollback {
            true => NotifyEvent::RollbackFailed,
            false => NotifyEvent::SwitchFailed,
        };
        let mut notice = Notice::new(event, &error.hosts, run);
        let noun = if rollback { "rollback" } else { "switch" };
        let to = match &error.release {
            Some(release) => format!(" to {release}"),
            None => String::new(),
        };
        let what = format!("{noun} of {}{to}", place(&notice.hosts));
        notice.release = error.release.clone();
        notice.failed(&what, error);
        notice
    }

    fn new(event: NotifyEvent, hosts: &[HostReport], run: &Run<'_>) -> Notice {
        let source = run.source;
        let first_previous = hosts.first().and_then(|h| h.previous.as_ref());
        let previous = first_previous
            .filter(|first| hosts.iter().all(|h| h.previous.as_ref() == Some(*first)))
            .cloned();
        Notice {
            event,
            text: String::new(),
            release: None,
            previous,
            hosts: hosts
                .iter()
                .map(|h| HostOutcome {
                    name: h.host.clone(),
                    status: h.status,
                    deploy_path: h.deploy_path.clone(),
                    error: h.error.as_ref().map(|e| e.one_line()),
                })
                .collect(),
            user: cutover_core::identity::user(),
            deployer: run
                .deployer
                .clone()
                .or_else(|| source.and_then(|s| s.deployer.clone())),
            commit: source.and_then(|s| s.git_commit.clone()),
            git_ref: source.and_then(|s| s.git_ref.clone().or_else(|| s.git_branch.clone())),
            author: source.and_then(|s| s.git_author.clone()),
            duration_ms: run.duration.as_millis() as u64,
            deploy_paths: hosts.iter().map(|h| h.deploy_path.clone()).collect(),
            error: None,
            state: None,
            time: cutover_core::identity::now_rfc3339(),
        }
    }

    /// `what` ("deploy of R (main 4f1c2d3) to 3 hosts") by alice failed on web2: …;
    /// every host is as it was.
    fn failed(&mut self, what: &str, error: &FleetError) {
        let failed: Vec<&str> = error.errors().map(|(name, _)| name).collect();
        let line = match error.errors().next() {
            Some((_, first)) if failed.len() > 1 => {
                format!("{} (and {} more)", first.one_line(), failed.len() - 1)
            }
            Some((_, first)) => first.one_line(),
            None => error.summary.clone(),
        };
        let on = match (failed.as_slice(), error.hosts.as_slice()) {
            // One host given with `--to`: its path is already named.
            ([_], [_]) | ([], _) => String::new(),
            (names, _) => format!(" on {}", names.join(", ")),
        };
        self.text = format!(
            "{what} by {} failed{on}: {line}; {}",
            self.who(),
            error.state
        );
        self.error = Some(line);
        self.state = Some(error.state.clone());
    }

    /// " (main 4f1c2d3)" for a commit, nothing for a plain directory or a switch.
    fn source_words(&self) -> String {
        let Some(commit) = self.commit.as_deref() else {
            return String::new();
        };
        let short = &commit[..commit.len().min(7)];
        match self.git_ref.as_deref() {
            Some(given) => format!(" ({given} {short})"),
            None => format!(" ({short})"),
        }
    }

    /// The deployer's name without the email or the CI variable, else the OS user.
    fn who(&self) -> String {
        let Some(deployer) = &self.deployer else {
            return self.user.clone();
        };
        let name = deployer
            .split(" <")
            .next()
            .and_then(|n| n.split(" (").next())
            .unwrap_or(deployer)
            .trim();
        if name.is_empty() {
            self.user.clone()
        } else {
            name.to_string()
        }
    }
}

/// A deploy path given with `--to` by its path, one host of `[hosts]` by its name,
/// several by their number.
fn place(hosts: &[HostOutcome]) -> String {
    match hosts {
        [one] if one.name == LOCAL_HOST => one.deploy_path.clone(),
        [one] => one.name.clone(),
        many => format!("{} hosts", many.len()),
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use cutover_pipeline::{HostError, HostErrorKind};

    use super::*;

    fn id(text: &str) -> ReleaseId {
        ReleaseId::parse(text).unwrap()
    }

    fn host(name: &str, status: HostState) -> HostReport {
        HostReport {
            host: name.into(),
            status,
            deploy_path: "/var/www/app".into(),
            previous: Some(id("20261130090000")),
            ..HostReport::default()
        }
    }

    fn git_source() -> Source {
        Source {
            path: "/src/shop".into(),
            git_commit: Some("4f1c2d3e5b6a".into()),
            git_branch: Some("main".into()),
            git_author: Some("Jane Doe <jane@example.com>".into()),
            deployer: Some("Alice Smith <alice@example.com>".into()),
            ..Source::default()
        }
    }

    #[test]
    fn a_deploy_to_several_hosts_names_the_deployer_the_commit_and_the_time() {
        let outcome = DeployOutcome {
            release: id("20261201120000"),
            dry_run: false,
            hosts: ["web1", "web2", "web3"]
                .map(|n| host(n, HostState::Deployed))
                .to_vec(),
            switch_skew_us: Some(400),
            total_ms: 4000,
        };
        let source = git_source();
        let run = Run {
            source: Some(&source),
            deployer: None,
            duration: Duration::from_millis(4210),
        };
        let notice = Notice::deployed(&outcome, &run);
        assert_eq!(
            notice.text,
            "Alice Smith deployed 20261201120000 (main 4f1c2d3) to 3 hosts in 4.2 s (was 20261130090000)"
        );
        let doc = serde_json::to_value(&notice).unwrap();
        assert_eq!(doc["event"], "deployed");
        assert_eq!(doc["ref"], "main");
        assert_eq!(doc["commit"], "4f1c2d3e5b6a");
        assert_eq!(doc["author"], "Jane Doe <jane@example.com>");
        assert_eq!(doc["deployer"], "Alice Smith <alice@example.com>");
        assert_eq!(doc["duration_ms"], 4210);
        assert_eq!(doc["hosts"][2]["name"], "web3");
    }

    #[test]
    fn a_failure_names_the_failed_hosts_their_first_error_and_what_stands() {
        let mut web2 = host("web2", HostState::Failed);
        web2.error = Some(HostError {
            kind: HostErrorKind::Failed,
            message: "disk full".into(),
            causes: vec!["writing releases/x/a.php".into()],
            hints: Vec::new(),
        });
        let mut web3 = web2.clone();
        web3.host = "web3".into();
        let error = FleetError {
            kind: HostErrorKind::Failed,
            summary: "staging failed on a host; no host was switched".into(),
            state: "every host is as it was".into(),
            next: None,
            release: Some(id("20261201120000")),
            hosts: vec![host("web1", HostState::NotSwitched), web2, web3],
        };
        let run = Run {
            source: None,
            deployer: Some("octocat (GITHUB_ACTOR)".into()),
            duration: Duration::from_secs(1),
        };
        let notice = Notice::deploy_failed(&error, &run);
        assert_eq!(
            notice.text,
            "deploy of 20261201120000 to 3 hosts by octocat failed on web2, web3: disk full; writing releases/x/a.php (and 1 more); every host is as it was"
        );
        assert_eq!(notice.state.as_deref(), Some("every host is as it was"));

        let rollback = Notice::switch_failed(&error, true, &run);
        assert_eq!(rollback.event, NotifyEvent::RollbackFailed);
        assert!(rollback
            .text
            .starts_with("rollback of 3 hosts to 20261201120000 by octocat failed on web2"));
    }

    #[test]
    fn only_http_and_https_webhooks_and_warnings_never_show_the_path() {
        let settings = |url: &str| NotifySettings {
            webhook: Some(url.into()),
            ..NotifySettings::default()
        };
        let webhook = Webhook::from_settings(&settings("https://hooks.example.com/T/B/secret"))
            .unwrap()
            .unwrap();
        assert_eq!(webhook.origin(), "https://hooks.example.com");
        assert!(Webhook::from_settings(&settings("file:///etc/passwd")).is_err());
        assert!(Webhook::from_settings(&NotifySettings::default())
            .unwrap()
            .is_none());
    }
}
