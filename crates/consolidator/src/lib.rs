//! The consolidator: merges the agents' results into one report, renders it (Markdown,
//! HTML, JSON) and publishes it.

mod engine;
pub mod evaluation;
mod grouping;
mod narrate;
mod publish;
mod quality;
pub mod render;
mod service;
mod similarity;
mod summary;

pub use engine::{consolidate, ConsolidationSettings, VerdictRules};
pub use narrate::{narrate, Narration, Narrator};
pub use publish::{
    safe_file_name, FilesPublisher, OutputFormat, PublishError, Publisher, StorePublisher,
};
pub use quality::{run_quality_gauges, QualityGaugeSettings, QualityWindow};
pub use service::{Consolidator, ConsolidatorError, ConsolidatorSettings};

/// FNV-1a: stable across runs and platforms, so groupings and file names never depend on a
/// random seed.
pub(crate) fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `19 min 7 s`, `4.2 s`, `350 ms`: durations as the report shows them.
pub fn format_duration(milliseconds: u64) -> String {
    if milliseconds < 1_000 {
        return format!("{milliseconds} ms");
    }
    let seconds = milliseconds / 1_000;
    if seconds < 60 {
        return format!("{:.1} s", milliseconds as f64 / 1_000.0);
    }
    let (hours, minutes, seconds) = (seconds / 3_600, (seconds / 60) % 60, seconds % 60);
    if hours > 0 {
        format!("{hours} h {minutes} min")
    } else {
        format!("{minutes} min {seconds} s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_the_seeds() {
        assert_eq!(super::format_duration(350), "350 ms");
        assert_eq!(super::format_duration(4_240), "4.2 s");
        assert_eq!(super::format_duration(1_147_000), "19 min 7 s");
        assert_eq!(super::format_duration(7_260_000), "2 h 1 min");
    }
}
