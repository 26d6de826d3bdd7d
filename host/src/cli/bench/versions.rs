//! Embedded only: replay speed, and the operators' tools under load (how
//! fast `weft check` classifies open runs and `weft upgrade` moves them).

use super::Orders;
use super::report::{ReplayFigures, VersionFigures};
use anyhow::bail;
use serde_json::json;
use std::time::{Duration, Instant};
use weft::model::Sha256Hex;
use weft::versions::{DeployOptions, UpgradeResult, Verdict};
use weft::workflow::{ReplayVerdict, replay_history};
use weft::{Host, RunStatus, StartRequest};

/// Replays a history of `activities` chained activities from memory,
/// `replays` times: the events per second.
pub(super) async fn measure_replay(
    host: &Host,
    scenarios: &Sha256Hex,
    bytes: &[u8],
    activities: u32,
    replays: u32,
) -> anyhow::Result<ReplayFigures> {
    let run = host
        .start(StartRequest {
            workflow_id: "replayed-chain".into(),
            workflow_type: "chain".into(),
            input: json!({ "activities": activities }),
            module: scenarios.clone(),
            options: Default::default(),
        })
        .await?;
    let record = host.wait(&run).await?;
    if record.status != RunStatus::Completed {
        bail!(
            "the chain run ended {:?}: {:?}",
            record.status,
            record.stuck
        );
    }
    let history = host.history(&run).await?;
    let module = host.engine().load(bytes)?;
    let began = Instant::now();
    for _ in 0..replays {
        match replay_history(host.engine(), &module, &history).await? {
            ReplayVerdict::Identical { .. } => {}
            ReplayVerdict::Diverged(d) => bail!("the chain history did not replay: {d}"),
        }
    }
    let elapsed = began.elapsed();
    Ok(ReplayFigures {
        events: history.len() as u64,
        replays,
        events_per_second: (history.len() as f64 * f64::from(replays)) / elapsed.as_secs_f64(),
    })
}

/// Deploys a version of `order` beside the default, which stays as it is.
async fn store_beside(host: &Host, version: &str, bytes: &[u8]) -> anyhow::Result<Sha256Hex> {
    let options = DeployOptions {
        make_default: false,
        check: false,
    };
    Ok(host
        .deploy_module("order", version, bytes, options)
        .await?
        .module
        .sha256)
}

/// Runs per second for a compatibility check that finds every run identical,
/// one that finds every run diverging, and an upgrade that moves them all.
pub(super) async fn measure_versions(
    host: &Host,
    orders: &Orders,
    runs: usize,
) -> anyhow::Result<VersionFigures> {
    let v1 = host.deploy("order", "1", &orders.v1).await?.sha256;
    let v2 = store_beside(host, "2", &orders.v2).await?;
    let v3 = store_beside(host, "3", &orders.v3).await?;
    let mut ids = Vec::with_capacity(runs);
    for i in 0..runs {
        ids.push(
            host.start(StartRequest {
                workflow_id: format!("order-{i}"),
                workflow_type: "order".into(),
                // Nothing serves `reserve`, so every run waits on it, open.
                input: json!("book"),
                module: v1.clone(),
                options: Default::default(),
            })
            .await?,
        );
    }
    // Each run's first activation schedules `reserve` (3 events).
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        while host.history(id).await?.len() < 3 {
            if Instant::now() > deadline {
                bail!("run {id} did not schedule its first activity within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let check = |module: Sha256Hex, want_identical: bool| async move {
        let module = host.module(&module).await?;
        let records = host.check_runs("order", 0).await?;
        if records.len() != runs {
            bail!("{} open runs of order, expected {runs}", records.len());
        }
        let began = Instant::now();
        for record in &records {
            let checked = host.check_run(&module, record).await;
            match (&checked.verdict, want_identical) {
                (Verdict::Identical { .. }, true) | (Verdict::Diverged(_), false) => {}
                (other, _) => bail!("run {} checked as {other:?}", record.run_id),
            }
        }
        Ok::<_, anyhow::Error>(runs as f64 / began.elapsed().as_secs_f64())
    };
    let identical = check(v3.clone(), true).await?;
    let diverged = check(v2, false).await?;

    let module = host.module(&v3).await?;
    let began = Instant::now();
    for id in &ids {
        let moved = host.upgrade_run(&module, id, false).await?;
        if moved.result != UpgradeResult::Upgraded {
            bail!("run {id} was not upgraded: {:?}", moved.result);
        }
    }
    let upgraded = runs as f64 / began.elapsed().as_secs_f64();
    Ok(VersionFigures {
        open_runs: runs,
        check_identical_runs_per_second: identical,
        check_diverging_runs_per_second: diverged,
        upgrade_runs_per_second: upgraded,
    })
}
