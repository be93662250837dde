//! The commands on the fleet store (`--store`, SPEC §8): every command but
//! `completions` and `man`, plus `keeper`. The same states, exit codes and
//! JSON as on lock files, plus `fence` and `store` in each entry. This file
//! resolves the store's settings and dispatches.

#[cfg(feature = "etcd")]
mod running;
#[cfg(feature = "etcd")]
mod tree;
#[cfg(feature = "etcd")]
mod workers;

use super::{Ctx, Failure};
use crate::cli::{Command, StoreArgs};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use agentlock::fleet::StoreSpec;
use std::path::PathBuf;
use std::time::Duration;

/// `--store` and its settings, resolved.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(super) struct Store {
    spec: StoreSpec,
    raw: String,
    root: Option<PathBuf>,
    timeout: Duration,
    ttl: i64,
}

/// The store of the command line, if one was given.
pub(super) fn store_of(a: &StoreArgs) -> Result<Option<Store>, Failure> {
    let Some(raw) = a.store.clone().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let spec = StoreSpec::parse(&raw)?;
    let timeout = seconds(a.store_timeout, "--store-timeout")?;
    // etcd takes TTLs up to 9e9 s; a day is far past any useful one, and
    // keeps every computation with it in range.
    if !(2..=86_400).contains(&a.lease_ttl) {
        return Err(Failure::usage(format!(
            "--lease-ttl {}: must be 2 to 86400 seconds",
            a.lease_ttl
        )));
    }
    Ok(Some(Store {
        spec,
        raw,
        root: a.fleet_root.clone(),
        timeout,
        ttl: a.lease_ttl,
    }))
}

impl Store {
    /// The fleet root. Never the current directory by default: two hosts run
    /// from different directories would name one worker two ways.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn root(&self) -> Result<&std::path::Path, Failure> {
        self.root.as_deref().ok_or_else(|| {
            Failure::usage("--store needs the fleet root: --fleet-root DIR or AGENTLOCK_FLEET_ROOT")
        })
    }

    /// The fleet root, resolved: it must exist (every worker is named
    /// relative to it).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn canonical_root(&self) -> Result<PathBuf, Failure> {
        let root = self.root()?;
        std::fs::canonicalize(root).map_err(|source| {
            Failure::from(agentlock::Error::Io {
                path: root.to_path_buf(),
                source,
            })
        })
    }
}

/// A positive, finite number of seconds that fits a `Duration`.
pub(super) fn seconds(v: f64, flag: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero() && v <= 86_400.0 * 365.0)
        .ok_or_else(|| Failure::usage(format!("{flag} {v}: not a positive number of seconds")))
}

/// Runs `command` on the store.
pub(super) fn execute(
    ctx: &Ctx,
    store: &Store,
    command: Command,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    imp::execute(ctx, store, command, out)
}

#[cfg(not(feature = "etcd"))]
mod imp {
    use super::*;

    pub(super) fn execute(
        _: &Ctx,
        _: &Store,
        _: Command,
        _: &mut Out,
    ) -> Result<ExitCode, Failure> {
        Err(Failure::usage(
            "--store needs agentlock built with the etcd feature (cargo install --features etcd)",
        ))
    }
}

#[cfg(feature = "etcd")]
mod imp {
    use super::*;
    use agentlock::fleet::etcd::Fleet;

    pub(super) fn execute(
        ctx: &Ctx,
        store: &Store,
        command: Command,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let fleet = Fleet::connect(&store.spec, store.timeout)?;
        match command {
            Command::Claim(a) if a.first_free => workers::first_free(ctx, store, &fleet, a, out),
            Command::Claim(a) => workers::claim(ctx, store, &fleet, a, out),
            Command::Release(a) => workers::release(ctx, store, &fleet, a, out),
            Command::Status(a) => {
                workers::status(ctx, store, &fleet, &a.workers, a.json, None, out)
            }
            Command::Check(a) => {
                let mut warnings = Vec::new();
                let asker = super::super::asker_of(ctx, a.asker, &mut warnings)?;
                super::super::warn_all(out, &warnings);
                workers::status(ctx, store, &fleet, &a.workers, a.json, Some(&asker), out)
            }
            Command::Run(a) => running::run(ctx, store, &fleet, a, out),
            Command::Keeper(a) => running::keep(store, &fleet, a, out),
            Command::List(a) => tree::list(ctx, store, &fleet, &a, out),
            Command::Doctor(a) => tree::doctor(ctx, store, &fleet, a, out),
            Command::Completions(_) | Command::Man => Err(Failure::usage(
                "completions and man do not use the fleet store",
            )),
        }
    }
}
