//! Consolidation speed: 5 agents × 200 findings (target: well under 100 ms), and how the
//! cost grows with the number of findings in one file (target: no worse than quadratic).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use deep_review_consolidator::{consolidate, ConsolidationSettings};

mod synthetic;
use synthetic::{manifest, results};

fn five_agents_by_two_hundred(criterion: &mut Criterion) {
    let manifest = manifest(5);
    let settings = ConsolidationSettings::default();
    let input = results(5, 200, 40);
    criterion.bench_function("consolidate 5 agents x 200 findings", |bencher| {
        bencher.iter(|| {
            consolidate(
                black_box(&manifest),
                black_box(input.clone()),
                &settings,
                Utc::now(),
            )
        })
    });
}

fn growth_within_one_file(criterion: &mut Criterion) {
    let manifest = manifest(5);
    let settings = ConsolidationSettings::default();
    let mut group = criterion.benchmark_group("findings in one file (5 agents)");
    for per_agent in [25, 50, 100, 200] {
        let input = results(5, per_agent, 1);
        group.bench_with_input(
            BenchmarkId::from_parameter(per_agent * 5),
            &input,
            |bencher, input| {
                bencher.iter(|| {
                    consolidate(
                        black_box(&manifest),
                        black_box(input.clone()),
                        &settings,
                        Utc::now(),
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, five_agents_by_two_hundred, growth_within_one_file);
criterion_main!(benches);
