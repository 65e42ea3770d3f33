//! Which agent file a host gets and how it gets there: `cutover-agent` beside this
//! executable (else this executable), or the `[ssh] agent_binaries` file for the host's
//! `uname -sm`, checked before it is sent; named on the host after a hash of its bytes, so
//! a host runs exactly the build it was sent; sent gzip-compressed (`gzip -d` is on every
//! host; zstd is not) under a temporary name, then renamed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use super::ssh::{host_error, quote, ssh_command, Control, Target, OUR_VERSION, WRONG_PLATFORM};
use super::AgentUpload;
use crate::plan::AgentSource;
use crate::HostError;

type Result<T, E = HostError> = std::result::Result<T, E>;

/// An agent that may be uploaded: for hosts whose `uname -sm` is `platform`.
pub(super) struct Candidate {
    pub(super) platform: String,
    pub(super) file: PathBuf,
    /// This executable: known to run here, so not checked like a file of the config.
    pub(super) own: bool,
}

impl Candidate {
    /// `cutover-<version>-<first 16 hex of blake3(file)>`.
    pub(super) fn name(&self) -> std::result::Result<String, String> {
        static NAMES: Mutex<Vec<(PathBuf, std::result::Result<String, String>)>> =
            Mutex::new(Vec::new());
        let mut names = NAMES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, name)) = names.iter().find(|(file, _)| *file == self.file) {
            return name.clone();
        }
        let name = hash_name(&self.file);
        names.push((self.file.clone(), name.clone()));
        name
    }
}

fn hash_name(file: &Path) -> std::result::Result<String, String> {
    let reader = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(reader).map_err(|e| e.to_string())?;
    let hex = hasher.finalize().to_hex();
    Ok(format!("cutover-{OUR_VERSION}-{}", &hex[..16]))
}

