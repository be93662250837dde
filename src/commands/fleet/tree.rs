//! `list` and `doctor` on the fleet store.

use super::Store;
use super::workers::entry;
use crate::cli::{DoctorArgs, TreeArgs};
use crate::commands::{Ctx, Failure};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output;
use agentlock::fleet::etcd::Fleet;
use agentlock::fleet::ops;
use agentlock::json::{Scanned, TmuxJson, TreeDoc};

/// Every worker of the fleet, all hosts; with ROOT, those under it.
pub(super) fn list(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    a: &TreeArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    if a.max_depth.is_some() || !a.skip.is_empty() || a.no_default_skips {
        return Err(Failure::usage(
            "--max-depth, --skip and --no-default-skips walk a tree; with --store, list reads the store",
        ));
    }
    let json = a.json;
    let fleet_root = store.canonical_root()?;
    let root = match &a.root {
        Some(r) => {
            let dir = std::fs::canonicalize(r).map_err(|source| agentlock::Error::Io {
                path: r.clone(),
                source,
            })?;
            if !dir.starts_with(&fleet_root) {
                return Err(agentlock::Error::OutsideFleet {
                    why: format!("not inside the fleet root {}", fleet_root.display()),
                    path: dir,
                    root: fleet_root,
                }
                .into());
            }
            dir
        }
        None => fleet_root.clone(),
    };
    let mut judged = ops::judge_all(fleet, &fleet_root, &ctx.probes.probes())?;
    judged.retain(|j| j.judgement.worker_dir.starts_with(&root));
    if json {
        let asker = crate::commands::default_asker(ctx);
        let probes = ctx.probes.probes();
        let locks: Vec<_> = judged
            .iter()
            .map(|j| entry(store, j, &asker, &probes))
            .collect();
        out.line(output::to_string(&TreeDoc {
            schema: agentlock::json::SCHEMA,
            paths_lossy: agentlock::paths::is_lossy(&root) || locks.iter().any(|l| l.paths_lossy),
            root,
            store: Some(store.raw.clone()),
            scanned: Scanned {
                dirs: None,
                locks: locks.len(),
            },
            tmux: TmuxJson::of(&ctx.probes.tmux.snapshot()),
            locks,
            findings: Vec::new(),
            fixed: Vec::new(),
            error: None,
        }));
    } else if !ctx.quiet {
        let report = agentlock::doctor::Report {
            root,
            dirs: 0,
            locks: judged.into_iter().map(|j| j.judgement).collect(),
            findings: Vec::new(),
            fixed: Vec::new(),
        };
        out.raw(output::list_table(&report, ctx.style));
    }
    Ok(ExitCode::Success)
}

/// `doctor`: the tree's lock files as without the store, then the store's
/// records and where the two disagree.
pub(super) fn doctor(
    ctx: &Ctx,
    store: &Store,
    fleet: &Fleet,
    a: DoctorArgs,
    out: &mut Out,
) -> Result<ExitCode, Failure> {
    use agentlock::fleet::doctor;
    let root = store.canonical_root()?;
    crate::commands::tree::doctor_with(ctx, a, Some(&store.raw), out, |report, fix| {
        let probes = ctx.probes.probes();
        let mut check = doctor::check(fleet, &root, report, &probes)?;
        let (fixed, errors) = if fix {
            doctor::fix(fleet, &mut check, &probes)
        } else {
            Default::default()
        };
        report.findings.extend(check.findings);
        report.fixed.extend(fixed);
        Ok(errors)
    })
}
