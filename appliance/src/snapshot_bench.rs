//! `edgeplane bench snapshot`: our save and restore timed beside `etcdctl
//! snapshot save` + `zstd -3` and `etcdctl snapshot restore`, on a
//! Kubernetes-shaped database in a throwaway etcd.
//!
//! Lab code: it starts its etcd through the simulator, so it lives apart from
//! `snapshot_cmd`, which the product uses.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgeplane_snapshot as snap;
use serde::Serialize;

use crate::snapshot_cmd::{connect, mib};

/// `edgeplane bench snapshot`: figures printed beside `etcdctl snapshot save`
/// + `zstd -3` and `etcdctl snapshot restore` of the uncompressed file.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub db_mib_requested: u64,
    pub keys: u64,
    pub value_bytes: u64,
    pub fill_s: f64,
    /// Size of the bbolt db etcd streamed.
    pub db_bytes: u64,
    pub snapshot_s: f64,
    pub baseline_snapshot_s: f64,
    /// snapshot_s / baseline_snapshot_s (≤ 1.0: we are at least as fast).
    pub snapshot_ratio: f64,
    pub compressed_bytes: u64,
    pub baseline_compressed_bytes: u64,
    /// compressed_bytes / baseline_compressed_bytes.
    pub size_ratio: f64,
    /// Verify (checksum, decode, etcd trailer, bbolt meta) of our file.
    pub verify_s: f64,
    pub restore_s: f64,
    pub baseline_restore_s: f64,
    /// restore_s / baseline_restore_s.
    pub restore_ratio: f64,
    /// The like-for-like baseline from the compressed file: `zstd -d` then
    /// `etcdctl snapshot restore`.
    pub baseline_restore_from_zst_s: f64,
    pub zstd_workers: u32,
    pub repetitions: u32,
}

impl BenchReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "etcd db {} ({} keys, {} of values), filled in {:.1}s; best of {}\n\n",
            mib(self.db_bytes),
            self.keys,
            mib(self.value_bytes),
            self.fill_s,
            self.repetitions
        );
        s += &format!(
            "{:<10} {:>14} {:>16} {:>16} {:>8}\n",
            "", "edgeplane", "etcdctl+zstd -3", "", "ratio"
        );
        s += &format!(
            "{:<10} {:>13.2}s {:>15.2}s {:>16} {:>8.2}\n",
            "snapshot", self.snapshot_s, self.baseline_snapshot_s, "", self.snapshot_ratio
        );
        s += &format!(
            "{:<10} {:>14} {:>16} {:>16} {:>8.2}\n",
            "on disk",
            mib(self.compressed_bytes),
            mib(self.baseline_compressed_bytes),
            "",
            self.size_ratio
        );
        s += &format!(
            "{:<10} {:>13.2}s {:>15.2}s {:>16} {:>8.2}\n",
            "restore",
            self.restore_s,
            self.baseline_restore_s,
            "(uncompressed)",
            self.restore_ratio
        );
        s += &format!(
            "{:<10} {:>14} {:>15.2}s {:>16} {:>8.2}\n",
            "",
            "",
            self.baseline_restore_from_zst_s,
            "(zstd -d first)",
            self.restore_s / self.baseline_restore_from_zst_s
        );
        s += &format!(
            "\nedgeplane snapshot = stream + zstd -3 ({} workers) + sha256 + etcd trailer check + fsync;\n\
             edgeplane restore = full verify + decompress + etcdctl snapshot restore; verify alone {:.2}s\n",
            self.zstd_workers, self.verify_s
        );
        s
    }
}

pub fn bench(db_mib: u64, json: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init_cli();
    let rt = crate::runtime()?;
    let run = crate::bench::Run::start("snapshot");
    let report = rt.block_on(bench_run(db_mib, 2, !json))?;
    let record = crate::bench::Record {
        run: run.finish(),
        figures: report,
    };
    record.print(json, &record.figures.render())?;
    Ok(ExitCode::SUCCESS)
}

/// A small deterministic PRNG (xorshift64*) so every run fills the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s += &format!("{:016x}", self.next());
        }
        s.truncate(len);
        s
    }
}

