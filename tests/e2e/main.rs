//! End-to-end tests: real etcd and edgeplane processes on loopback.
//! One binary, modules per area (as ripgrep does).

// The campaign report is one large `serde_json::json!`.
#![recursion_limit = "256"]

mod agent;
mod chaos;
mod chaos_clock;
mod chaos_metrics;
mod cli;
mod clock;
mod defrag;
mod demo;
mod diag;
mod disk;
mod flap;
mod harness;
mod partition;
mod power_cut;
mod recovery;
mod security;
mod self_metrics;
mod snapshots;
mod split_brain;
mod standby;
mod uplink;
