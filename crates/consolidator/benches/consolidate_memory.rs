//! Peak memory of consolidating 20,000 findings (2 agents × 10,000), against the memory the
//! input itself holds, measured in the same process. Target: the whole process stays under
//! 200 MB. Exits non-zero when it does not.
//!
//! `cargo bench -p deep-review-consolidator --bench consolidate_memory`

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::process::ExitCode;
use std::time::Instant;

use chrono::Utc;
use deep_review_consolidator::{consolidate, ConsolidationSettings};

mod synthetic;
use synthetic::{manifest, results};

const LIMIT_MEGABYTES: f64 = 200.0;

/// A `/proc/self/status` figure (`VmRSS`, `VmHWM`), in megabytes.
fn status_megabytes(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(field)?.strip_prefix(':')?;
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kilobytes| kilobytes / 1024.0)
}

/// Resets the process's peak resident set (`VmHWM`) to its current size, so each case's
/// peak is its own.
fn reset_peak() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("cannot reset the peak resident set: {error}");
    }
}

fn main() -> ExitCode {
    let manifest = manifest(2);
    let input = results(2, 10_000, 40);
    let findings: usize = input.iter().map(|result| result.findings.len()).sum();
    println!("input: {findings} findings (2 agents × 10,000 over 40 files)");

    let mut within_limit = true;
    for (case, settings) in [
        (
            "default settings (max_findings_per_agent = 500)",
            ConsolidationSettings::default(),
        ),
        (
            "no cap (max_findings_per_agent = 10,000): every finding grouped",
            ConsolidationSettings {
                max_findings_per_agent: 10_000,
                ..ConsolidationSettings::default()
            },
        ),
    ] {
        let owned = input.clone();
        // The baseline: the process holding the input, measured in the same run.
        let baseline = status_megabytes("VmRSS");
        reset_peak();
        let started = Instant::now();
        let report = consolidate(&manifest, owned, &settings, Utc::now());
        let elapsed = started.elapsed();
        let peak = status_megabytes("VmHWM");
        println!(
            "{case}: {} consolidated findings in {:.2} s; process peak {peak:.1} MB, \
             {:.1} MB above the {baseline:.1} MB holding the input ({:.2}× that baseline)",
            report.findings.len(),
            elapsed.as_secs_f64(),
            peak - baseline,
            peak / baseline
        );
        within_limit &= peak < LIMIT_MEGABYTES;
    }
    if within_limit {
        println!("target met: peak under {LIMIT_MEGABYTES} MB");
        ExitCode::SUCCESS
    } else {
        println!("target missed: peak over {LIMIT_MEGABYTES} MB");
        ExitCode::FAILURE
    }
}