/// What may be uploaded to the target: `[ssh] agent_binaries`, or this executable for
/// hosts of this machine's platform. Nothing for an installed agent or a local process.
pub(super) fn candidates(target: &Target) -> Result<Vec<Candidate>> {
    match target.ssh().map(|ssh| &ssh.agent) {
        Some(AgentSource::Upload { binaries }) if binaries.is_empty() => Ok(vec![Candidate {
            platform: local_platform(),
            file: own_agent()?,
            own: true,
        }]),
        Some(AgentSource::Upload { binaries }) => Ok(binaries
            .iter()
            .map(|binary| Candidate {
                platform: binary.platform.clone(),
                file: binary.file.clone(),
                own: false,
            })
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// The remote command that starts the agent: the installed one, or the uploaded one for
/// The agent for hosts of this machine's platform (and for a host run as a local process):
/// `cutover-agent` beside this executable when it is of this very version and protocol
/// (asked once per process), else this executable, which serves `agent` too.
pub(super) fn own_agent() -> Result<PathBuf> {
    static OWN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    OWN.get_or_init(|| {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this cutover executable to run as the agent: {e}"))?;
        let sibling = exe.with_file_name(crate::agent::AGENT_EXE);
        if sibling == exe || is_our_agent(&sibling) {
            return Ok(sibling);
        }
        tracing::info!(
            agent = %sibling.display(),
            "no agent of this build beside cutover: uploading cutover itself"
        );
        Ok(exe)
    })
    .clone()
    .map_err(HostError::failed)
}

fn is_our_agent(file: &Path) -> bool {
    let Ok(output) = Command::new(file).arg("--version").output() else {
        return false;
    };
    output.status.success()
        && String::from_utf8_lossy(&output.stdout).trim_end() == crate::agent::version_line()
}

pub(super) fn agent_dir(deploy_path: &Path) -> PathBuf {
    deploy_path.join(cutover_core::layout::STATE).join("bin")
}

/// Sends the candidate's file, compressed, to the host under a temporary name then renamed,
/// so a concurrent connect never runs half a binary; `gzip -d` checks the stream's CRC, so
/// a cut connection leaves no agent.
pub(super) fn upload(
    target: &Target,
    candidate: &Candidate,
    control: Option<&Control>,
) -> Result<AgentUpload> {
    let Some(ssh) = target.ssh() else {
        return Err(HostError::internal(
            "only an ssh host gets the agent uploaded",
        ));
    };
    if !candidate.own {
        check_binary(&candidate.platform, &candidate.file)?;
    }
    let name = candidate.name().map_err(|e| {
        HostError::failed(format!(
            "cannot read {} to upload it: {e}",
            candidate.file.display()
        ))
    })?;
    let packed = compressed(&candidate.file)?;
    let dir = agent_dir(&target.path);
    let bin = dir.join(name);
    let temp = dir.join(format!(".upload-{}", std::process::id()));
    let script = format!(
        "[ \"$(uname -sm)\" = {platform} ] || {{ echo \"this host is $(uname -sm); the agent is built for \"{platform} >&2; exit {WRONG_PLATFORM}; }}; \
         umask 022 && mkdir -p {dir} && gzip -d > {temp} && chmod 755 {temp} && mv -f {temp} {bin} && \
         for old in {dir}/cutover-*; do [ \"$old\" = {bin} ] || rm -f \"$old\"; done",
        platform = quote(&candidate.platform),
        dir = quote(&dir.display().to_string()),
        temp = quote(&temp.display().to_string()),
        bin = quote(&bin.display().to_string()),
    );
    let mut command = ssh_command(ssh, control, &script);
    tracing::info!(
        host = %target.name,
        file = %candidate.file.display(),
        size = packed.size,
        compressed = packed.bytes.len(),
        command = ?command,
        "uploading the agent"
    );
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| host_error(&format!("could not start ssh: {e}"), Vec::new()))?;
    let writer = child.stdin.take().map(|mut stdin| {
        let bytes = Arc::clone(&packed.bytes);
        // A failed write shows as the remote command's failure (gzip: unexpected end).
        std::thread::spawn(move || stdin.write_all(&bytes).is_ok())
    });
    let output = child
        .wait_with_output()
        .map_err(|e| host_error(&format!("ssh failed: {e}"), Vec::new()))?;
    let written = writer.is_some_and(|w| w.join().unwrap_or(false));
    if output.status.success() && written {
        return Ok(AgentUpload {
            platform: candidate.platform.clone(),
            file: candidate.file.display().to_string(),
            size: packed.size,
            bytes_sent: packed.bytes.len() as u64,
        });
    }
    let causes = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    let mut error = host_error("could not upload the agent", causes);
    error.hints = vec![match output.status.code() {
        Some(WRONG_PLATFORM) => "set [ssh] agent_binaries to a cutover built for the host's platform".into(),
        Some(127) => "the host needs `gzip` (and a POSIX sh) to receive the agent; or install cutover there and set `agent = \"installed\"`".into(),
        _ => "check that ssh reaches the host (`ssh HOST true` with the same [ssh] options) and that the deploy user can write the deploy path".into(),
    }];
    Err(error)
}

/// An agent file of the config, checked before it is sent anywhere: a file, executable,
/// and (where the header says) for the platform's machine.
fn check_binary(platform: &str, file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let problem = |what: String, hint: &str| {
        Err(HostError::usage(
            format!("the agent for \"{platform}\" ({}) {what}", file.display()),
            hint,
        ))
    };
    let build_hint = "build cutover for that platform (README: \"Hosts of another platform\") or fix [ssh] agent_binaries";
    let meta = match std::fs::metadata(file) {
        Ok(meta) => meta,
        Err(e) => return problem(format!("cannot be read: {e}"), build_hint),
    };
    if !meta.is_file() {
        return problem("is not a file".into(), build_hint);
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return problem(
            "is not executable".into(),
            "make it executable (`chmod +x`)",
        );
    }
    let mut head = Vec::with_capacity(20);
    let read = std::fs::File::open(file).and_then(|f| f.take(20).read_to_end(&mut head));
    if let Err(e) = read {
        return problem(format!("cannot be read: {e}"), build_hint);
    }
    let (os, arch) = platform.split_once(' ').unwrap_or((platform, ""));
    if matches!(os, "Linux" | "FreeBSD" | "NetBSD" | "OpenBSD") {
        if head.len() < 20 || head[..4] != *b"\x7fELF" {
            return problem("is not an ELF executable".into(), build_hint);
        }
        let machine = if head[5] == 2 {
            u16::from_be_bytes([head[18], head[19]])
        } else {
            u16::from_le_bytes([head[18], head[19]])
        };
        if let Some(expected) = elf_machine(arch) {
            if machine != expected {
                return problem(
                    format!("is an ELF executable for machine {machine}, not {arch} ({expected})"),
                    build_hint,
                );
            }
        }
    }
    Ok(())
}

/// ELF `e_machine` of a `uname -m`; `None` where we do not know it (not checked then).
fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "x86_64" | "amd64" => 62,
        "aarch64" | "arm64" => 183,
        "i386" | "i486" | "i586" | "i686" => 3,
        "armv6l" | "armv7l" | "armv8l" => 40,
        "riscv64" => 243,
        "ppc64" | "ppc64le" => 21,
        "s390x" => 22,
        _ => return None,
    })
}

