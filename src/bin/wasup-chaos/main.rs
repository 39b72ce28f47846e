//! `wasup-chaos`: the chaos suite. Runs wasup (simulated engine) with a real Redis and a stand-in
//! Laravel, keeps sessions paired and pending, and for N rounds sends incoming messages (each
//! counted only once wasup receipted it), outgoing messages, scans and a logout while one fault
//! strikes: kill -9, SIGTERM, Laravel down, 500s, 422s, stalls past the timeout, 404 look-ups,
//! a Redis restart. After every round, once wasup has drained, it checks what wasup accepted
//! against what Laravel holds (checks.rs). Exit status 1 on any violation; JSON report in `--out`.

mod checks;
mod faults;
mod laravel;
#[path = "../wasup-bench/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "../wasup-bench/processes.rs"]
#[allow(dead_code)]
mod processes;
mod traffic;

use std::{cell::RefCell, path::PathBuf, process::ExitCode, rc::Rc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};

use crate::{
    checks::Findings,
    faults::{Fault, World},
    load::Api,
    traffic::{Ledger, Planned},
};

/// Strikes wasup with faults while it works, and checks that nothing accepted is lost.
#[derive(Debug, Parser)]
struct Args {
    /// Sessions kept (two in three paired).
    #[arg(long, default_value_t = 3000)]
    sessions: usize,
    /// Rounds (one fault each, in a fixed order of eight).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Traffic per round, in seconds; the fault lasts half of it.
    #[arg(long, default_value_t = 10)]
    round_seconds: u64,
    /// How long a stalled Laravel takes to answer (wasup's request timeout is 5 s here).
    #[arg(long, default_value_t = 30)]
    stall_seconds: u64,
    /// Incoming messages per 100 ms tick.
    #[arg(long, default_value_t = 4)]
    messages_per_tick: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/chaos/latest.json")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match actix_rt::System::new().block_on(run(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("wasup-chaos: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let mut world = World::start().await?;
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    ledger.borrow_mut().sessions = (0..args.sessions)
        .map(|index| Planned {
            id: format!("chaos-{index:05}"),
            user_id: 1 + index as u64,
            paired: false,
            logged_out: false,
        })
        .collect();
    revive(&world.api, &ledger).await;
    pair_two_in_three(&world.api, &ledger).await?;
    eprintln!(
        "wasup-chaos: {} sessions up in {:.0?}",
        args.sessions,
        started.elapsed()
    );
    let mut findings = Findings::default();
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let fault = Fault::ALL[round % Fault::ALL.len()];
        let round_started = std::time::Instant::now();
        let duration = Duration::from_secs(args.round_seconds);
        let poison_one_in = if fault == Fault::PoisonBurst { 5 } else { 50 };
        let traffic = actix_rt::spawn(traffic::drive(
            world.api.clone(),
            Rc::clone(&ledger),
            traffic::Rate {
                duration,
                messages_per_tick: args.messages_per_tick,
                poison_one_in,
            },
            round as u64,
        ));
        actix_rt::time::sleep(duration / 4).await;
        world
            .strike(
                fault,
                duration / 2,
                Duration::from_secs(args.stall_seconds),
                &ledger,
            )
            .await
            .with_context(|| format!("round {round}: {}", fault.name()))?;
        traffic.await?;
        revive(&world.api, &ledger).await;
        let drained = checks::drained(&world.api, Duration::from_secs(180)).await;
        let accepted = ledger.borrow().clone();
        let round_findings = checks::check(&world.api, &world.laravel, &accepted).await;
        let summary = json!({
            "round": round,
            "fault": fault.name(),
            "seconds": round_started.elapsed().as_secs_f64(),
            "drained": drained,
            "violations": round_findings.total(),
        });
        eprintln!("wasup-chaos: {summary}");
        rounds.push(summary);
        if !drained {
            findings.merge(not_drained(round));
        }
        findings.merge(round_findings);
        // The next round's checks cover what was accepted since; earlier keys stay checked.
        mark_paired(&world.api, &ledger).await;
        // Written after every round, so a long run stopped early still leaves its figures.
        let accepted = ledger.borrow().clone();
        write_report(
            args,
            &report(args, &world, &accepted, &findings, &rounds, started),
        )?;
    }
    let accepted = ledger.borrow().clone();
    let report = report(args, &world, &accepted, &findings, &rounds, started);
    write_report(args, &report)?;
    println!("{}", serde_json::to_string_pretty(&report["summary"])?);
    Ok(findings.total() == 0)
}

