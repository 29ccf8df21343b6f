//! The file as written: every key optional, nothing defaulted yet.
//!
//! Each struct mirrors one table of the file and one struct of
//! [`crate::model`]. Every level denies unknown fields, so serde itself
//! refuses a misspelt key; [`crate::document`] finds all of them first (serde
//! stops at the first) using [`schema`], which reads the field lists from
//! these derives, so the key list can never drift from the structs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{FsyncPolicy, NodeRole, OutOfOrder, Profile, QuorumLossPolicy};
use crate::units::{opt_bytes, opt_duration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub profile: Option<Profile>,
    pub host: Option<String>,
    pub site: Option<String>,
    pub nodes: Option<Vec<RawNode>>,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub etcd: RawEtcd,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub snapshots: RawSnapshots,
    #[serde(default)]
    pub recovery: RawRecovery,
    #[serde(default)]
    pub defrag: RawDefrag,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub buffer: RawBuffer,
    #[serde(default)]
    pub uplink: RawUplink,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Option<String>,
    pub role: Option<NodeRole>,
    pub peer_url: Option<String>,
    pub client_url: Option<String>,
    pub agent_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub voters: Option<usize>,
    pub manage_membership: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub failure_detection: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub etcd_restart_grace: Option<Duration>,
    pub promotion_max_lag: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub promotion_stable_for: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub learner_stuck_after: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub standby_behind_limit: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub reconcile_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub flap_window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub binary: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub heartbeat: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub election_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub quota_backend_bytes: Option<u64>,
    pub pre_vote: Option<bool>,
    pub extra_args: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub root: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub snapshot_dir: Option<PathBuf>,
    pub buffer_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshots {
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    pub retain_count: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub retain_age: Option<Duration>,
    pub copy_to_peers: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub scrub_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub min_free_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecovery {
    pub quorum_loss_policy: Option<QuorumLossPolicy>,
    pub fence_command: Option<Vec<String>>,
    pub fence_environment_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub quorum_loss_window: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub self_fence_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefrag {
    pub enabled: Option<bool>,
    pub free_ratio: Option<f64>,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub min_db_bytes: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub check_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub scrape_timeout: Option<Duration>,
    pub scrape_etcd: Option<bool>,
    pub scrape_self: Option<bool>,
    pub targets: Option<Vec<RawTarget>>,
    pub classes: Option<Vec<String>>,
    pub default_class: Option<String>,
    pub rules: Option<Vec<RawRule>>,
    pub external_labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub job: Option<String>,
    pub url: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub metric: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub class: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    #[serde(default, deserialize_with = "opt_bytes")]
    pub budget_bytes: Option<u64>,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub segment_bytes: Option<u64>,
    pub fsync: Option<FsyncPolicy>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub fsync_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    pub enabled: Option<bool>,
    pub url: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub backfill_rate: Option<u64>,
    pub batch_samples: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_sample_age: Option<Duration>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    pub headers: Option<BTreeMap<String, String>>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub dead_letter_bytes: Option<u64>,
    pub out_of_order: Option<OutOfOrder>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub allow_plaintext: Option<bool>,
    pub health_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub dir: Option<PathBuf>,
    pub level: Option<String>,
    pub to_files: Option<bool>,
    pub retention_files: Option<usize>,
}

// ---------------------------------------------------------------------------
// Schema: which keys each table accepts, read from the serde derives above.

/// What a key holds, as far as key checking is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A value (string, number, bool, array of values): not descended into.
    Leaf,
    /// A sub-table with a fixed set of keys.
    Table(fn() -> Table),
    /// An array of tables, each with a fixed set of keys.
    Array(fn() -> Table),
    /// A table whose keys are free (label maps).
    Map,
}

/// The keys one table accepts.
#[derive(Debug, Clone)]
pub struct Table {
    pub fields: Vec<(&'static str, Kind)>,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<Kind> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, kind)| *kind)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.iter().map(|(k, _)| *k)
    }
}

/// The field names serde's derive declared for `T`.
///
/// Works by handing `T::deserialize` a deserializer whose only job is to
/// record the `fields` argument of `deserialize_struct` and then fail.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};

    #[derive(Debug)]
    struct Grabbed(&'static [&'static str]);
    impl std::fmt::Display for Grabbed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field list grabbed")
        }
    }
    impl std::error::Error for Grabbed {}
    impl serde::de::Error for Grabbed {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Grabbed(&[])
        }
    }
    struct Grabber;
    impl<'de> serde::Deserializer<'de> for Grabber {
        type Error = Grabbed;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Grabbed> {
            Err(Grabbed::custom(""))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Grabbed> {
            Err(Grabbed(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Grabber) {
        Err(Grabbed(fields)) => fields,
        Ok(_) => &[],
    }
}

/// Build a table schema from `T`'s fields; `special` names the keys that are
/// not plain values.
fn table_of<'de, T: Deserialize<'de>>(special: &[(&str, Kind)]) -> Table {
    let fields = fields_of::<T>()
        .iter()
        .map(|name| {
            let kind = special
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, kind)| *kind)
                .unwrap_or(Kind::Leaf);
            (*name, kind)
        })
        .collect();
    Table { fields }
}

/// The schema of the whole file.
pub fn schema() -> Table {
    table_of::<RawConfig>(&[
        ("nodes", Kind::Array(|| table_of::<RawNode>(&[]))),
        ("cluster", Kind::Table(|| table_of::<RawCluster>(&[]))),
        ("etcd", Kind::Table(|| table_of::<RawEtcd>(&[]))),
        ("paths", Kind::Table(|| table_of::<RawPaths>(&[]))),
        ("snapshots", Kind::Table(|| table_of::<RawSnapshots>(&[]))),
        ("recovery", Kind::Table(|| table_of::<RawRecovery>(&[]))),
        ("defrag", Kind::Table(|| table_of::<RawDefrag>(&[]))),
        (
            "metrics",
            Kind::Table(|| {
                table_of::<RawMetrics>(&[
                    ("targets", Kind::Array(|| table_of::<RawTarget>(&[]))),
                    (
                        "rules",
                        Kind::Array(|| table_of::<RawRule>(&[("labels", Kind::Map)])),
                    ),
                    ("external_labels", Kind::Map),
                ])
            }),
        ),
        ("buffer", Kind::Table(|| table_of::<RawBuffer>(&[]))),
        (
            "uplink",
            Kind::Table(|| table_of::<RawUplink>(&[("headers", Kind::Map)])),
        ),
        ("tls", Kind::Table(|| table_of::<RawTls>(&[]))),
        ("log", Kind::Table(|| table_of::<RawLog>(&[]))),
    ])
}

/// Every key path of the schema, e.g. `cluster.voters`, `nodes[].name`,
/// `metrics.rules[].labels`. Used by the README test and key suggestions.
pub fn all_key_paths() -> Vec<String> {
    fn walk(prefix: &str, table: &Table, out: &mut Vec<String>) {
        for (name, kind) in &table.fields {
            let path = if prefix.is_empty() {
                (*name).to_string()
            } else {
                format!("{prefix}.{name}")
            };
            match kind {
                Kind::Leaf | Kind::Map => out.push(path),
                Kind::Table(sub) => {
                    out.push(path.clone());
                    walk(&path, &sub(), out);
                }
                Kind::Array(sub) => {
                    out.push(path.clone());
                    walk(&format!("{path}[]"), &sub(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", &schema(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_reads_fields_from_serde() {
        let paths = all_key_paths();
        for p in [
            "profile",
            "nodes[].agent_url",
            "cluster.voters",
            "metrics.rules[].labels",
            "metrics.targets[].interval",
            "uplink.dead_letter_bytes",
        ] {
            assert!(paths.iter().any(|k| k == p), "{p} missing from {paths:?}");
        }
    }
}