/// A file gzip-compressed once per process, whichever host asks first (the others wait).
#[derive(Clone)]
struct Packed {
    size: u64,
    bytes: Arc<Vec<u8>>,
}

fn compressed(file: &Path) -> Result<Packed> {
    static PACKED: Mutex<Vec<(PathBuf, Packed)>> = Mutex::new(Vec::new());
    let mut cache = PACKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, packed)) = cache.iter().find(|(path, _)| path == file) {
        return Ok(packed.clone());
    }
    let io = |e: std::io::Error| {
        HostError::failed(format!(
            "cannot compress {} to upload it: {e}",
            file.display()
        ))
    };
    let mut reader = std::fs::File::open(file).map_err(io)?;
    let size = reader.metadata().map_err(io)?.len();
    // A release build (~11 MB) gets the better ratio; a debug build (~125 MB, tests and
    // development) the faster compression: level 6 would take ~10 s of it on one core.
    let level = if size > 64 << 20 {
        flate2::Compression::fast()
    } else {
        flate2::Compression::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(size as usize / 3), level);
    std::io::copy(&mut reader, &mut encoder).map_err(io)?;
    let bytes = Arc::new(encoder.finish().map_err(io)?);
    let packed = Packed { size, bytes };
    cache.push((file.to_path_buf(), packed.clone()));
    Ok(packed)
}

/// What `uname -sm` prints on this machine (`Linux x86_64`, `Darwin arm64`).
pub(super) fn local_platform() -> String {
    let arch = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("macos", "aarch64") => "arm64",
        (_, "x86") => "i686",
        (_, arch) => arch,
    };
    format!("{} {arch}", uname_os())
}

fn uname_os() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_file_is_checked_against_the_platform_it_is_listed_for() {
        let exe = std::env::current_exe().unwrap();
        check_binary(&local_platform(), &exe).unwrap();
        if cfg!(target_os = "linux") {
            let other = if cfg!(target_arch = "aarch64") {
                "Linux x86_64"
            } else {
                "Linux aarch64"
            };
            let error = check_binary(other, &exe).unwrap_err();
            assert!(
                error.message.contains("ELF executable for machine"),
                "{error:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("cutover");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        let error = check_binary("Linux x86_64", &script).unwrap_err();
        assert!(error.message.contains("is not executable"), "{error:?}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = check_binary("Linux x86_64", &script).unwrap_err();
        assert!(error.message.contains("not an ELF"), "{error:?}");
        let error = check_binary("Linux x86_64", &dir.path().join("absent")).unwrap_err();
        assert!(error.message.contains("cannot be read"), "{error:?}");
        assert_eq!(error.kind, crate::HostErrorKind::Usage);
    }

    #[test]
    fn compression_round_trips() {
        let exe = std::env::current_exe().unwrap();
        let packed = compressed(&exe).unwrap();
        assert!(packed.bytes.len() < packed.size as usize);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&packed.bytes[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == std::fs::read(&exe).unwrap());
    }
}
