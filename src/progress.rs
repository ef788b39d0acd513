//! Live per-agent progress of an embedded review: spinners on a terminal, plain lines
//! otherwise (CI logs, pipes).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use deep_review_consolidator::format_duration;
use deep_review_protocol::AgentStatus;
use deep_review_worker::ProgressEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows what each agent is doing.
pub enum Progress {
    /// Spinners, one per agent.
    Terminal {
        bars: HashMap<String, ProgressBar>,
        /// Kept alive so the bars keep drawing.
        _multi: MultiProgress,
    },
    /// One line per state change on stderr.
    Lines { started: Instant },
}

impl Progress {
    /// Progress for `agents`, as spinners when stderr is a terminal.
    pub fn new(agents: &[String]) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines {
                started: Instant::now(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = agents.iter().map(String::len).max().unwrap_or(8);
        let style = ProgressStyle::with_template(&format!(
            "{{spinner:.cyan}} {{prefix:{width}}}  {{msg}} {{elapsed:.dim}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = agents
            .iter()
            .map(|agent| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(agent.clone());
                bar.set_message("queued");
                (agent.clone(), bar)
            })
            .collect();
        Progress::Terminal {
            bars,
            _multi: multi,
        }
    }

    /// Shows `event`.
    pub fn show(&mut self, event: &ProgressEvent) {
        match self {
            Progress::Terminal { bars, .. } => match event {
                ProgressEvent::Started { agent, .. } => {
                    if let Some(bar) = bars.get(agent) {
                        bar.reset_elapsed();
                        bar.set_message("running");
                        bar.enable_steady_tick(Duration::from_millis(100));
                    }
                }
                ProgressEvent::Finished { agent, .. } => {
                    if let Some(bar) = bars.get(agent) {
                        bar.set_style(
                            ProgressStyle::with_template("{prefix}  {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        let prefix = format!("{} {}", mark(event), agent);
                        bar.set_prefix(prefix);
                        bar.finish_with_message(describe(event));
                    }
                }
            },
            Progress::Lines { started } => {
                let at = format_duration(
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                );
                match event {
                    ProgressEvent::Started { agent, .. } => eprintln!("[{at:>9}] {agent}: running"),
                    ProgressEvent::Finished { agent, .. } => {
                        eprintln!("[{at:>9}] {agent}: {}", describe(event))
                    }
                }
            }
        }
    }

    /// Stops drawing; bars of agents that never finished are cleared.
    pub fn finish(self) {
        if let Progress::Terminal { bars, .. } = self {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon_with_message("no result");
                }
            }
        }
    }
}

fn mark(event: &ProgressEvent) -> &'static str {
    match event {
        ProgressEvent::Finished {
            status: AgentStatus::Completed,
            ..
        } => "✔",
        ProgressEvent::Finished { .. } => "✖",
        ProgressEvent::Started { .. } => "…",
    }
}

fn describe(event: &ProgressEvent) -> String {
    match event {
        ProgressEvent::Started { .. } => "running".to_string(),
        ProgressEvent::Finished {
            status,
            duration,
            findings,
            error,
            ..
        } => {
            let took = format_duration(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
            match (status, error) {
                (AgentStatus::Completed, _) => format!("done in {took}, findings: {findings}"),
                (status, Some(error)) => format!("{} after {took}: {error}", status.label()),
                (status, None) => format!("{} after {took}", status.label()),
            }
        }
    }
}
