//! `deep-review agents stats`: the agent ledger summed per agent, so an operator can see
//! which agents are worth their cost across many reviews.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use deep_review_protocol::{AgentStats, LedgerEntry};
use deep_review_transport::{MemoryResultStore, RedisResultStore, RedisSettings, ResultStore};

use crate::settings::Settings;

/// `deep-review agents`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Per agent over the ledger: reviews, findings, unique-insight, false-positive and
    /// failure rates, tokens and cost per confirmed finding.
    Stats(StatsArguments),
}

/// `deep-review agents stats`.
#[derive(Debug, Args)]
pub struct StatsArguments {
    /// Only reviews of this repository (`owner/repo`).
    #[arg(long, value_name = "OWNER/REPO")]
    repository: Option<String>,
    /// Only reviews published since then: an age (`30d`, `12h`) or an RFC 3339 time.
    #[arg(long, default_value = "30d", value_name = "AGE|TIME")]
    since: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Read the distributed services' ledger in Redis (`distributed.redis_url`) rather
    /// than embedded reviews' ledger file (`review.ledger_file`).
    #[arg(long)]
    distributed: bool,
}

pub async fn agents(settings: &Settings, command: AgentsCommand) -> anyhow::Result<ExitCode> {
    let AgentsCommand::Stats(arguments) = command;
    let since = crate::services::parse_since(&arguments.since)?;
    let entries: Vec<LedgerEntry> = if arguments.distributed {
        let store = RedisResultStore::connect(RedisSettings {
            url: settings.distributed.redis_url.clone(),
            prefix: settings.distributed.prefix.clone(),
            ttl: settings.distributed.result_ttl,
        })
        .await
        .context("reading the agent ledger in Redis")?;
        store.ledger(since, arguments.repository.as_deref()).await?
    } else {
        let store = MemoryResultStore::new();
        store.keep_ledger_in(settings.ledger_file());
        store.ledger(since, arguments.repository.as_deref()).await?
    };
    let stats = AgentStats::summarise(&entries);
    if arguments.json {
        let rows: Vec<serde_json::Value> = stats.iter().map(json_row).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() {
        println!("No reviews in the ledger since {since}.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<12} {:>7} {:>8} {:>7} {:>6} {:>6} {:>8} {:>10} {:>11}",
        "agent",
        "runner",
        "reviews",
        "findings",
        "unique",
        "FP",
        "fails",
        "tokens",
        "cost",
        "$/confirmed"
    );
    for row in &stats {
        println!(
            "{:<20} {:<12} {:>7} {:>8} {:>6.0}% {:>5.0}% {:>5.0}% {:>8} {:>10} {:>11}",
            row.agent,
            row.runner,
            row.reviews,
            row.total_findings(),
            row.unique_insight_rate() * 100.0,
            row.false_positive_rate() * 100.0,
            row.failure_rate() * 100.0,
            row.tokens,
            format!("${:.2}", row.cost_usd),
            row.cost_per_confirmed()
                .map(|cost| format!("${cost:.2}"))
                .unwrap_or_else(|| "—".to_string()),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A row with its rates spelled out.
fn json_row(row: &AgentStats) -> serde_json::Value {
    let mut value = serde_json::to_value(row).unwrap_or_default();
    value["unique_insight_rate"] = row.unique_insight_rate().into();
    value["false_positive_rate"] = row.false_positive_rate().into();
    value["failure_rate"] = row.failure_rate().into();
    value["cost_per_confirmed_usd"] = row.cost_per_confirmed().into();
    value
}