const IMAGES: &[&str] = &[
    "registry.k8s.io/pause:3.9",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "docker.io/library/nginx:1.25.3",
    "ghcr.io/edge/sensor-gateway:2.14.1",
    "registry.k8s.io/kube-proxy:v1.29.2",
    "docker.io/grafana/promtail:2.9.4",
];
const KINDS: &[&str] = &[
    "pods",
    "configmaps",
    "secrets",
    "services",
    "leases",
    "events",
];

/// One Kubernetes-object-like JSON value of 1–4 KiB: repetitive structure
/// (keys, images, label names) with unique ids, hashes and payloads, so it
/// compresses like real etcd content, neither trivially nor not at all.
fn k8s_value(rng: &mut Rng, i: u64, kind: &str, ns: &str) -> String {
    let target = 1024 + rng.below(3 * 1024) as usize;
    let name = format!("{}-{}-{}", kind.trim_end_matches('s'), rng.hex(5), i);
    let mut v = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"{kind}\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\",\
\"uid\":\"{}-{}-{}-{}-{}\",\"resourceVersion\":\"{}\",\"creationTimestamp\":\"2024-{:02}-{:02}T{:02}:{:02}:{:02}Z\",\
\"labels\":{{\"app.kubernetes.io/name\":\"{}\",\"app.kubernetes.io/instance\":\"{}\",\"pod-template-hash\":\"{}\"}},\
\"annotations\":{{\"kubectl.kubernetes.io/last-applied-configuration\":\"{}\"}}}},\
\"spec\":{{\"nodeName\":\"edge-host-{}\",\"containers\":[",
        rng.hex(8),
        rng.hex(4),
        rng.hex(4),
        rng.hex(4),
        rng.hex(12),
        1_000_000 + i,
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        kind,
        name,
        rng.hex(10),
        rng.hex(48),
        1 + rng.below(5),
    );
    let mut c = 0;
    while v.len() < target - 200 {
        if c > 0 {
            v.push(',');
        }
        let image = IMAGES[rng.below(IMAGES.len() as u64) as usize];
        v += &format!(
            "{{\"name\":\"c{c}\",\"image\":\"{image}\",\"imagePullPolicy\":\"IfNotPresent\",\
\"env\":[{{\"name\":\"CONFIG_HASH\",\"value\":\"{}\"}},{{\"name\":\"SITE_TOKEN\",\"value\":\"{}\"}},\
{{\"name\":\"REPLICA\",\"value\":\"{}\"}}],\"resources\":{{\"requests\":{{\"cpu\":\"{}m\",\"memory\":\"{}Mi\"}}}},\
\"ports\":[{{\"containerPort\":{},\"protocol\":\"TCP\"}}]}}",
            rng.hex(40),
            rng.hex(32),
            rng.below(10),
            50 * (1 + rng.below(8)),
            64 * (1 + rng.below(16)),
            8000 + rng.below(1000),
        );
        c += 1;
    }
    v += &format!(
        "]}},\"status\":{{\"phase\":\"Running\",\"podIP\":\"10.42.{}.{}\",\"hostIP\":\"192.168.1.{}\",\
\"conditions\":[{{\"type\":\"Ready\",\"status\":\"True\"}}]}}}}",
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    v
}

