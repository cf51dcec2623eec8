//! zone-agent: policy → XDP enforcement between the segments of 三層の対策.
//!
//! The modules mirror the data path: `policy` (parse → validate → compile, plus the
//! reference `model`), `datapath` (load, attach, atomic swap; the only aya user), and
//! `telemetry` (counters → Prometheus); `config` and `failsafe` (agent settings,
//! management flows), `admin` (the local admin socket), `service` (how the running agent's
//! parts talk: one control task, published snapshots, bounded listeners); `fuzzing` (cargo feature
//! `fuzzing`) holds the checks the fuzz targets and their regression replay run.

pub mod admin;
pub mod agent;
pub mod cli;
pub mod config;
pub mod datapath;
/// The failsafe host binding lives in config; the old path stays.
pub use config::failsafe;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod policy;
pub mod service;
pub mod telemetry;
