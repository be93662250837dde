//! The commands on the fleet store (`--store`, SPEC §8): `claim`, `release`,
//! `status`, `check` and `keeper`. The same states, exit codes and JSON as on
//! lock files, plus `fence` and `store` in each entry.

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
    if a.lease_ttl < 2 {
        return Err(Failure::usage("--lease-ttl must be at least 2 seconds"));
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
    use crate::cli::KeeperArgs;
    use crate::output::{self, LockEntry, WorkerJson};
    use agentlock::fleet::etcd::Fleet;
    use agentlock::fleet::ops::{self, FleetClaimOutcome, FleetJudgement, FleetReleaseOutcome};
    use agentlock::fleet::{keeper, locate};
    use agentlock::lock::{ClaimOptions, Standing};

    pub(super) fn execute(
        ctx: &Ctx,
        store: &Store,
        command: Command,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let fleet = Fleet::connect(&store.spec, store.timeout)?;
        match command {
            Command::Claim(a) if !a.first_free => claim(ctx, store, &fleet, a, out),
            Command::Release(a) => release(ctx, store, &fleet, a, out),
            Command::Status(a) => status(ctx, store, &fleet, &a.workers, a.json, None, out),
            Command::Check(a) => {
                let mut warnings = Vec::new();
                let asker = super::super::asker_of(ctx, a.asker, &mut warnings)?;
                super::super::warn_all(out, &warnings);
                status(ctx, store, &fleet, &a.workers, a.json, Some(&asker), out)
            }
            Command::Keeper(a) => keep(store, &fleet, a, out),
            Command::Run(a) => run(ctx, store, &fleet, a, out),
            Command::List(a) if a.root.is_none() => list(ctx, store, &fleet, a.json, out),
            _ => Err(Failure::usage(
                "with --store, only claim (without --first-free), release, status, check, run, list (without ROOT: the whole fleet) and keeper work so far",
            )),
        }
    }

    fn entry<'a>(store: &'a Store, j: &'a FleetJudgement) -> LockEntry<'a> {
        let mut e = LockEntry::of(&j.judgement);
        e.fence = j.fence;
        e.store = Some(&store.raw);
        e
    }

    /// A refusal: the JSON entry (with `--json`), the refusal block, exit 1.
    fn refused(
        store: &Store,
        out: &mut Out,
        json: bool,
        j: &FleetJudgement,
        command: &str,
    ) -> ExitCode {
        if json {
            let e = entry(store, j).with_action("refused");
            out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
        }
        out.err(output::refusal(&j.judgement, command));
        ExitCode::No
    }

    fn claim(
        ctx: &Ctx,
        store: &Store,
        fleet: &Fleet,
        a: crate::cli::ClaimArgs,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let (me, _) = super::super::claimant_of(ctx, a.holder, out)?;
        let [worker] = &a.workers[..] else {
            return Err(Failure::usage("claim takes one WORKER"));
        };
        if a.signal_other {
            return Err(Failure::usage(
                "--signal-other does not work with --store yet",
            ));
        }
        let (worker, key) = locate(&store.spec, store.root()?, worker)?;
        let worker = &worker;
        // An unreachable store fails here, before anything local is touched.
        fleet.get(&key)?;
        let lease = keeper::ensure(&store.spec, &store.raw, store.ttl, store.timeout, fleet)?;
        let opts = ClaimOptions {
            force: a.force,
            ..ClaimOptions::default()
        };
        let probes = ctx.probes.probes();
        match ops::claim(fleet, worker, &key, &me, opts, Some(lease), &probes)? {
            FleetClaimOutcome::Refused(j) => Ok(refused(store, out, a.json, &j, "claim")),
            FleetClaimOutcome::Done(c) => {
                let after = FleetJudgement {
                    judgement: agentlock::lock::Judgement {
                        record: Some(c.record.clone()),
                        pid_alive: Some(true),
                        ..agentlock::lock::Judgement::at(
                            &c.before.judgement.worker_dir,
                            &c.before.judgement.lock_path,
                            agentlock::verdict::State::Held,
                            format!("claimed by pid {}", c.record.pid),
                        )
                    },
                    fence: Some(c.fence),
                    revision: 0,
                };
                out.done = Some(format!("{} {key} (the lock stays held)", c.action.as_str()));
                if a.json {
                    let e = entry(store, &after).with_action(c.action.as_str());
                    out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
                } else if !ctx.quiet {
                    out.line(format_args!(
                        "{} {} (pid {}, fence {}, {})",
                        c.action.as_str(),
                        worker.display(),
                        c.record.pid,
                        c.fence,
                        key
                    ));
                }
                Ok(ExitCode::Success)
            }
        }
    }

    fn release(
        ctx: &Ctx,
        store: &Store,
        fleet: &Fleet,
        a: crate::cli::ReleaseArgs,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let mut warnings = Vec::new();
        let who = super::super::asker_of(ctx, a.asker, &mut warnings)?;
        super::super::warn_all(out, &warnings);
        let (worker, key) = locate(&store.spec, store.root()?, &a.worker)?;
        match ops::release(fleet, &worker, &key, &who, a.force, &ctx.probes.probes())? {
            FleetReleaseOutcome::Refused(j) => Ok(refused(store, out, a.json, &j, "release")),
            FleetReleaseOutcome::Done(j) => {
                let action = if j.revision == 0 {
                    "already-free"
                } else {
                    "released"
                };
                out.done = Some(format!("{action} {key}"));
                if a.json {
                    let e = entry(store, &j).with_action(action);
                    out.line(output::workers_json(&[WorkerJson::Entry(e)], None));
                } else if !ctx.quiet {
                    out.line(format_args!("{action} {}", worker.display()));
                }
                Ok(ExitCode::Success)
            }
        }
    }

    /// `status`, or `check` when `asker` is given.
    fn status(
        ctx: &Ctx,
        store: &Store,
        fleet: &Fleet,
        workers: &[PathBuf],
        json: bool,
        asker: Option<&agentlock::lock::Asker>,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let probes = ctx.probes.probes();
        let mut code = ExitCode::Success;
        let mut judged = Vec::new();
        let mut failed = Vec::new();
        for w in workers {
            let one = locate(&store.spec, store.root()?, w)
                .and_then(|(dir, key)| ops::judge(fleet, &dir, &key, &probes));
            match one {
                Ok(j) => judged.push(j),
                // Reads never fail on an unreachable store: they cannot tell.
                Err(e @ agentlock::Error::Store { .. }) => {
                    let dir = std::fs::canonicalize(w).unwrap_or_else(|_| w.clone());
                    let key = agentlock::fleet::worker_key(&store.spec, store.root()?, w)
                        .unwrap_or_default();
                    judged.push(FleetJudgement {
                        judgement: agentlock::lock::Judgement::at(
                            &dir,
                            std::path::Path::new(&key),
                            agentlock::verdict::State::Unverified,
                            e.to_string(),
                        ),
                        fence: None,
                        revision: 0,
                    });
                }
                Err(e) => {
                    out.error_line(&e);
                    code = code.merge(ExitCode::Error);
                    failed.push((w.clone(), e));
                }
            }
        }
        for j in &judged {
            let standing = asker.map(|a| j.judgement.standing(a, &probes));
            if standing == Some(Standing::Taken) {
                code = code.merge(ExitCode::No);
            }
            if !json && !ctx.quiet {
                match standing {
                    Some(s) => out.line(output::check_line(&j.judgement, s, ctx.style)),
                    None => out.line(format_args!(
                        "{}{}",
                        output::status_lines(&j.judgement, ctx.style),
                        j.fence
                            .map(|f| format!("\n  fence: {f}"))
                            .unwrap_or_default()
                    )),
                }
            }
        }
        if json {
            let mut entries: Vec<WorkerJson> = judged
                .iter()
                .map(|j| WorkerJson::Entry(entry(store, j)))
                .collect();
            entries.extend(failed.iter().map(|(w, e)| WorkerJson::failed(w, e)));
            out.line(output::workers_json(&entries, None));
        }
        Ok(code)
    }

    /// Every worker of the fleet, all hosts.
    fn list(
        ctx: &Ctx,
        store: &Store,
        fleet: &Fleet,
        json: bool,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let given = store.root()?;
        let root = std::fs::canonicalize(given).unwrap_or_else(|_| given.to_path_buf());
        let judged = ops::judge_all(fleet, &root, &ctx.probes.probes())?;
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

    /// `run` on the store: claimed for the command on this host's lease,
    /// checked while it runs.
    fn run(
        ctx: &Ctx,
        store: &Store,
        fleet: &Fleet,
        a: crate::cli::RunArgs,
        out: &mut Out,
    ) -> Result<ExitCode, Failure> {
        let (worker, key) = locate(&store.spec, store.root()?, &a.worker)?;
        // An unreachable store fails here, before anything is forked.
        fleet.get(&key)?;
        let lease = keeper::ensure(&store.spec, &store.raw, store.ttl, store.timeout, fleet)?;
        let probes = ctx.probes.probes();
        let mut hold =
            agentlock::fleet::hold::FleetHold::new(fleet, worker, key, lease, store.ttl, &probes);
        super::super::run::run_on(ctx, &mut hold, a, out)
    }

    fn keep(
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
}
