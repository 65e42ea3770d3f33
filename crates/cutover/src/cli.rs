//! Command-line types. Doc comments here are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Atomic, zero-downtime deploys for PHP applications.
///
/// Each release is staged beside the live one and `current` is switched with a single
/// rename(2): every request sees the old release or the new one, never a mix.
#[derive(Debug, Parser)]
#[command(name = "cutover", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Settings file; without this flag ./cutover.toml is read when it exists.
    #[arg(long, global = true, value_name = "FILE", env = "CUTOVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (shapes in README.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Show what cutover does step by step on stderr: each ssh command, each request to a
    /// host and how long it took (`-vv` for more). RUST_LOG, when set, wins.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented cutover.toml for the app in DIR: Laravel, Symfony and WordPress
    /// are told by their files (--preset chooses).
    Init(InitArgs),
    /// Stage SOURCE as a new release and switch `current` to it.
    Deploy(DeployArgs),
    /// List the releases of a deploy path, marking the current one.
    Releases(TargetArgs),
    /// Make an existing release current.
    Switch(SwitchArgs),
    /// Go back to the release before current, or to the one named.
    Rollback(RollbackArgs),
    /// Remove old releases and what interrupted deploys left behind.
    Cleanup(CleanupArgs),
    /// Prove a setup under load: flip between two releases while requesting a URL, then
    /// measure failed and mixed responses and how fast the last release becomes visible.
    Verify(VerifyArgs),
    /// Ask the php-fpm pool about OPcache, or reset it (no PHP needed on this machine).
    #[command(subcommand)]
    Php(PhpCommand),
    /// Read the real nginx, Apache and php-fpm configuration and report what breaks atomic
    /// deploys (stale code, cached files, killed requests), each with the line to fix.
    /// Exit 1 when an error-severity hazard is found, 0 with warnings only.
    Doctor(DoctorArgs),
    /// Print a recommended, commented configuration for the deploy path.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Find includes in PHP source whose paths can resolve through the deploy symlink into
    /// another release mid-request (absolute paths, DOCUMENT_ROOT, include_path, …).
    Lint(LintArgs),
    /// Print completions for a shell: `cutover completions bash > /etc/bash_completion.d/cutover`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `cutover man > /usr/local/share/man/man1/cutover.1`.
    Man,
    /// The remote end of a [hosts] deploy, run by cutover itself over ssh: speaks a framed
    /// protocol on stdin/stdout. Not for use by hand.
    #[command(hide = true)]
    Agent,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The page to request (plain http://, usually the app on this machine).
    #[arg(long)]
    pub url: String,
    /// The two releases to flip between, `A,B`; the run ends on B.
    #[arg(long, value_name = "A,B")]
    pub between: String,
    /// How long to flip.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15s")]
    pub duration: Duration,
    /// Time between switches.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "200ms")]
    pub flip_every: Duration,
    /// Keep-alive connections requesting at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,
    /// A regex whose matches (group 1 if any) name the release that produced a part of
    /// the page; default: the two release ids as words. A page naming both is mixed.
    #[arg(long, value_name = "REGEX")]
    pub release_marker: Option<String>,
    /// After each page, fetch on the same connection what a browser would fetch at once:
    /// `<link href>` (stylesheet, icon, preload), `<script src>`, `<img src>`, same origin
    /// only, at most 16 per page. Any asset not answered 2xx fails the run: a page rendered
    /// by one release asking the other for its files.
    #[arg(long)]
    pub assets: bool,
    /// Load before the first switch, for the steady-state latency.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    pub baseline: Duration,
    /// How long to keep requesting after the last switch, waiting for B to be seen by all.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "3s")]
    pub settle: Duration,
    /// Upper bound on requests, whatever the durations.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_requests: u64,
    /// Measure another deploy method instead of cutover's switch: at each flip run this
    /// with `sh -c`, with CUTOVER_SWITCH_TO set to A or B (e.g. an in-place rsync, or
    /// `ln -sfn`). No deploy path, lock or refresh is involved then.
    #[arg(long, value_name = "COMMAND")]
    pub switch_command: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Wait up to this long for another deploy's lock.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_lock: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The pool's FastCGI address (`unix:/run/php/php8.2-fpm.sock`, `127.0.0.1:9000`);
    /// default: [php] fpm. Without one, the pool's ini values are not checked.
    #[arg(long, value_name = "ADDRESS", env = "CUTOVER_FPM")]
    pub fpm: Option<String>,
    /// The pool's chroot, if any; default: [php] fpm_chroot.
    #[arg(long, value_name = "DIR")]
    pub fpm_chroot: Option<PathBuf>,
    /// The php-fpm master's pid file, to read its own config with `php-fpm -tt`;
    /// default: [refresh] fpm_pidfile.
    #[arg(long, value_name = "FILE")]
    pub fpm_pidfile: Option<PathBuf>,
    /// Check nginx's configuration, as `nginx -T` shows it.
    #[arg(long)]
    pub nginx: bool,
    /// The nginx config file (`nginx -T -c FILE`); implies --nginx.
    #[arg(long, value_name = "FILE")]
    pub nginx_config: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, value_name = "PATH", default_value = "nginx")]
    pub nginx_bin: String,
    /// Check Apache's configuration (`apachectl -M`, `-S` and the virtual hosts).
    #[arg(long)]
    pub apache: bool,
    /// The Apache config file (`apache2 -f FILE -M`); implies --apache.
    #[arg(long, value_name = "FILE")]
    pub apache_config: Option<PathBuf>,
    /// The Apache binary; default: `apache2` with --apache-config, else `apachectl`.
    #[arg(long, value_name = "PATH")]
    pub apache_bin: Option<String>,
    /// The deploy path, to know which roots go through its `current`; default: [deploy] path.
    #[arg(long, value_name = "PATH", env = "CUTOVER_DEPLOY_PATH")]
    pub to: Option<PathBuf>,
    /// How long to wait for the pool to answer.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// An nginx server block: root through `current`, PHP given `$realpath_root`.
    Nginx(ConfigArgs),
    /// An Apache virtual host with mod_php (prefork), and the php-fpm alternative.
    Apache(ConfigArgs),
    /// A php-fpm pool and [global] section: process_control_timeout, OPcache settings.
    Fpm(ConfigArgs),
    /// The hosts commands act on, as [inventory] and [hosts] resolve them, in the order
    /// `once` hooks pick from: ssh destination, deploy path, roles.
    Hosts,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The deploy path; default: [deploy] path.
    #[arg(long, value_name = "PATH", env = "CUTOVER_DEPLOY_PATH")]
    pub to: Option<PathBuf>,
    /// The pool's FastCGI address; default: [php] fpm, or unix:/run/php/php8.2-fpm.sock.
    #[arg(long, value_name = "ADDRESS", env = "CUTOVER_FPM")]
    pub fpm: Option<String>,
    /// The web root inside a release.
    #[arg(long, value_name = "DIR", default_value = "public")]
    pub web_dir: String,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The app's source: a directory (every *.php, *.phtml, *.inc, *.module file, vendor/
    /// included) or one file.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Also report includes whose path comes from somewhere the linter cannot follow (a
    /// function parameter, a method's result), outside vendor/.
    #[arg(long)]
    pub strict: bool,
    /// The deploy path the app is deployed to (repeatable); default: [deploy] path and every
    /// [hosts.*] path of cutover.toml. With one, absolute paths outside its `current` are not
    /// reported.
    #[arg(long, value_name = "PATH")]
    pub deploy_path: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PhpCommand {
    /// OPcache state, memory and the ini values that decide staleness, from one worker.
    Status(PhpArgs),
    /// opcache_reset(), then wait until the pool has really restarted its cache.
    Reset(PhpResetArgs),
}

