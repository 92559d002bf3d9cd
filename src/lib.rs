//! lesiond: a dermatoscope station daemon. Camera frames in, skin-lesion classifications out
//! over MQTT — decision support for clinicians, never a diagnosis.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//!
//! ```text
//! source -> checks -> preprocess -> [queue] -> engine -> postprocess -> examination -> publish
//! ```
//!
//! [`daemon`] wires the stages together and owns the process lifecycle; [`cli`] holds the other
//! subcommands.

pub mod abstain;
pub mod archive;
pub mod bench;
pub mod checks;
pub mod classifier;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod cputime;
pub mod daemon;
pub mod engine;
pub mod examination;
pub mod fault;
pub mod frame;
pub mod fsperm;
pub mod fsread;
pub mod labels;
pub mod logging;
pub mod ood;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod publish;
pub mod queue;
pub mod recorder;
pub mod referral;
pub mod report;
pub mod source;
pub mod spool;
pub mod stats;
pub mod supervision;
pub mod viewer;
