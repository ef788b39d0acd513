//! The embedded mode: scheduler, workers and consolidator in one process over the
//! in-memory queue and store. No services, no keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use deep_review_consolidator::{Consolidator, ConsolidatorSettings, FilesPublisher, Publisher};
use deep_review_git::Repository;
use deep_review_protocol::{Report, ReviewRequest, RunnerKind, Source};
use deep_review_scheduler::{Scheduler, SchedulerSettings};
use deep_review_transport::{CancellationToken, MemoryResultStore, MemoryTaskQueue};
use deep_review_worker::{
    BuiltinRunner, CommandRunner, ModelRunner, PriceTable, PromptBuilder, RunnerSet,
    VendorCliRunner, Worker, WorkerSettings,
};
use tokio::sync::mpsc;

use crate::progress::Progress;
use crate::settings::Settings;

/// Every runner, configured from `settings`. Fails on a prompt template that does not
/// load, so a broken override stops start-up instead of failing every task.
pub fn runners(settings: &Settings) -> anyhow::Result<RunnerSet> {
    let template = (!settings.models.prompt_template.is_empty())
        .then(|| Path::new(&settings.models.prompt_template));
    let prompts = Arc::new(PromptBuilder::new(template)?);
    let prices = Arc::new(PriceTable::new(settings.models.prices.clone()));
    let client = model_client()?;
    let mut set = RunnerSet::new()
        .with(
            RunnerKind::Builtin,
            Arc::new(BuiltinRunner::new(settings.builtin.clone())),
        )
        .with(RunnerKind::Command, Arc::new(CommandRunner::new()));
    for kind in RunnerKind::ALL {
        if kind.is_vendor_cli() {
            set = set.with(
                kind,
                Arc::new(VendorCliRunner::new(
                    kind,
                    Arc::clone(&prompts),
                    Arc::clone(&prices),
                )),
            );
        } else if kind.is_model_api() {
            set = set.with(
                kind,
                Arc::new(ModelRunner::new(
                    kind,
                    client.clone(),
                    Arc::clone(&prompts),
                    Arc::clone(&prices),
                    settings.models.runner_settings(),
                )),
            );
        }
    }
    Ok(set)
}

/// The HTTP client of model runners and the narrator.
fn model_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("deep-review/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client for model runners")
}

