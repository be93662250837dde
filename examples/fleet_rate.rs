//! Claims per second on the fleet store from one host, through the library:
//! `ops::claim` (local lock file + one etcd transaction) + `ops::release`
//! of N workers, against the bare etcd transactions the same calls make
//! (`Fleet::create` + `Fleet::delete`), on one connection, in one run.
//!
//!     cargo run --release --features etcd --example fleet_rate -- etcd://127.0.0.1:2379/bench DIR [N]

#[cfg(feature = "etcd")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use agentlock::fleet::etcd::{Created, Fleet};
    use agentlock::fleet::ops::{self, FleetClaimOutcome, FleetReleaseOutcome};
    use agentlock::fleet::{StoreSpec, locate};
    use agentlock::lock::{Asker, ClaimOptions, Claimant};
    use agentlock::probe::{LiveProbes, TmuxQuery};
    use std::time::{Duration, Instant};

    let args: Vec<String> = std::env::args().collect();
    let (Some(store), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err("usage: fleet_rate STORE DIR [N]".into());
    };
    let n: usize = args.get(3).map_or(Ok(300), |s| s.parse())?;
    let spec = StoreSpec::parse(store)?;
    let fleet = Fleet::connect(&spec, Duration::from_secs(5))?;
    let (lease, _) = fleet.grant(30)?;
    let root = std::path::Path::new(dir);
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let w = root.join(format!("w{i}"));
            std::fs::create_dir_all(&w).map(|()| w)
        })
        .collect::<Result<_, _>>()?;
    let live = LiveProbes::new(TmuxQuery::default());
    let probes = live.probes();
    let me = Claimant::this_process();
    let asker = Asker::from(&me);
    let record = agentlock::record::LockRecord {
        pid: me.pid,
        ..Default::default()
    };

    // The bare transactions: create-if-absent, then compare-and-delete.
    let t = Instant::now();
    for w in &workers {
        let (_, key) = locate(&spec, root, w)?;
        let raw = format!("{key}-raw");
        let Created::Fence(rev) = fleet.create(&raw, &record, Some(lease))? else {
            return Err(format!("{raw} exists").into());
        };
        assert!(fleet.delete(&raw, rev)?);
    }
    let bare = t.elapsed();

    let t = Instant::now();
    for w in &workers {
        let (dir, key) = locate(&spec, root, w)?;
        let opts = ClaimOptions::default();
        // On no keeper lease: this measures the claim itself (a keeper adds
        // two reads of its lease file).
        match ops::claim(&fleet, &dir, &key, &me, opts, None, &probes)? {
            FleetClaimOutcome::Done(_) => {}
            FleetClaimOutcome::Refused(j) => return Err(j.judgement.reason.into()),
        }
        match ops::release(&fleet, &dir, &key, &asker, false, &probes)? {
            FleetReleaseOutcome::Done(_) => {}
            FleetReleaseOutcome::Refused(j) => return Err(j.judgement.reason.into()),
        }
    }
    let lib = t.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "bare etcd create+delete      {:8.1} cycles/s ({:.2} ms each)",
        rate(bare),
        bare.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "library claim+release        {:8.1} cycles/s ({:.2} ms each)   x{:.2} of bare",
        rate(lib),
        lib.as_secs_f64() * 1000.0 / n as f64,
        lib.as_secs_f64() / bare.as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "etcd"))]
fn main() {
    eprintln!("fleet_rate needs --features etcd");
    std::process::exit(2);
}