async fn wait_ready(url: &str) -> anyhow::Result<etcd_client::Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = connect(None, url).await
            && let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await
            && s.leader() != 0
        {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("the bench etcd at {url} did not become ready in 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts values until their total reaches `bytes`, 4 writers in parallel,
/// 64 puts per transaction. Returns (keys, value bytes).
async fn fill(client: &etcd_client::Client, bytes: u64, show: bool) -> anyhow::Result<(u64, u64)> {
    let writers = 4u64;
    let per_writer = bytes / writers;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let (mut keys, mut written) = (0u64, 0u64);
            let mut i = w;
            while written < per_writer {
                let mut ops = Vec::with_capacity(64);
                for _ in 0..64 {
                    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
                    let ns = format!("site-ns-{}", rng.below(40));
                    let v = k8s_value(&mut rng, i, kind, &ns);
                    let k = format!("/registry/{kind}/{ns}/obj-{i:08}");
                    written += v.len() as u64;
                    keys += 1;
                    i += writers;
                    ops.push(etcd_client::TxnOp::put(k, v, None));
                }
                c.txn(etcd_client::Txn::new().and_then(ops))
                    .await
                    .context("bench fill: put failed")?;
                if show && w == 0 {
                    eprint!(
                        "\rfilling etcd: {} of {}\x1b[K",
                        mib(written * writers),
                        mib(bytes)
                    );
                }
            }
            anyhow::Ok((keys, written))
        }));
    }
    let (mut keys, mut written) = (0, 0);
    for t in tasks {
        let (k, b) = t.await.context("bench fill task")??;
        keys += k;
        written += b;
    }
    if show {
        eprintln!();
    }
    Ok((keys, written))
}

/// The baseline restore: `etcdctl snapshot restore DB` into `dir` as a
/// one-member cluster.
fn etcdctl_restore(etcdctl: &Path, db: &Path, dir: &Path) -> Command {
    let mut c = Command::new(etcdctl);
    c.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(db)
        .arg(format!("--data-dir={}", dir.display()))
        .arg("--name=r1")
        .arg("--initial-cluster=r1=http://127.0.0.1:2380")
        .arg("--initial-cluster-token=bench")
        .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380");
    c
}