fn not_drained(round: usize) -> Findings {
    let mut findings = Findings::default();
    findings.counts.insert("not_drained", 1);
    findings
        .examples
        .insert("not_drained", vec![format!("round {round}")]);
    findings
}

/// Starts every planned session wasup does not run (stopped after an ending without a logout,
/// logged out, expired unscanned) under its own user: a paired one must come back without a QR.
async fn revive(api: &Api, ledger: &Rc<RefCell<Ledger>>) {
    use futures_util::{StreamExt, stream};
    let sessions = ledger.borrow().sessions.clone();
    stream::iter(sessions)
        .map(|session| async move {
            let path = format!("/sessions/{}", session.id);
            for _ in 0..50 {
                match api.get(&path).await {
                    // Running (a stopped one is started again below, by its own user).
                    Ok(report)
                        if report["session_id"].is_string() && report["state"] != "stopped" =>
                    {
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        actix_rt::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                let body = json!({"session_id": session.id, "user_id": session.user_id});
                match api.post("/start", &body).await {
                    Ok((201, _)) => return,
                    // Finishing (tombstone) or at capacity for a moment: try again shortly.
                    _ => actix_rt::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    for session in &mut ledger.borrow_mut().sessions {
        session.logged_out = false;
    }
}

/// Scans two sessions in three and waits until they are connected.
async fn pair_two_in_three(api: &Api, ledger: &Rc<RefCell<Ledger>>) -> anyhow::Result<()> {
    use futures_util::{StreamExt, stream};
    let ids: Vec<String> = ledger
        .borrow()
        .sessions
        .iter()
        .enumerate()
        .filter(|(index, _)| index % 3 != 2)
        .map(|(_, session)| session.id.clone())
        .collect();
    stream::iter(ids)
        .map(|id| async move {
            let path = format!("/sessions/{id}/simulate/scan");
            for _ in 0..100 {
                // The first QR must be shown before a scan is accepted.
                if matches!(api.post(&path, &json!({})).await, Ok((202, _))) {
                    return;
                }
                actix_rt::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    mark_paired(api, ledger).await;
    let paired = ledger.borrow().sessions.iter().filter(|s| s.paired).count();
    anyhow::ensure!(paired > 0, "no session paired");
    Ok(())
}

/// Marks the sessions wasup shows connected as paired (their credentials must now survive).
async fn mark_paired(api: &Api, ledger: &Rc<RefCell<Ledger>>) {
    use futures_util::{StreamExt, stream};
    let ids: Vec<String> = ledger
        .borrow()
        .sessions
        .iter()
        .filter(|session| !session.paired)
        .map(|session| session.id.clone())
        .collect();
    let active: Vec<String> = stream::iter(ids)
        .map(|id| async move {
            let report = api.get(&format!("/sessions/{id}")).await.ok()?;
            (report["state"] == "active").then_some(id)
        })
        .buffer_unordered(32)
        .filter_map(|id| async move { id })
        .collect()
        .await;
    for session in &mut ledger.borrow_mut().sessions {
        if active.contains(&session.id) {
            session.paired = true;
        }
    }
}

fn write_report(args: &Args, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(report)?)?;
    Ok(())
}

fn report(
    args: &Args,
    world: &World,
    ledger: &Ledger,
    findings: &Findings,
    rounds: &[Value],
    started: std::time::Instant,
) -> Value {
    let tables = world.laravel.tables();
    json!({
        "summary": {
            "sessions": args.sessions,
            "rounds": rounds.len(),
            "seconds": started.elapsed().as_secs(),
            "incoming_receipted": ledger.receipted.len(),
            "incoming_unreceipted": ledger.unreceipted,
            "poison_receipted": ledger.poison_receipted,
            "outgoing_accepted": ledger.outgoing.len(),
            "outgoing_refused": ledger.outgoing_refused,
            "scans": ledger.scans,
            "logouts": ledger.logouts,
            "laravel_answers": tables.answers,
            "violations": findings.total(),
            "violations_by_kind": findings.counts,
            "examples": findings.examples,
            "dead_letters": findings.dead_letters,
        },
        "rounds": rounds,
    })
}