#[derive(Debug, Args)]
pub struct PhpArgs {
    /// The pool's FastCGI address: `unix:/run/php/php8.2-fpm.sock`, a socket path, or
    /// `127.0.0.1:9000`; default: [php] fpm.
    #[arg(long, value_name = "ADDRESS", env = "CUTOVER_FPM")]
    pub fpm: Option<String>,
    /// The pool's chroot, if any; default: [php] fpm_chroot.
    #[arg(long, value_name = "DIR")]
    pub fpm_chroot: Option<PathBuf>,
    /// Where to write the script the pool runs (must be readable by the pool's user and
    /// inside its open_basedir); default: <deploy path>/.cutover/php.
    #[arg(long, value_name = "DIR")]
    pub script_dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to wait for the pool to answer.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct PhpResetArgs {
    #[command(flatten)]
    pub pool: PhpArgs,
    /// How long to wait for requests that hold the old cache to finish.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub wait: Duration,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write cutover.toml into.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite an existing cutover.toml.
    #[arg(long)]
    pub force: bool,
    /// laravel, symfony, wordpress or generic; default: told by the app's files.
    #[arg(long, value_name = "NAME", value_parser = ["laravel", "symfony", "wordpress", "generic"])]
    pub preset: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// The deploy path (holding `current`, `releases/`, `shared/`); default: [deploy] path.
    #[arg(long, value_name = "PATH", env = "CUTOVER_DEPLOY_PATH")]
    pub to: Option<PathBuf>,
    /// With [hosts] in cutover.toml: only this host (repeatable); default: every host.
    /// Without --to, commands act on the hosts of [hosts].
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// With [hosts]: only the hosts with this role (repeatable: any of them).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ChangeArgs {
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to this long for another deploy's lock (e.g. `30s`, `2m`) instead of failing.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_lock: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Directory to deploy; default: [deploy] repository, [deploy] source, or the
    /// directory of cutover.toml. A git work tree deploys what git would commit: its
    /// ignored files are left out.
    pub source: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Deploy this git tag, branch or commit: exactly its tree, submodules included,
    /// nothing untracked or ignored. Resolved in [deploy] repository, else in SOURCE's own
    /// repository; default: [deploy] branch.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Do nothing (exit 0) when the commit to deploy is already the current release's
    /// commit on every host.
    #[arg(long)]
    pub if_changed: bool,
    /// Release id instead of the UTC timestamp (letters, digits, `.`, `_`, `-`).
    #[arg(long, value_name = "ID")]
    pub release: Option<String>,
    /// Releases to keep after the switch; default: [deploy] keep_releases, or 5.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    /// With [hosts]: how many hosts are worked on at once; default: all of them, up to
    /// what the open-file limit allows (240 at the usual 1024).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub parallel: Option<u64>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The release to make current (see `cutover releases`).
    pub release: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The release to go back to; default: the newest one older than current.
    pub release: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Releases to keep; default: [deploy] keep_releases, or 5. Current and the release it
    /// replaced are always kept.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try `30s` or `2m`)"))
}
