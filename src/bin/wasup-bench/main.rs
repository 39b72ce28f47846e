//! `wasup-bench`: measures wasup against the seeds' claims, on this machine, in one run. Prints
//! a table and writes the figures as JSON. `--quick` runs a one-minute version (CI checks that
//! it runs and that its JSON is well-formed; speed is never asserted).

mod coverage;
mod laravel;
// Shared with wasup-chaos (`#[path]`), which uses parts the benchmark does not.
#[allow(dead_code)]
mod load;
// Shared with wasup-chaos (`#[path]`), which uses parts the benchmark does not.
#[allow(dead_code)]
mod processes;
mod render;
mod scenarios;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use serde_json::{Value, json};

/// Benchmarks wasup: seeds' scenario vs naive, latency, scale, control API, recovery.
#[derive(Debug, Parser)]
struct Args {
    /// The one-minute version.
    #[arg(long)]
    quick: bool,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Only these scenarios (seeds, scale, api, recovery, render); all when absent.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Session counts for the scale scenario instead of its defaults (e.g. `20000` to profile).
    #[arg(long, value_delimiter = ',')]
    scale_sizes: Vec<usize>,
    /// Only these modes of the seeds' scenario (wasup, combined, naive), e.g. `wasup` while
    /// tuning the split contract; a ratio to naive is reported only when naive runs too.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["wasup", "combined", "naive"],
        default_values_t = ["wasup".to_string(), "combined".into(), "naive".into()]
    )]
    seeds_modes: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match actix_rt::System::new().block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wasup-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let plan = scenarios::Plan {
        quick: args.quick,
        scale_sizes: args.scale_sizes.clone(),
        seeds_modes: args.seeds_modes.clone(),
    };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|only| only == name);
    let started = std::time::Instant::now();
    let mut results = serde_json::Map::new();
    // A scenario that fails is reported as such; the others still run.
    let outcome = |result: anyhow::Result<Value>| {
        result.unwrap_or_else(|error| json!({"error": format!("{error:#}")}))
    };
    if wanted("seeds") {
        eprintln!(
            "wasup-bench: 1-2. seeds' scenario (wasup split, combined, then naive): latency, QR coverage ..."
        );
        results.insert("seeds".into(), outcome(scenarios::seeds(&plan).await));
    }
    if wanted("scale") {
        eprintln!("wasup-bench: 3. scale ...");
        results.insert("scale".into(), outcome(scenarios::scale(&plan).await));
    }
    if wanted("api") {
        eprintln!("wasup-bench: 4. control API under wrk ...");
        results.insert(
            "control_api".into(),
            outcome(scenarios::control_api(&plan).await),
        );
    }
    if wanted("recovery") {
        eprintln!("wasup-bench: 5. Laravel outage and recovery ...");
        results.insert("recovery".into(), outcome(scenarios::recovery(&plan).await));
    }
    if wanted("render") {
        eprintln!("wasup-bench: 6. QR rendering, phase by phase ...");
        let count = if args.quick { 200 } else { 5_000 };
        results.insert("render".into(), outcome(render::render(count)));
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, result)| result.get("error").is_some())
        .map(|(name, result)| format!("{name}: {}", result["error"]))
        .collect();
    let report = json!({
        "quick": args.quick,
        "machine": machine(),
        "took_seconds": started.elapsed().as_secs_f64(),
        "results": results,
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    print_table(&report);
    eprintln!("wasup-bench: figures written to {}", args.out.display());
    if !failed.is_empty() {
        anyhow::bail!("scenarios failed: {}", failed.join("; "));
    }
    Ok(())
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_string())
        });
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .map(|line| line.split_whitespace().nth(1).unwrap_or("0").to_string())
        });
    json!({
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "cpu": cpu,
        "memory_kib": memory.and_then(|kib| kib.parse::<u64>().ok()),
        "os": std::env::consts::OS,
    })
}

