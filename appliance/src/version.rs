//! Version string: crate version, git commit (from the build), and the etcd found on this host.

/// `edgeplane --version`: crate version and the git commit it was built from.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EDGEPLANE_GIT_COMMIT"),
    ")"
);

/// The version line of the etcd binary at `path`, if it runs.
pub fn etcd_version(path: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
}
