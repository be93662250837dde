//! The commands that keep running on the fleet store: `run` (the worker
//! held, and checked, while its command runs) and `keeper`.

use super::Store;
use crate::cli::{KeeperArgs, RunArgs};
use crate::commands::{Ctx, Failure};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use agentlock::fleet::etcd::Fleet;
use agentlock::fleet::locate;

/// `run` on the store: claimed for the command on this host's lease,
/// checked while it runs.
pub(super) fn run(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    a: RunArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let (worker, key) = locate(&store.spec, store.root()?, &a.worker)?;
    // An unreachable store fails here, before anything is forked.
    let lease = super::keeper_lease(store, fleet, out)?;
    let probes = ctx.probes.probes();
    let mut hold = agentlock::fleet::hold::FleetHold::new(fleet, worker, key, lease, &probes);
    if let Some(timeout) = a.wait {
        hold = hold.waiting(timeout);
    }
    crate::commands::run::run_on(ctx, &mut hold, a, out)
}

/// `keeper --foreground`: runs until killed (it logs through `tracing`).
pub(super) fn foreground(store: &Store, a: KeeperArgs) -> Result<ExitCode, Failure> {
    if a.period.is_zero() {
        return Err(Failure::usage("--period 0: must be more than 0"));
    }
    agentlock::fleet::keeping::run(&store.spec, store.ttl, a.period, store.timeout)?;
    Ok(ExitCode::Success)
}

/// `keeper`: starts one in the background unless one runs; prints its lease.
pub(super) fn keep(
    store: &Store,
    fleet: &Fleet,
    a: KeeperArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    if a.period.is_zero() {
        return Err(Failure::usage("--period 0: must be more than 0"));
    }
    let lease = super::keeper_lease(store, fleet, out)?;
    out.line(format_args!(
        "keeper running for {} (pid {}, lease {:x}, ttl {} s)",
        crate::output::esc(&store.raw),
        lease.pid,
        lease.id,
        lease.ttl
    ));
    Ok(ExitCode::Success)
}
