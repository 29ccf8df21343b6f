//! Records the git commit the binary was built from (`unknown` outside a
//! checkout; `-dirty` appended when tracked files differ from it) and the
//! cargo profile it was built with.
/// What the binary is built from (relative to this crate's directory): the
/// crates' sources and manifests, not their READMEs.
const SOURCES: [&str; 13] = [
    "../Cargo.toml",
    "../Cargo.lock",
    "../appliance/Cargo.toml",
    "../appliance/build.rs",
    "../appliance/src",
    "../buffer/Cargo.toml",
    "../buffer/src",
    "../config/Cargo.toml",
    "../config/src",
    "../metrics/Cargo.toml",
    "../metrics/src",
    "../snapshot/Cargo.toml",
    "../snapshot/src",
];

fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(sha) => {
            let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            args.extend(SOURCES);
            let dirty = git(&args).is_some_and(|s| !s.is_empty());
            if dirty { format!("{sha}-dirty") } else { sha }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=EDGEPLANE_GIT_COMMIT={commit}");
    // "debug" or "release": a figure from a debug build is not a release's.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=EDGEPLANE_BUILD_PROFILE={profile}");
    // A new commit, or an edit of any crate's sources (for `-dirty`). In a
    // worktree `.git` is a file: ask git where HEAD and the index are.
    // (A path that does not exist would rerun this script on every build.)
    let mut watch: Vec<String> = Vec::new();
    if let (Some(dir), Some(common)) = (
        git(&["rev-parse", "--absolute-git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        watch.push(format!("{dir}/HEAD"));
        watch.push(format!("{dir}/index"));
        watch.push(format!("{common}/refs/heads"));
        watch.push(format!("{common}/packed-refs"));
    }
    watch.extend(SOURCES.map(String::from));
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
