//! Version string: crate version, git commit (from the build), and the etcd found on this host.

/// `edgeplane --version`: crate version and the git commit it was built from.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EDGEPLANE_GIT_COMMIT"),
    ")"
);

/// The git commit the binary was built from (`git rev-parse --short=12 HEAD`
/// at build time; `unknown` outside a checkout).
pub const COMMIT: &str = env!("EDGEPLANE_GIT_COMMIT");

/// The cargo profile of the build: `debug` or `release`.
pub const BUILD_PROFILE: &str = env!("EDGEPLANE_BUILD_PROFILE");

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
