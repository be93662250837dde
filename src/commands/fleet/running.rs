//! The commands that keep running on the fleet store: `run` (the worker
//! held, and checked, while its command runs) and `keeper`.

use super::Store;
use crate::cli::{KeeperArgs, RunArgs};
use crate::commands::{Ctx, Failure};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use agentlock::fleet::etcd::Fleet;
use agentlock::fleet::{keeper, locate};

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
    let lease = keeper::ensure(&store.spec, &store.raw, store.ttl, store.timeout, fleet)?;
    let probes = ctx.probes.probes();
    let mut hold =
        agentlock::fleet::hold::FleetHold::new(fleet, worker, key, lease, store.ttl, &probes);
    crate::commands::run::run_on(ctx, &mut hold, a, out)
}

pub(super) fn keep(
    store: &Store,
    fleet: &Fleet,
    a: KeeperArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    let period = super::seconds(a.period, "--period")?;
    if a.foreground {
        keeper::run(&store.spec, store.ttl, period, store.timeout, fleet)?;
        return Ok(ExitCode::Success);
    }
    let lease = keeper::ensure(&store.spec, &store.raw, store.ttl, store.timeout, fleet)?;
    out.line(format_args!(
        "keeper running for {} (lease {lease:x})",
        store.raw
    ));
    Ok(ExitCode::Success)
}
