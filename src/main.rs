//! `deep-review`: multi-agent code review. This binary only parses the command line and
//! wires the library crates together.

mod bench;
mod commands;
mod embedded;
mod evaluation;
mod judge;
mod ledger;
mod narrator;
mod progress;
mod services;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Several independent AI reviewers, one consolidated report.
#[derive(Debug, Parser)]
#[command(name = "deep-review", version, about)]
struct Cli {
    /// Configuration file (default: ./deep-review.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log filter, e.g. `info` or `deep_review_worker=debug` (RUST_LOG also works).
    /// Default: `info` for the services, `warn` otherwise.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Review a local change (or a diff) in this process and write the report.
    Review(commands::ReviewArguments),
    /// Send a review to the scheduler; with --wait, write its report like `review` does.
    Submit(services::SubmitArguments),
    /// Run the scheduler service: the HTTP API that accepts reviews.
    Scheduler,
    /// Run a worker service: consume tasks, run agents, store results.
    Worker,
    /// Run the consolidator service: build and publish reports.
    Consolidator,
    /// Schedule reviews of an organisation's open pull requests that have none at their
    /// head, through the distributed services.
    Sweep(services::SweepArguments),
    /// Measure throughput and orchestration overhead against a bare RabbitMQ + Redis floor.
    Bench(bench::BenchArguments),
    /// Rebuild a report from saved agent results (`agents/<agent>.json`).
    Consolidate(commands::ConsolidateArguments),
    /// Run the line-up over changes with known bugs; print precision, recall and F1 per
    /// agent and for the consolidated report.
    Eval(evaluation::EvaluationArguments),
    /// What the agent ledger says about each agent across reviews.
    Agents {
        #[command(subcommand)]
        command: ledger::AgentsCommand,
    },
    /// Print the JSON Schema of a protocol type.
    Schema {
        /// Which type.
        #[arg(value_enum)]
        kind: SchemaKind,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaKind {
    /// What agents and tools write: one agent's result.
    AgentResult,
    /// The consolidated report (`report.json`).
    Report,
    /// What a `command` agent reads on stdin.
    AgentTask,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the merged configuration (defaults, file, environment), secrets redacted.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(
        cli.command,
        Command::Scheduler | Command::Worker | Command::Consolidator
    );
    let default_filter = if service { "info" } else { "warn" };
    // Before the runtime: the OTLP exporter's blocking HTTP client must live outside it.
    let tracing = match init_tracing(&cli, default_filter, service) {
        Ok(tracing) => tracing,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    // Flushes the spans still buffered, outside the runtime.
    tracing.shutdown();
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::AgentResult => deep_review_protocol::agent_result_schema(),
                SchemaKind::Report => deep_review_protocol::report_schema(),
                SchemaKind::AgentTask => deep_review_protocol::agent_task_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Show,
        } => {
            let settings = settings::Settings::load(cli.config.as_deref())?;
            print!("{}", settings.to_redacted_toml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Review(arguments) => {
            let settings = settings::Settings::load(cli.config.as_deref())?;
            commands::review(&settings, arguments).await
        }
        Command::Submit(arguments) => {
            let settings = settings::Settings::load(cli.config.as_deref())?;
            services::submit(&settings, arguments).await
        }
        Command::Scheduler => {
            services::scheduler(&settings::Settings::load(cli.config.as_deref())?).await
        }
        Command::Worker => {
            services::worker(&settings::Settings::load(cli.config.as_deref())?).await
        }
        Command::Consolidator => {
            services::consolidator(&settings::Settings::load(cli.config.as_deref())?).await
        }
        Command::Sweep(arguments) => {
            services::sweep(&settings::Settings::load(cli.config.as_deref())?, arguments).await
        }
        Command::Bench(arguments) => {
            bench::run(&settings::Settings::load(cli.config.as_deref())?, arguments).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Consolidate(arguments) => {
            let settings = settings::Settings::load(cli.config.as_deref())?;
            commands::consolidate(&settings, arguments).await
        }
        Command::Agents { command } => {
            let settings = settings::Settings::load(cli.config.as_deref())?;
            ledger::agents(&settings, command).await
        }
        Command::Eval(arguments) => {
            let settings = settings::Settings::load(cli.config.as_deref())?;
            evaluation::evaluate(&settings, arguments).await
        }
    }
}

/// Text on a terminal; JSON lines for services writing to a file or a collector, with
/// the review id, agent and trace id of the current spans on every line. Spans are exported
/// over OTLP when the standard `OTEL_*` variables say so.
fn init_tracing(
    cli: &Cli,
    default_filter: &str,
    service: bool,
) -> Result<deep_review_telemetry::Tracing, deep_review_telemetry::TracingError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default_filter))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = if service && !terminal {
        deep_review_telemetry::LogFormat::Json
    } else {
        deep_review_telemetry::LogFormat::Text { ansi: terminal }
    };
    let role = match cli.command {
        Command::Scheduler => "scheduler",
        Command::Worker => "worker",
        Command::Consolidator => "consolidator",
        _ => "cli",
    };
    deep_review_telemetry::init_tracing(&format!("deep-review-{role}"), filter, format)
}