/// The summary pass of `[narrator]`, when configured.
pub fn narrator(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn deep_review_consolidator::Narrator>>> {
    let Some(agent) = settings.narrator.clone() else {
        return Ok(None);
    };
    let runner = one_shot_runner(settings, &agent)?;
    Ok(Some(crate::narrator::ModelNarrator::new(runner, agent)))
}

/// A model runner for `agent`'s one-shot questions (the narrator's summary, the eval
/// judge's verdicts), with the configured prices and retries.
pub fn one_shot_runner(
    settings: &Settings,
    agent: &deep_review_protocol::AgentSpec,
) -> anyhow::Result<ModelRunner> {
    Ok(ModelRunner::new(
        agent.runner,
        model_client()?,
        Arc::new(PromptBuilder::default()),
        Arc::new(PriceTable::new(settings.models.prices.clone())),
        settings.models.runner_settings(),
    ))
}

/// The verification stage the settings ask for; an error naming the setting when its
/// backend cannot work here.
pub fn verifier(settings: &Settings) -> anyhow::Result<Option<deep_review_worker::Verifier>> {
    deep_review_worker::Verifier::from_settings(&settings.verification)
        .map_err(|error| anyhow::anyhow!("invalid configuration: {error}"))
}

/// Runs one review end to end, writes its files to `out` and returns its job and report.
pub async fn review(
    settings: &Settings,
    request: ReviewRequest,
    out: &Path,
    show_progress: bool,
) -> anyhow::Result<(deep_review_protocol::ReviewJob, Report)> {
    deep_review_worker::configure_agent_isolation(
        settings.review.agent_isolation,
        settings.sandbox_folders(),
    )
    .map_err(|reason| anyhow::anyhow!("invalid configuration: review.{reason}"))?;
    let queue = MemoryTaskQueue::new(settings.review.delivery_limit);
    // Repo context updates of one review reach the next review of the same repository
    // through a file in its git directory, out of the work tree.
    let store = match &request.source {
        Source::LocalRepo { path, .. } => {
            let git_directory = Repository::open(path).await?.common_git_directory().await?;
            MemoryResultStore::with_context_file(
                git_directory
                    .join("deep-review")
                    .join("repository-context.json"),
            )?
        }
        _ => MemoryResultStore::new(),
    };
    store.keep_ledger_in(settings.ledger_file());
    let scheduler = Scheduler::new(
        Arc::new(queue.clone()),
        Arc::new(store.clone()),
        SchedulerSettings {
            default_agents: settings.agents.clone(),
            deadline_grace: settings.review.deadline_grace,
            // Everything runs in this process.
            shared_filesystem: true,
            // Costs are not kept between embedded runs, so no budget applies.
            budget: deep_review_scheduler::Budget::default(),
            lineup_policy: settings.lineup_policy.policy(),
            verification_time: settings.verification.worst_case_time(),
        },
    );
    let job = scheduler
        .submit(request)
        .await
        .context("could not start the review")?;
    let shutdown = CancellationToken::new();

    let (progress_sender, mut progress_events) = mpsc::unbounded_channel();
    let worker = Worker::new(
        Arc::new(queue.clone()),
        Arc::new(store.clone()),
        runners(settings)?,
        WorkerSettings {
            concurrency: settings.review.concurrency,
            scratch_directory: settings.scratch_directory(),
            drain_timeout: Duration::from_secs(5),
            max_backoff: settings.distributed.max_backoff,
        },
    )
    .with_progress(progress_sender)
    .with_verifier(verifier(settings)?);
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));

    let publisher: Arc<dyn Publisher> = Arc::new(
        FilesPublisher::into_directory(out, settings.output.formats.clone())
            .with_secret_masking(deep_review_worker::mask_secrets),
    );
    let consolidator = Consolidator::new(
        Arc::new(store.clone()),
        vec![publisher],
        ConsolidatorSettings {
            consolidation: settings.consolidation.clone(),
            lease: Duration::from_secs(300),
            sweep_interval: Duration::from_millis(250),
            concurrency: 16,
        },
    );
    let consolidator = match narrator(settings)? {
        Some(narrator) => consolidator.with_narrator(narrator),
        None => consolidator,
    };
    let (report_sender, mut reports) = mpsc::unbounded_channel();
    let consolidator_shutdown = shutdown.clone();
    let consolidator_task =
        tokio::spawn(Arc::new(consolidator).run(consolidator_shutdown, Some(report_sender)));

    let agent_names: Vec<String> = job.agents.iter().map(|agent| agent.name.clone()).collect();
    let mut progress = show_progress.then(|| Progress::new(&agent_names));
    let outcome = loop {
        tokio::select! {
            Some(event) = progress_events.recv() => {
                if let Some(progress) = progress.as_mut() {
                    progress.show(&event);
                }
            }
            report = reports.recv() => match report {
                Some(report) if report.review_id == job.id => break Ok((job.clone(), report)),
                Some(_) => {}
                None => break Err(anyhow!("the consolidator stopped before writing the report")),
            },
            _ = tokio::signal::ctrl_c() => break Err(anyhow!("interrupted; no report was written")),
        }
    };
    // Drain progress that raced with the report so every agent's line is shown.
    while let Ok(event) = progress_events.try_recv() {
        if let Some(progress) = progress.as_mut() {
            progress.show(&event);
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    shutdown.cancel();
    queue.close();
    if let Ok(Err(error)) = worker_task.await {
        tracing::warn!(%error, "worker stopped with an error");
    }
    if let Ok(Err(error)) = consolidator_task.await {
        tracing::warn!(%error, "consolidator stopped with an error");
    }
    outcome
}
