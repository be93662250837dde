//! Writes N well-formed fleet records of another host (`host-x`, no lease:
//! they stay) under `<prefix>/workers/fill/NNNNNN`, 128 puts a transaction,
//! for the listing benchmark (`scripts/bench-fleet-list.sh`).
//!
//!     cargo run --release --features etcd --example fleet_fill -- http://127.0.0.1:2379 /bench 100000

#[cfg(feature = "etcd")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(endpoint), Some(prefix), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        return Err("usage: fleet_fill ENDPOINT PREFIX N".into());
    };
    let n: usize = n.parse()?;
    let rec = agentlock::record::LockRecord {
        pid: 4242,
        hostname: Some("host-x".into()),
        boot_id: Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
        session_id: Some("agent-with-a-long-session-name".into()),
        tmux_socket: Some("/tmp/tmux-1000/default".into()),
        ..Default::default()
    }
    .to_json();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint.as_str()], None).await?;
        for start in (0..n).step_by(128) {
            let ops: Vec<etcd_client::TxnOp> = (start..(start + 128).min(n))
                .map(|i| {
                    etcd_client::TxnOp::put(
                        format!("{prefix}/workers/fill/{i:06}"),
                        rec.clone(),
                        None,
                    )
                })
                .collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await?;
        }
        Ok::<(), etcd_client::Error>(())
    })?;
    Ok(())
}

#[cfg(not(feature = "etcd"))]
fn main() {
    eprintln!("fleet_fill needs --features etcd");
    std::process::exit(2);
}