fn run_timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The benchmark itself: `reps` alternating runs of each side, best kept.
pub async fn bench_run(db_mib: u64, reps: u32, show: bool) -> anyhow::Result<BenchReport> {
    let etcdctl = snap::etcdctl_bin();
    let show = show && std::io::stderr().is_terminal();
    let cluster = tokio::task::spawn_blocking(|| crate::sim::bare::Cluster::start(1))
        .await?
        .context("could not start the bench etcd")?;
    let url = cluster.members[0].client_url.clone();
    let work: PathBuf = cluster.dir.path().join("bench");
    std::fs::create_dir_all(&work)?;
    let mut client = wait_ready(&url).await?;

    let t = Instant::now();
    let (keys, value_bytes) = fill(&client, db_mib << 20, show).await?;
    let fill_s = t.elapsed().as_secs_f64();

    let opts = snap::SaveOptions::new("bench", url.clone());
    let reps = reps.max(1);
    let (mut best, mut best_base) = (f64::MAX, f64::MAX);
    let mut ours: Option<snap::SnapshotMeta> = None;
    let mut base_bytes = 0;
    let base_db = work.join("baseline.db");
    let base_zst = work.join("baseline.db.zst");
    for rep in 0..reps {
        // Baseline: etcdctl snapshot save, then zstd -3 (what an operator scripts).
        let _ = std::fs::remove_file(&base_db);
        let _ = std::fs::remove_file(&base_zst);
        let a = run_timed(
            Command::new(&etcdctl)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={url}"))
                .arg("snapshot")
                .arg("save")
                .arg(&base_db),
        )?;
        let b = run_timed(
            Command::new("zstd")
                .arg("-3")
                .arg("-q")
                .arg(&base_db)
                .arg("-o")
                .arg(&base_zst),
        )?;
        best_base = best_base.min(a + b);
        base_bytes = std::fs::metadata(&base_zst)?.len();

        let out = work.join(format!("ours-{rep}.etcd.zst"));
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        let mut progress = |_: &snap::Progress| {};
        let meta = snap::save(&mut client, &out, &opts, &mut progress)
            .await
            .context("bench: edgeplane snapshot failed")?;
        best = best.min(t.elapsed().as_secs_f64());
        if let Some(prev) = ours.replace(meta) {
            let _ = std::fs::remove_file(prev.path);
        }
    }
    let ours = ours.context("no snapshot taken")?;
    drop(client);
    // Restores need no etcd; the cluster's temp dir (holding the files) stays until the end.
    let mut cluster = cluster;
    cluster.kill_all();

    let path = ours.path.clone();
    let verify_s = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        snap::verify(&path, &mut |_| {}).map(|_| t.elapsed().as_secs_f64())
    })
    .await??;

    let (mut restore_s, mut base_restore_s, mut base_zst_restore_s) =
        (f64::MAX, f64::MAX, f64::MAX);
    for rep in 0..reps {
        let dir = work.join(format!("restore-ours-{rep}"));
        let target = snap::RestoreTarget::new(
            &dir,
            "r1",
            "r1=http://127.0.0.1:2380",
            "bench",
            "http://127.0.0.1:2380",
        );
        let path = ours.path.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || snap::restore(&path, &target, &mut |_| {}))
            .await?
            .context("bench: edgeplane restore failed")?;
        restore_s = restore_s.min(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&dir);

        let dir = work.join(format!("restore-base-{rep}"));
        let s = run_timed(&mut etcdctl_restore(&etcdctl, &base_db, &dir))?;
        base_restore_s = base_restore_s.min(s);
        let _ = std::fs::remove_dir_all(&dir);

        let unpacked = work.join("baseline-unpacked.db");
        let _ = std::fs::remove_file(&unpacked);
        let a = run_timed(
            Command::new("zstd")
                .arg("-d")
                .arg("-q")
                .arg(&base_zst)
                .arg("-o")
                .arg(&unpacked),
        )?;
        let b = run_timed(&mut etcdctl_restore(&etcdctl, &unpacked, &dir))?;
        base_zst_restore_s = base_zst_restore_s.min(a + b);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&unpacked);
    }

    Ok(BenchReport {
        db_mib_requested: db_mib,
        keys,
        value_bytes,
        fill_s,
        db_bytes: ours.info.db_bytes,
        snapshot_s: best,
        baseline_snapshot_s: best_base,
        snapshot_ratio: best / best_base,
        compressed_bytes: ours.file_bytes,
        baseline_compressed_bytes: base_bytes,
        size_ratio: ours.file_bytes as f64 / base_bytes.max(1) as f64,
        verify_s,
        restore_s,
        baseline_restore_s: base_restore_s,
        restore_ratio: restore_s / base_restore_s,
        baseline_restore_from_zst_s: base_zst_restore_s,
        zstd_workers: opts.workers,
        repetitions: reps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench on a tiny db, so it never rots. Needs etcd and etcdctl
    /// (`scripts/setup` installs them), as the snapshot crate's tests do: a
    /// missing binary fails it rather than skipping it.
    #[test]
    fn bench_smoke() {
        for bin in [crate::sim::bare::etcd_bin(), snap::etcdctl_bin()] {
            assert!(
                bin.exists(),
                "{} is missing: run scripts/setup (it installs etcd-server and etcd-client)",
                bin.display()
            );
        }
        let rt = crate::runtime().expect("runtime");
        let r = rt.block_on(bench_run(3, 1, false)).expect("bench runs");
        assert!(r.db_bytes >= 3 << 20, "{r:?}");
        assert!(r.keys > 500, "{r:?}");
        assert!(r.compressed_bytes > 0 && r.baseline_compressed_bytes > 0);
        // Realistic values: compressible, but not trivially.
        let ratio = r.db_bytes as f64 / r.compressed_bytes as f64;
        assert!((1.5..20.0).contains(&ratio), "compression ratio {ratio}");
        assert!(r.snapshot_s > 0.0 && r.restore_s > 0.0 && r.baseline_restore_s > 0.0);
        let v = serde_json::to_value(&r).expect("json");
        for k in [
            "db_bytes",
            "snapshot_s",
            "baseline_snapshot_s",
            "snapshot_ratio",
            "compressed_bytes",
            "baseline_compressed_bytes",
            "restore_s",
            "baseline_restore_s",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(r.render().contains("snapshot"));
    }

    #[test]
    fn values_are_k8s_sized() {
        let mut rng = Rng(42);
        for i in 0..200 {
            let v = k8s_value(&mut rng, i, "pods", "ns");
            assert!((900..=4400).contains(&v.len()), "{}", v.len());
            assert!(serde_json::from_str::<serde_json::Value>(&v).is_ok(), "{v}");
        }
    }
}
