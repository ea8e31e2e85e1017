//! `cargo bench -p mimamori-bench [-- --quick | --smoke] [--json]`: the whole comparison in
//! one run (see docs/performance.md). The table goes to stdout, or one JSON document with
//! `--json`; progress goes to stderr.

use std::process::ExitCode;

use mimamori_bench::{Options, Size};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let size = if has("--smoke") {
        Size::Smoke
    } else if has("--quick") {
        Size::Quick
    } else {
        Size::Full
    };
    let opts = Options {
        size,
        // Built in release mode by `cargo bench` before this runs.
        hub_binary: env!("CARGO_BIN_EXE_mimamori-bench-hub").into(),
        broker_binary: env!("CARGO_BIN_EXE_mimamori-bench-broker").into(),
        postgres: std::env::var("MIMAMORI_BENCH_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        stages: args
            .iter()
            .find_map(|a| a.strip_prefix("--only="))
            .map(|list| list.split(',').map(String::from).collect())
            .unwrap_or_default(),
        keep: has("--keep"),
        soak_rate: args
            .iter()
            .find_map(|a| a.strip_prefix("--soak-rate="))
            .and_then(|r| r.parse().ok()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mimamori_bench::run(&opts)) {
        Ok(report) if has("--json") => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
