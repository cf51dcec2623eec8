//! zone-agent: policy → XDP enforcement between the segments of 三層の対策.
//!
//! Layers, each using only those below it (SPEC §10; `tests/layers.rs` checks it): `cli`
//! (arguments) → `service` (the control task and published snapshots, the `agent`, the
//! `admin` socket, `http` for `/metrics`) → `config` (settings, defaults, failsafe host
//! binding) and `telemetry` (counters → Prometheus) → the reference `policy::model` (with
//! `frame`, `explain`, failsafe matching), authoring (`policy::{template, diff, nft}`) and
//! `datapath` (load, attach, atomic swap; the only aya user) → `policy` (read → parse →
//! validate → compile) → `zone_agent_common`. `fuzzing` (cargo feature `fuzzing`) holds the
//! checks the fuzz targets and their regression replay run.

pub mod alert;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod detect;
pub mod events;
/// The failsafe host binding lives in config; the old path stays.
pub use config::failsafe;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod policy;
pub mod service;
/// The agent and its admin socket live in `service`; the old paths stay.
pub use service::{admin, agent};
pub mod telemetry;