fn print_table(report: &Value) {
    let results = &report["results"];
    let row =
        |label: &str, value: String, target: &str| println!("{label:<58} {value:>16}  {target}");
    println!("{:<58} {:>16}  target", "measure", "measured");
    let seeds = &results["seeds"];
    if !seeds.is_null() {
        for mode in ["wasup", "combined", "naive"] {
            let run = &seeds["runs"][mode];
            if run.is_null() {
                continue; // not in --seeds-modes
            }
            row(
                &format!(
                    "1. {} sessions, {mode}: requests/s to Laravel",
                    seeds["sessions"]
                ),
                format!("{:.2}", run["requests_per_second"].as_f64().unwrap_or(0.0)),
                "",
            );
            row(
                &format!("1. {mode}: items/s | KiB/s"),
                format!(
                    "{:.1} | {:.1}",
                    run["items_per_second"].as_f64().unwrap_or(0.0),
                    run["bytes_per_second"].as_f64().unwrap_or(0.0) / 1024.0
                ),
                "",
            );
        }
        row(
            "1. naive / wasup request ratio",
            format!(
                "{:.1}x",
                seeds["naive_to_wasup_request_ratio"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
            ">= 40x",
        );
        row(
            "1. naive / combined request ratio",
            format!(
                "{:.1}x",
                seeds["naive_to_combined_request_ratio"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
            ">= 80x",
        );
        for mode in ["wasup", "combined"] {
            let run = &seeds["runs"][mode];
            if run.is_null() {
                continue;
            }
            let age = |key: &str| {
                run["qr_age_at_arrival"][key]
                    .as_u64()
                    .map_or("-".into(), |ms| ms.to_string())
            };
            row(
                &format!("1. {mode}: QR coverage (samples) | expired QRs delivered"),
                format!(
                    "{:.1} % ({}) | {}",
                    run["qr_coverage"]["share"].as_f64().unwrap_or(0.0) * 100.0,
                    run["qr_coverage"]["samples"],
                    run["expired_qrs_delivered"]
                ),
                ">= 98.5 % | 0",
            );
            row(
                &format!("1. {mode}: QR age at arrival p50/p99/max (ms)"),
                format!("{}/{}/{}", age("p50_ms"), age("p99_ms"), age("max_ms")),
                "p99 <= 1500",
            );
        }
        let latency = |class: &str, key: &str| {
            seeds["runs"]["wasup"][class][key]
                .as_u64()
                .map_or("-".into(), |ms| ms.to_string())
        };
        row(
            "2. urgent status latency p50/p95/p99/max (ms)",
            format!(
                "{}/{}/{}/{}",
                latency("latency_urgent", "p50_ms"),
                latency("latency_urgent", "p95_ms"),
                latency("latency_urgent", "p99_ms"),
                latency("latency_urgent", "max_ms")
            ),
            "p99 < 400",
        );
        row(
            "2. normal item latency p50/p95/p99/max (ms)",
            format!(
                "{}/{}/{}/{}",
                latency("latency_normal", "p50_ms"),
                latency("latency_normal", "p95_ms"),
                latency("latency_normal", "p99_ms"),
                latency("latency_normal", "max_ms")
            ),
            "p99 <= 5000",
        );
    }
    for size in results["scale"]["sizes"].as_array().into_iter().flatten() {
        let sessions = size["sessions"].as_u64().unwrap_or(0);
        row(
            &format!("3. {sessions} sessions: RSS MiB (KiB/session)"),
            format!(
                "{:.0} ({:.1})",
                size["rss_mib"].as_f64().unwrap_or(0.0),
                size["rss_kib_per_session"].as_f64().unwrap_or(0.0)
            ),
            if sessions == 100_000 {
                "<= 1024 MiB"
            } else {
                ""
            },
        );
        row(
            &format!("3. {sessions} sessions: start s | SIGTERM s | restore s"),
            format!(
                "{:.1} | {:.1} | {:.1}",
                size["start_seconds"].as_f64().unwrap_or(0.0),
                size["shutdown_seconds"].as_f64().unwrap_or(0.0),
                size["restore_seconds"].as_f64().unwrap_or(0.0)
            ),
            "",
        );
        row(
            &format!("3. {sessions} sessions: % of a core per 1k events/s"),
            format!(
                "{:.2}",
                size["cpu_percent_per_1k_events_per_second"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
            "<= 15 %",
        );
    }
    let api = &results["control_api"];
    if !api.is_null() {
        for (name, key) in [
            ("GET /health", "health"),
            ("GET /sessions/{id}", "session_inspection"),
        ] {
            row(
                &format!("4. {name} at 64 connections: req/s | p99 ms"),
                format!(
                    "{:.0} | {:.2}",
                    api[key]["requests_per_second"].as_f64().unwrap_or(0.0),
                    api[key]["p99_ms"].as_f64().unwrap_or(f64::NAN)
                ),
                if key == "health" {
                    ">= 20000 req/s"
                } else {
                    ""
                },
            );
        }
    }
    let recovery = &results["recovery"];
    if !recovery.is_null() {
        row(
            &format!(
                "5. after {} s down: drain seconds | peak req/s",
                recovery["outage_seconds"]
            ),
            format!(
                "{:.1} | {}",
                recovery["drain_seconds"].as_f64().unwrap_or(0.0),
                recovery["peak_requests_per_second_while_draining"]
            ),
            "",
        );
        let rss: Vec<String> = recovery["rss_mib_during_outage"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|mib| format!("{:.0}", mib.as_f64().unwrap_or(0.0)))
            .collect();
        row("5. RSS MiB during the outage", rss.join(" "), "flat");
    }
    let render = &results["render"];
    if !render.is_null() {
        let us = |phase: &str| render["us_per_qr"][phase].as_f64().unwrap_or(f64::NAN);
        row(
            "6. QR rendering µs: modules/bitmap/PNG/base64 = total",
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0} = {:.0}",
                us("modules"),
                us("bitmap"),
                us("png"),
                us("base64"),
                us("total")
            ),
            "",
        );
    }
}
