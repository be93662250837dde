//! `list` and `doctor` on the fleet store.

use super::Store;
use super::workers::entry;
use crate::cli::{DoctorArgs, TreeArgs};
use crate::commands::{Ctx, Failure};
use crate::exit_codes::ExitCode;
use crate::out::Out;
use crate::output::{self, LockEntry};
use agentlock::fleet::etcd::Fleet;
use agentlock::fleet::ops;

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
        #[derive(serde::Serialize)]
        struct Fleet<'a> {
            #[serde(serialize_with = "agentlock::paths::ser_path")]
            root: &'a std::path::Path,
            store: &'a str,
            locks: Vec<LockEntry<'a>>,
        }
        out.line(output::to_json(&Fleet {
            root: &root,
            store: &store.raw,
            locks: judged.iter().map(|j| entry(store, j)).collect(),
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
    crate::commands::tree::doctor_with(ctx, a, out, |report, fix| {
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
