//! The behaviour tests, in one binary (each test binary links the whole
//! crate; one builds faster than a dozen). Every test works in its own
//! [`common::Sandbox`]: a temp dir, a private `TMUX_TMPDIR`, its own tmux
//! servers and processes, ended by their own socket or PID.

mod common;

mod bad_corpus;
mod bad_input;
mod claim;
mod conventions;
mod doctor;
mod doctor_race;
#[cfg(feature = "etcd")]
mod fleet;
#[cfg(feature = "etcd")]
mod fleet_doctor;
#[cfg(feature = "etcd")]
mod fleet_failures;
#[cfg(feature = "etcd")]
mod fleet_hostile;
#[cfg(feature = "etcd")]
mod fleet_run;
#[cfg(feature = "etcd")]
mod fleet_scale;
#[cfg(feature = "etcd")]
mod fleet_wait;
mod go_interop;
mod hostile;
mod identity;
mod interop;
mod json_contract;
mod logging;
mod man;
mod properties;
mod race;
mod readme;
mod run;
mod snapshots;
mod spawners;
mod systemd;
mod tmux;
mod usage;
mod visibility;
mod wait;
