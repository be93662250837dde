//! The commands on the fleet store (`--store`): every command but
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
    /// `--lease-ttl` / `--store-timeout` were given (not defaults): a
    /// running keeper that keeps other settings is worth a warning.
    given: bool,
}

/// The store of the command line, if one was given. The lease TTL is whole
/// seconds from 2 (etcd's least with its default election timeout) to a
/// day; the store time limit is at most the TTL: a renewal is given a third
/// of the TTL whatever the limit, and an answer later than the lease lives
/// could only be about a lease that is gone.
pub(super) fn store_of(a: &StoreArgs) -> Result<Option<Store>, Failure> {
    let Some(raw) = a.store.clone().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let spec = StoreSpec::parse(&raw)?;
    let ttl = a.lease_ttl.map_or(agentlock::fleet::DEFAULT_TTL, |d| {
        d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
    });
    if !(agentlock::fleet::MIN_TTL..=86_400).contains(&ttl) {
        return Err(Failure::usage(format!(
            "--lease-ttl {ttl}s: must be 2s to 1d (etcd raises a shorter lease to its minimum)"
        )));
    }
    let ttl_d = Duration::from_secs(ttl as u64);
    let timeout = match a.store_timeout {
        Some(t) if t.is_zero() => {
            return Err(Failure::usage("--store-timeout 0: must be more than 0"));
        }
        Some(t) if t > ttl_d => {
            return Err(Failure::usage(format!(
                "--store-timeout {:.1}s is longer than the lease TTL ({ttl}s): an answer later than the lease lives could only be about a lease that is gone; lower it or raise --lease-ttl",
                t.as_secs_f64()
            )));
        }
        Some(t) => t,
        None => agentlock::fleet::DEFAULT_TIMEOUT.min(ttl_d),
    };
    Ok(Some(Store {
        spec,
        raw,
        root: a.fleet_root.clone(),
        timeout,
        ttl,
        given: a.lease_ttl.is_some() || a.store_timeout.is_some(),
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

/// This host's keeper's lease for the store (started when none runs), with
/// a warning when `--lease-ttl` or `--store-timeout` was asked for and the
/// running keeper keeps other settings (they apply once it restarts).
#[cfg(feature = "etcd")]
fn keeper_lease(
    store: &Store,
    fleet: &agentlock::fleet::etcd::Fleet,
    out: &mut Out,
) -> Result<agentlock::fleet::keeper::KeeperLease, Failure> {
    let lease = agentlock::fleet::keeper::ensure(&store.spec, &store.raw, store.ttl, fleet)?;
    let differs = lease.ttl != store.ttl || lease.timeout != store.timeout;
    if store.given && differs {
        out.error_line(format_args!(
            "warning: this host's keeper (pid {}) keeps a {} s lease with a {:.1} s store time limit; --lease-ttl {} s / --store-timeout {:.1} s apply once it restarts",
            lease.pid,
            lease.ttl,
            lease.timeout.as_secs_f64(),
            store.ttl,
            store.timeout.as_secs_f64()
        ));
    }
    Ok(lease)
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
        // The keeper in the foreground waits for a store that does not
        // answer yet (at boot) rather than exit.
        let command = match command {
            Command::Keeper(a) if a.foreground => return running::foreground(store, a),
            command => command,
        };
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
            Command::Completions(_) | Command::Man(_) => Err(Failure::usage(
                "completions and man do not use the fleet store",
            )),
        }
    }
}
