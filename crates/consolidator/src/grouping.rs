//! Which agents' findings describe the same problem.
//!
//! Each pair of findings from different agents is scored from signals a reader can check:
//! where they point (the same line, one range inside the other, overlapping, a few lines
//! apart), the code they quote, the identifiers they name, their category and their text
//! (TF-IDF weighted, so words every finding uses count little, and measured against the
//! shorter text, so a short paraphrase of a long description still matches).
//!
//! Two rules let a pair merge:
//! - **same place**: the geometric mean of the place score and the content score reaches
//!   the threshold, so neither a shared line with different content nor similar words at
//!   different lines is enough on its own;
//! - **same content**: near-identical titles or identical quoted code, wherever they point.
//!
//! Findings linked by mergeable pairs form regions. Within a region, the agents' findings are
//! assigned to groups one agent at a time by a maximum-weight matching (Kuhn-Munkres), so each
//! agent contributes at most one finding per group and the assignment is the best in total,
//! not first-come. A finding joins a group when it may merge with one of the group's members
//! and its mean score against all of them reaches four fifths of the threshold, so a finding
//! that matches one member but not the others cannot chain two problems together.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use deep_review_protocol::{Finding, GroupingEvidence, GroupingRule};
use pathfinding::prelude::{kuhn_munkres, Matrix};
use pulldown_cmark::{Event, Parser, Tag, TagEnd};

use crate::engine::ConsolidationSettings;
use crate::similarity::{shared, tokens, Interner};
use crate::stable_hash;

/// Matrices larger than this (rows × columns) are assigned greedily, best pair first:
/// Kuhn-Munkres is cubic, and a region that large is a pathological input.
const LARGEST_MATCHING: usize = 300 * 300;
/// Regions with more groups than this are not re-joined after the assignment (the pass is
/// quadratic in groups per step).
const LARGEST_JOIN: usize = 200;
/// Tokens or code lines shared by more findings than this are too common to propose
/// candidates for the same-content rule (they still count in the scores).
const COMMON_POSTING: usize = 32;
/// The place's share in the same-place score, a weighted geometric mean of the place and
/// content scores. Slightly over half: agents describe one bug in very different words far
/// more often than they point two different bugs at the same lines.
const PLACE_WEIGHT: f64 = 0.6;
/// The share of the threshold a finding's mean score against a group must reach.
const GROUP_MEAN_SHARE: f64 = 0.8;
/// Findings assumed beyond the review's own when weighing words (see [`Scorer::new`]).
const BACKGROUND_FINDINGS: f64 = 10.0;
/// Scores are compared as integers in the matching; this many steps per unit.
const SCORE_STEPS: f64 = 1_000_000.0;

/// One agent finding during grouping, with what the signals need precomputed.
pub(crate) struct Item {
    /// The agent that reported it.
    pub agent: String,
    /// The agent's position in the line-up; unique per agent.
    pub rank: usize,
    /// The finding as reported.
    pub finding: Finding,
    /// Interned title tokens, sorted.
    title: Vec<u32>,
    /// Interned title and body tokens, sorted.
    text: Vec<u32>,
    /// Interned identifiers named in the title, body or code, sorted.
    identifiers: Vec<u32>,
    /// Hashes of the normalised lines of code it quotes, sorted.
    code: Vec<u64>,
    /// Lower-cased category, when given.
    category: Option<String>,
    /// Its locations, with interned paths.
    places: Vec<Place>,
}

/// How two locations in one file relate, kept as numbers until a reader needs the words.
#[derive(Debug, Clone, Copy)]
enum PlaceRelation {
    SameLines(u32, u32),
    SameFirstLine(u32),
    Inside {
        inner: (u32, u32),
        outer: (u32, u32),
    },
    Overlapping(u32, u32),
    Apart(u32),
    SameFile,
}

#[derive(Debug, Clone, Copy)]
struct Place {
    path: u32,
    /// `None` for a whole-file location.
    lines: Option<(u32, u32)>,
}

/// One group of items (indices into the item list) and why each joined.
pub(crate) struct Group {
    pub members: Vec<usize>,
    pub evidence: Vec<GroupingEvidence>,
}

/// Builds the items of `findings` (agent, rank, finding) with shared interning and weights.
pub(crate) struct ItemBuilder {
    interner: Interner,
    items: Vec<Item>,
}

impl ItemBuilder {
    pub fn new() -> Self {
        ItemBuilder {
            interner: Interner::default(),
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, agent: &str, rank: usize, finding: &Finding) {
        let interner = &mut self.interner;
        let quoted = QuotedCode::of(finding);
        let mut identifier_set = identifiers_in_prose(&finding.title);
        identifier_set.extend(identifiers_in_prose(&quoted.prose));
        identifier_set.extend(identifiers_in_code(&quoted.code.join("\n")));
        let places = finding
            .locations
            .iter()
            .map(|location| Place {
                path: interner.id(&location.path),
                lines: location.span(),
            })
            .collect();
        let mut code: Vec<u64> = quoted
            .code
            .iter()
            .filter_map(|line| normalised_code_line(line))
            // The top bit stays free: the candidate index marks code lines with it.
            .map(|line| stable_hash(&line) >> 1)
            .collect();
        code.sort_unstable();
        code.dedup();
        self.items.push(Item {
            agent: agent.to_string(),
            rank,
            title: interner.ids(&tokens(&finding.title)),
            text: interner.ids(&tokens(&format!("{} {}", finding.title, finding.body))),
            identifiers: interner.ids(&identifier_set),
            code,
            category: finding
                .category
                .as_ref()
                .map(|category| category.trim().to_lowercase())
                .filter(|category| !category.is_empty()),
            places,
            finding: finding.clone(),
        });
    }

    /// The items, and the text each interned id stands for (paths and identifiers, for the
    /// evidence text).
    pub fn finish(self) -> (Vec<Item>, HashMap<u32, String>) {
        (self.items, self.interner.names())
    }
}

/// Groups `items` (sorted canonically) so that each group holds one problem, with at most
/// one finding per agent.
pub(crate) fn group(
    items: &[Item],
    names: &HashMap<u32, String>,
    settings: &ConsolidationSettings,
) -> Vec<Group> {
    let scorer = Scorer::new(items, names, settings);
    let edges = scorer.mergeable_pairs();

    // Regions: items linked by mergeable pairs, found with a union-find.
    let mut parent: Vec<usize> = (0..items.len()).collect();
    fn root(parent: &mut [usize], mut index: usize) -> usize {
        while parent[index] != index {
            parent[index] = parent[parent[index]];
            index = parent[index];
        }
        index
    }
    for &(left, right) in edges.keys() {
        let (left_root, right_root) = (root(&mut parent, left), root(&mut parent, right));
        if left_root != right_root {
            parent[left_root.max(right_root)] = left_root.min(right_root);
        }
    }
    let mut regions: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for index in 0..items.len() {
        let region = root(&mut parent, index);
        regions.entry(region).or_default().push(index);
    }

    let mut groups = Vec::new();
    for members in regions.into_values() {
        if members.len() == 1 {
            groups.push(Group {
                members,
                evidence: Vec::new(),
            });
            continue;
        }
        groups.extend(group_region(&scorer, &edges, &members));
    }
    groups
}

/// Assigns one region's items to groups, agent by agent in line-up order.
fn group_region(
    scorer: &Scorer<'_>,
    edges: &HashMap<(usize, usize), PairScore>,
    members: &[usize],
) -> Vec<Group> {
    let items = scorer.items;
    let mut by_agent: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &member in members {
        by_agent.entry(items[member].rank).or_default().push(member);
    }
    let pair = |left: usize, right: usize| -> PairScore {
        let key = (left.min(right), left.max(right));
        edges
            .get(&key)
            .cloned()
            .unwrap_or_else(|| scorer.score(key.0, key.1, false))
    };
    let threshold = scorer.settings.merge_threshold;
    let mut groups: Vec<Group> = Vec::new();
    for (_, agent_items) in by_agent {
        // Linkage of each of this agent's items to each group: eligible when its best member
        // is a mergeable pair and its mean score against all members reaches four fifths
        // of the threshold; weighted by the best pair's score.
        let mut links: Vec<Vec<Option<Link>>> = Vec::new();
        for &item in &agent_items {
            let row = groups
                .iter()
                .map(|group| {
                    let scores: Vec<(usize, PairScore)> = group
                        .members
                        .iter()
                        .map(|&member| (member, pair(item, member)))
                        .collect();
                    let mean = scores.iter().map(|(_, score)| score.score).sum::<f64>()
                        / scores.len() as f64;
                    let (best_member, best) = scores
                        .into_iter()
                        .filter(|(_, score)| score.rule.is_some())
                        .max_by(|left, right| left.1.score.total_cmp(&right.1.score))?;
                    (mean >= GROUP_MEAN_SHARE * threshold).then_some(Link {
                        mean,
                        best_member,
                        best,
                    })
                })
                .collect();
            links.push(row);
        }
        let assignment = assign(&links);
        let mut joined = vec![false; agent_items.len()];
        for (row, column) in assignment {
            let Some(Link {
                mean,
                best_member,
                best,
            }) = links[row][column].clone()
            else {
                continue;
            };
            joined[row] = true;
            let item = &items[agent_items[row]];
            groups[column].evidence.push(GroupingEvidence {
                agent: item.agent.clone(),
                original_id: item.finding.id.clone(),
                matched_agent: items[best_member].agent.clone(),
                score: round_score(best.score),
                group_mean: round_score(mean),
                threshold,
                rule: best.rule.unwrap_or(GroupingRule::SamePlace),
                // Worded only now, for the pairs that merged.
                signals: scorer
                    .score(
                        agent_items[row].min(best_member),
                        agent_items[row].max(best_member),
                        true,
                    )
                    .signals,
            });
            groups[column].members.push(agent_items[row]);
        }
        for (row, &item) in agent_items.iter().enumerate() {
            if !joined[row] {
                groups.push(Group {
                    members: vec![item],
                    evidence: Vec::new(),
                });
            }
        }
    }
    join_groups(scorer, &pair, &mut groups);
    groups
}

/// Agents are added in line-up order, so a finding of an early agent can be left alone only
/// because the finding that links it to a group came from a later agent. Joins groups of
/// disjoint agents that may merge (a mergeable pair between them, and a mean over all their
/// pairs of at least four fifths of the threshold), best first.
fn join_groups(
    scorer: &Scorer<'_>,
    pair: &dyn Fn(usize, usize) -> PairScore,
    groups: &mut Vec<Group>,
) {
    if groups.len() > LARGEST_JOIN {
        return;
    }
    let items = scorer.items;
    let threshold = scorer.settings.merge_threshold;
    loop {
        let mut best: Option<GroupJoin> = None;
        for first in 0..groups.len() {
            for second in first + 1..groups.len() {
                let shares_agent = groups[first].members.iter().any(|&one| {
                    groups[second]
                        .members
                        .iter()
                        .any(|&other| items[one].rank == items[other].rank)
                });
                if shares_agent {
                    continue;
                }
                let scores: Vec<(usize, usize, PairScore)> = groups[first]
                    .members
                    .iter()
                    .flat_map(|&one| {
                        groups[second]
                            .members
                            .iter()
                            .map(move |&other| (one, other))
                    })
                    .map(|(one, other)| (other, one, pair(one, other)))
                    .collect();
                let mean = scores.iter().map(|(_, _, score)| score.score).sum::<f64>()
                    / scores.len() as f64;
                let Some((joining, matched, linking)) = scores
                    .iter()
                    .filter(|(_, _, score)| score.rule.is_some())
                    .max_by(|left, right| left.2.score.total_cmp(&right.2.score))
                else {
                    continue;
                };
                let weight = (linking.score + mean) / 2.0;
                if mean >= GROUP_MEAN_SHARE * threshold
                    && best.as_ref().is_none_or(|best| weight > best.weight)
                {
                    best = Some(GroupJoin {
                        weight,
                        kept: first,
                        absorbed: second,
                        mean,
                        joining: *joining,
                        matched: *matched,
                    });
                }
            }
        }
        let Some(GroupJoin {
            kept,
            absorbed,
            mean,
            joining,
            matched,
            ..
        }) = best
        else {
            return;
        };
        let absorbed = groups.remove(absorbed);
        let kept = &mut groups[kept];
        // The absorbed group's own evidence says how its members joined each other; this
        // entry says which pair links it to the kept group.
        let linking = scorer.score(joining.min(matched), joining.max(matched), true);
        kept.evidence.push(GroupingEvidence {
            agent: items[joining].agent.clone(),
            original_id: items[joining].finding.id.clone(),
            matched_agent: items[matched].agent.clone(),
            score: round_score(linking.score),
            group_mean: round_score(mean),
            threshold,
            rule: linking.rule.unwrap_or(GroupingRule::SamePlace),
            signals: linking.signals,
        });
        kept.members.extend(absorbed.members);
        kept.evidence.extend(absorbed.evidence);
    }
}

/// Two groups that may be joined, and why.
struct GroupJoin {
    /// The linking pair's score and the mean, averaged: what the best join maximises.
    weight: f64,
    /// The group that stays, and the one joined into it.
    kept: usize,
    absorbed: usize,
    /// The mean score over every pair across the two groups.
    mean: f64,
    /// The best mergeable pair between them: its member in the absorbed group, then in the
    /// kept one.
    joining: usize,
    matched: usize,
}

/// How one finding may join one group.
#[derive(Debug, Clone)]
struct Link {
    /// Its mean score against the group's members.
    mean: f64,
    /// The member it matches best, and that pair's score.
    best_member: usize,
    best: PairScore,
}

/// The best assignment of rows to columns among the eligible cells: Kuhn-Munkres for
/// matrices up to [`LARGEST_MATCHING`] cells, greedy best-first beyond.
fn assign(links: &[Vec<Option<Link>>]) -> Vec<(usize, usize)> {
    let rows = links.len();
    let columns = links.first().map_or(0, Vec::len);
    if rows == 0 || columns == 0 {
        return Vec::new();
    }
    let weight = |row: usize, column: usize| -> i64 {
        links[row][column].as_ref().map_or(0, |link| {
            ((link.best.score + link.mean) / 2.0 * SCORE_STEPS).round() as i64
        })
    };
    if rows * columns <= LARGEST_MATCHING {
        // Kuhn-Munkres assigns every row, so it needs no more rows than columns.
        let transposed = rows > columns;
        let (height, width) = if transposed {
            (columns, rows)
        } else {
            (rows, columns)
        };
        let mut values = Vec::with_capacity(height * width);
        for first in 0..height {
            for second in 0..width {
                values.push(if transposed {
                    weight(second, first)
                } else {
                    weight(first, second)
                });
            }
        }
        if let Ok(matrix) = Matrix::from_vec(height, width, values) {
            let (_, assigned) = kuhn_munkres(&matrix);
            return assigned
                .into_iter()
                .enumerate()
                .map(|(first, second)| {
                    if transposed {
                        (second, first)
                    } else {
                        (first, second)
                    }
                })
                .filter(|&(row, column)| links[row][column].is_some())
                .collect();
        }
    }
    let mut cells: Vec<(i64, usize, usize)> = (0..rows)
        .flat_map(|row| (0..columns).map(move |column| (row, column)))
        .filter(|&(row, column)| links[row][column].is_some())
        .map(|(row, column)| (weight(row, column), row, column))
        .collect();
    cells.sort_by(|left, right| right.0.cmp(&left.0).then(left.1.cmp(&right.1)));
    let (mut row_taken, mut column_taken) = (vec![false; rows], vec![false; columns]);
    let mut assigned = Vec::new();
    for (_, row, column) in cells {
        if !row_taken[row] && !column_taken[column] {
            row_taken[row] = true;
            column_taken[column] = true;
            assigned.push((row, column));
        }
    }
    assigned
}

/// Two decimals, and never `-0.00` (an empty float sum is negative zero).
fn round_score(score: f64) -> f64 {
    (score * 100.0).round() / 100.0 + 0.0
}

/// A pair's score, the rule that makes it mergeable (if any) and the signals behind it.
#[derive(Debug, Clone)]
struct PairScore {
    score: f64,
    rule: Option<GroupingRule>,
    signals: Vec<String>,
}

/// Scores pairs of items, with inverse document frequencies over this review's findings.
struct Scorer<'a> {
    items: &'a [Item],
    names: &'a HashMap<u32, String>,
    settings: &'a ConsolidationSettings,
    /// Inverse document frequency per interned token or identifier.
    weights: HashMap<u32, f64>,
    /// Each item's total weight over its title, text and identifiers, for normalising.
    norms: Vec<Norms>,
}

struct Norms {
    title: f64,
    text: f64,
    text_squared: f64,
    identifiers: f64,
}

impl<'a> Scorer<'a> {
    fn new(
        items: &'a [Item],
        names: &'a HashMap<u32, String>,
        settings: &'a ConsolidationSettings,
    ) -> Self {
        let mut document_frequency: HashMap<u32, usize> = HashMap::new();
        for item in items {
            let distinct: BTreeSet<u32> =
                item.text.iter().chain(&item.identifiers).copied().collect();
            for id in distinct {
                *document_frequency.entry(id).or_insert(0) += 1;
            }
        }
        // Smoothed as if the review had a few more findings that use none of these words:
        // in a review of three findings, a word all three use is the subject they share,
        // not a common word, and should not weigh a third of a rare one.
        let count = items.len() as f64 + BACKGROUND_FINDINGS;
        let weights: HashMap<u32, f64> = document_frequency
            .into_iter()
            .map(|(id, frequency)| (id, (1.0 + count / (frequency as f64 + 1.0)).ln()))
            .collect();
        let weight = |id: &u32| weights.get(id).copied().unwrap_or(0.0);
        let norms = items
            .iter()
            .map(|item| Norms {
                title: item.title.iter().map(weight).sum(),
                text: item.text.iter().map(weight).sum(),
                text_squared: item.text.iter().map(|id| weight(id).powi(2)).sum(),
                identifiers: item.identifiers.iter().map(weight).sum(),
            })
            .collect();
        Scorer {
            items,
            names,
            settings,
            weights,
            norms,
        }
    }

    fn weight(&self, id: u32) -> f64 {
        self.weights.get(&id).copied().unwrap_or(0.0)
    }

    /// Every mergeable pair of items of different agents, keyed (lower, higher) index.
    fn mergeable_pairs(&self) -> HashMap<(usize, usize), PairScore> {
        let mut scored: HashSet<(usize, usize)> = HashSet::new();
        let mut edges = HashMap::new();
        let mut consider = |left: usize, right: usize, edges: &mut HashMap<_, _>| {
            if self.items[left].rank == self.items[right].rank {
                return;
            }
            let key = (left.min(right), left.max(right));
            if !scored.insert(key) {
                return;
            }
            let score = self.score(key.0, key.1, false);
            if score.rule.is_some() {
                edges.insert(key, score);
            }
        };

        // Same place: per file, places sorted by first line; each is compared with the
        // following places that start within its range plus the proximity.
        let proximity = self.settings.line_proximity;
        let mut by_path: BTreeMap<u32, Vec<(u32, u32, usize)>> = BTreeMap::new();
        let mut whole_file: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (index, item) in self.items.iter().enumerate() {
            for place in &item.places {
                match place.lines {
                    Some((start, end)) => by_path
                        .entry(place.path)
                        .or_default()
                        .push((start, end, index)),
                    None => whole_file.entry(place.path).or_default().push(index),
                }
            }
        }
        for (path, places) in &mut by_path {
            places.sort_unstable();
            for (position, &(_, end, index)) in places.iter().enumerate() {
                for &(start, _, other) in &places[position + 1..] {
                    if start > end.saturating_add(proximity) {
                        break;
                    }
                    consider(index, other, &mut edges);
                }
            }
            for &index in whole_file.get(path).into_iter().flatten() {
                for &(_, _, other) in places.iter() {
                    consider(index, other, &mut edges);
                }
            }
        }
        for indices in whole_file.values() {
            for (position, &index) in indices.iter().enumerate() {
                for &other in &indices[position + 1..] {
                    consider(index, other, &mut edges);
                }
            }
        }

        // Same content anywhere: candidates share a title token or a quoted line that few
        // findings share.
        let mut postings: HashMap<u64, Vec<usize>> = HashMap::new();
        for (index, item) in self.items.iter().enumerate() {
            for &id in &item.title {
                postings.entry(u64::from(id)).or_default().push(index);
            }
            for &line in &item.code {
                // Code hashes and token ids share the map; keep them apart.
                postings.entry(line | (1 << 63)).or_default().push(index);
            }
        }
        let mut keys: Vec<u64> = postings.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let indices = &postings[&key];
            if indices.len() > COMMON_POSTING {
                continue;
            }
            for (position, &index) in indices.iter().enumerate() {
                for &other in &indices[position + 1..] {
                    consider(index, other, &mut edges);
                }
            }
        }
        edges
    }

    /// The score of the pair `left`, `right` and its rule when it may merge; with `explain`,
    /// also the signals worded for a reader (formatting them for every candidate pair would
    /// cost more than scoring).
    fn score(&self, left: usize, right: usize, explain: bool) -> PairScore {
        let (first, second) = (&self.items[left], &self.items[right]);
        let mut signals = Vec::new();

        let (place, place_relation) = self.place_score(first, second);
        if let (true, Some((path, relation))) = (explain, place_relation) {
            signals.push(self.describe_place(path, relation));
        }

        let shared_code = shared(&first.code, &second.code).len();
        let code = if shared_code == 0 {
            0.0
        } else {
            shared_code as f64 / first.code.len().min(second.code.len()) as f64
        };
        if explain && shared_code > 0 {
            signals.push(format!(
                "{} quoted code ({shared_code} line{} in common)",
                if code >= 1.0 {
                    "identical"
                } else {
                    "overlapping"
                },
                plural(shared_code)
            ));
        }

        let shared_identifiers = shared(&first.identifiers, &second.identifiers);
        let identifier_weight: f64 = shared_identifiers.iter().map(|&id| self.weight(id)).sum();
        let identifier_union =
            self.norms[left].identifiers + self.norms[right].identifiers - identifier_weight;
        let identifiers = if identifier_union > 0.0 {
            identifier_weight / identifier_union
        } else {
            0.0
        };
        if explain && !shared_identifiers.is_empty() {
            let names = self.identifier_names(&shared_identifiers);
            signals.push(format!(
                "shared identifiers {names} ({:.2})",
                round_score(identifiers)
            ));
        }

        let title = self.weighted_overlap(
            &first.title,
            &second.title,
            |norms| norms.title,
            left,
            right,
        );
        let text_overlap =
            self.weighted_overlap(&first.text, &second.text, |norms| norms.text, left, right);
        let shared_text_squared: f64 = shared(&first.text, &second.text)
            .iter()
            .map(|&id| self.weight(id).powi(2))
            .sum();
        let cosine_denominator =
            (self.norms[left].text_squared * self.norms[right].text_squared).sqrt();
        let cosine = if cosine_denominator > 0.0 {
            shared_text_squared / cosine_denominator
        } else {
            0.0
        };
        // A short paraphrase of a long description shares little of the long text (a low
        // cosine) but most of its own words: count the overlap with the shorter text, a
        // little discounted since a long text covers many words by chance.
        let text = cosine.max(0.75 * text_overlap).max(title);
        if explain {
            signals.push(format!(
                "text similarity {:.2} (titles {:.2})",
                round_score(text),
                round_score(title)
            ));
        }

        let mut category_factor = 1.0;
        let mut category_evidence = 0.0;
        match (&first.category, &second.category) {
            (Some(one), Some(other)) if one == other => {
                category_evidence = 0.15;
                if explain {
                    signals.push(format!("same category ({one})"));
                }
            }
            (Some(one), Some(other)) => {
                category_factor = 0.8;
                if explain {
                    signals.push(format!("different categories ({one} / {other})"));
                }
            }
            _ => {}
        }

        // Independent pieces of evidence that the content is the same, combined so that
        // each one raises the score and none can exceed 1.
        let content = category_factor
            * (1.0
                - (1.0 - code)
                    * (1.0 - 0.6 * identifiers)
                    * (1.0 - text)
                    * (1.0 - category_evidence));

        let threshold = self.settings.merge_threshold;
        let same_place = if place > 0.0 {
            place.powf(PLACE_WEIGHT) * content.powf(1.0 - PLACE_WEIGHT)
        } else {
            0.0
        };
        // Identical quoted code merges wherever it points only when there is enough of it
        // that two different problems would not quote it all.
        let same_content_applies =
            title >= self.settings.text_similarity || (code >= 1.0 && shared_code >= 3);
        let same_content = if same_content_applies {
            content.max(threshold)
        } else {
            0.0
        };
        let rule = if same_place >= threshold {
            Some(GroupingRule::SamePlace)
        } else if same_content_applies {
            Some(GroupingRule::SameContent)
        } else {
            None
        };
        let score = if rule.is_some() {
            same_place.max(same_content)
        } else {
            // Not mergeable; still a measure of likeness for the mean against a group.
            same_place.max(0.5 * content)
        };
        if explain {
            signals.insert(
                0,
                format!(
                    "place {:.2} × content {:.2}",
                    round_score(place),
                    round_score(content)
                ),
            );
        }
        PairScore {
            score,
            rule,
            signals,
        }
    }

    /// How strongly the two findings' locations say "the same place", from 0 to 1, and
    /// which relation of which file gave that.
    fn place_score(&self, first: &Item, second: &Item) -> (f64, Option<(u32, PlaceRelation)>) {
        let proximity = self.settings.line_proximity;
        let mut best: (f64, Option<(u32, PlaceRelation)>) = (0.0, None);
        for one in &first.places {
            for other in &second.places {
                if one.path != other.path {
                    continue;
                }
                let (score, relation) = match (one.lines, other.lines) {
                    (Some((start, end)), Some((other_start, other_end))) => {
                        let overlap_start = start.max(other_start);
                        let overlap_end = end.min(other_end);
                        if start == other_start && end == other_end {
                            (1.0, PlaceRelation::SameLines(start, end))
                        } else if overlap_start <= overlap_end {
                            // How much of the two ranges together is shared: two long ranges
                            // over mostly the same lines point at one block of code.
                            let shared_lines = f64::from(overlap_end - overlap_start + 1);
                            let all_lines =
                                f64::from(end.max(other_end) - start.min(other_start) + 1);
                            let shared_part = shared_lines / all_lines;
                            let inside = (start >= other_start && end <= other_end)
                                || (other_start >= start && other_end <= end);
                            if start == other_start {
                                (0.9 + 0.1 * shared_part, PlaceRelation::SameFirstLine(start))
                            } else if inside {
                                (
                                    0.75 + 0.2 * shared_part,
                                    PlaceRelation::Inside {
                                        inner: (overlap_start, overlap_end),
                                        outer: (start.min(other_start), end.max(other_end)),
                                    },
                                )
                            } else {
                                (
                                    0.55 + 0.25 * shared_part,
                                    PlaceRelation::Overlapping(overlap_start, overlap_end),
                                )
                            }
                        } else {
                            let gap = overlap_start - overlap_end;
                            if gap > proximity {
                                continue;
                            }
                            let closeness =
                                0.45 - 0.25 * f64::from(gap - 1) / f64::from(proximity.max(1));
                            (closeness.max(0.2), PlaceRelation::Apart(gap))
                        }
                    }
                    _ => (0.5, PlaceRelation::SameFile),
                };
                if score > best.0 {
                    best = (score, Some((one.path, relation)));
                }
            }
        }
        best
    }

    /// `src/a.rs:12 lies inside src/a.rs:10-20` and the like.
    fn describe_place(&self, path: u32, relation: PlaceRelation) -> String {
        let path = self.names.get(&path).map_or("?", String::as_str);
        match relation {
            PlaceRelation::SameLines(start, end) => {
                format!("same lines ({path}:{})", span(start, end))
            }
            PlaceRelation::SameFirstLine(start) => format!("same first line ({path}:{start})"),
            PlaceRelation::Inside { inner, outer } => format!(
                "{path}:{} lies inside {path}:{}",
                span(inner.0, inner.1),
                span(outer.0, outer.1)
            ),
            PlaceRelation::Overlapping(start, end) => {
                format!("overlapping lines ({path}:{})", span(start, end))
            }
            PlaceRelation::Apart(gap) => {
                format!("{gap} line{} apart in {path}", plural(gap as usize))
            }
            PlaceRelation::SameFile => format!("same file ({path}), one names no lines"),
        }
    }

    /// Weighted shared ids over the smaller side's total weight.
    fn weighted_overlap(
        &self,
        first: &[u32],
        second: &[u32],
        norm: fn(&Norms) -> f64,
        left: usize,
        right: usize,
    ) -> f64 {
        let smaller = norm(&self.norms[left]).min(norm(&self.norms[right]));
        if smaller <= 0.0 {
            return 0.0;
        }
        let shared_weight: f64 = shared(first, second)
            .iter()
            .map(|&id| self.weight(id))
            .sum();
        (shared_weight / smaller).min(1.0)
    }

    fn identifier_names(&self, ids: &[u32]) -> String {
        let names: BTreeSet<&str> = ids
            .iter()
            .filter_map(|id| self.names.get(id).map(String::as_str))
            .collect();
        let shown: Vec<String> = names
            .iter()
            .take(5)
            .map(|name| format!("`{name}`"))
            .collect();
        let more = names.len().saturating_sub(5);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }
}

fn span(start: u32, end: u32) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// A finding's quoted code (its excerpt, code blocks and inline code in its body) and the
/// prose around it.
struct QuotedCode {
    code: Vec<String>,
    prose: String,
}

impl QuotedCode {
    fn of(finding: &Finding) -> Self {
        let mut code: Vec<String> = finding
            .code_excerpt
            .iter()
            .flat_map(|excerpt| excerpt.lines().map(str::to_string))
            .collect();
        let mut prose = String::new();
        let mut in_block = false;
        for event in Parser::new(&finding.body) {
            match event {
                Event::Start(Tag::CodeBlock(_)) => in_block = true,
                Event::End(TagEnd::CodeBlock) => in_block = false,
                Event::Text(text) if in_block => {
                    code.extend(text.lines().map(str::to_string));
                }
                Event::Code(text) => code.push(text.to_string()),
                Event::Text(text) => {
                    prose.push_str(&text);
                    prose.push(' ');
                }
                _ => {}
            }
        }
        QuotedCode { code, prose }
    }
}

/// A quoted line with its whitespace folded, when it has enough substance to identify code:
/// not a lone brace or a short word, and not a bare name (`connect_with_retry`,
/// `mark_ready()`), which counts as an identifier rather than as quoted code.
fn normalised_code_line(line: &str) -> Option<String> {
    let line = line.trim();
    // Diff markers from a quoted patch say nothing about the code itself.
    let line = line
        .strip_prefix(['+', '-'])
        .filter(|rest| !rest.starts_with(['+', '-']))
        .unwrap_or(line)
        .trim();
    let folded = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let substance = folded
        .chars()
        .filter(|character| character.is_alphanumeric())
        .count();
    let bare_name = folded.trim_end_matches("()").chars().all(|character| {
        character.is_alphanumeric() || matches!(character, '_' | ':' | '.' | '/' | '-')
    });
    (substance >= 6 && !bare_name).then_some(folded)
}

/// Words so common in code that sharing them says nothing about which code is meant.
const KEYWORDS: [&str; 48] = [
    "fn", "let", "mut", "pub", "use", "impl", "self", "struct", "enum", "match", "return", "else",
    "for", "while", "loop", "true", "false", "null", "nil", "none", "some", "ok", "err", "func",
    "def", "var", "const", "static", "class", "new", "this", "async", "await", "string", "int",
    "bool", "void", "error", "unwrap", "if", "in", "of", "and", "or", "not", "the", "to", "is",
];

fn keep_identifier(word: &str) -> bool {
    word.len() >= 3
        && word
            .chars()
            .next()
            .is_some_and(|first| first.is_alphabetic() || first == '_')
        && !KEYWORDS.contains(&word.to_lowercase().as_str())
}

/// Every identifier-shaped word of quoted code.
fn identifiers_in_code(code: &str) -> BTreeSet<String> {
    code.split(|character: char| !character.is_alphanumeric() && character != '_')
        .filter(|word| keep_identifier(word))
        .map(str::to_lowercase)
        .collect()
}

/// Words of prose that can only be identifiers: `snake_case`, `camelCase`, `Type::path`
/// segments and `call()`s.
fn identifiers_in_prose(prose: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for word in prose.split_whitespace() {
        // `call()`, `Type::item` and `value.field` mark code; a full stop ending a sentence
        // does not.
        let inner = word.trim_end_matches(|character: char| !character.is_alphanumeric());
        let is_call = word.contains("()") || inner.contains("::") || inner.contains('.');
        for part in word.split(|character: char| !character.is_alphanumeric() && character != '_') {
            if !keep_identifier(part) {
                continue;
            }
            let snake = part.contains('_');
            let camel = part
                .chars()
                .zip(part.chars().skip(1))
                .any(|(one, next)| one.is_lowercase() && next.is_uppercase());
            if snake || camel || (is_call && part.len() > 3) {
                found.insert(part.to_lowercase());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_code_comes_from_excerpts_blocks_and_inline_spans() {
        let finding = Finding {
            body: "The call `cache.load(key)` ignores errors:\n\n```rust\nlet value = cache.load(key);\n}\n```\nso it panics."
                .to_string(),
            code_excerpt: Some("    let value   = cache.load(key);".to_string()),
            ..finding_titled("t")
        };
        let quoted = QuotedCode::of(&finding);
        let lines: BTreeSet<String> = quoted
            .code
            .iter()
            .filter_map(|line| normalised_code_line(line))
            .collect();
        assert_eq!(
            lines,
            ["cache.load(key)", "let value = cache.load(key);"]
                .into_iter()
                .map(str::to_string)
                .collect()
        );
        assert!(quoted.prose.contains("ignores errors"));
        assert!(!quoted.prose.contains("let value"));
    }

    #[test]
    fn identifiers_are_code_shaped_words() {
        let found = identifiers_in_prose(
            "The readinessProbe in mark_ready() calls Server::bind before the listener is open",
        );
        assert_eq!(
            found,
            ["bind", "mark_ready", "readinessprobe", "server"]
                .into_iter()
                .map(str::to_string)
                .collect()
        );
        assert!(identifiers_in_code("if ok { return err }").is_empty());
    }

    fn link(score: f64) -> Option<Link> {
        Some(Link {
            mean: score,
            best_member: 0,
            best: PairScore {
                score,
                rule: Some(GroupingRule::SamePlace),
                signals: Vec::new(),
            },
        })
    }

    /// Greedy best-first would take the single strongest cell (row 1, column 0) and leave
    /// row 0 with nothing it may join; the best total pairs both rows.
    #[test]
    fn the_assignment_is_best_in_total_not_first_come() {
        let links = vec![vec![link(0.6), None], vec![link(0.7), link(0.6)]];
        let mut assigned = assign(&links);
        assigned.sort_unstable();
        assert_eq!(assigned, vec![(0, 0), (1, 1)]);
        // More rows than columns: the matrix is transposed for Kuhn-Munkres.
        let links = vec![vec![link(0.5)], vec![link(0.9)], vec![None]];
        assert_eq!(assign(&links), vec![(1, 0)]);
        // Ineligible cells are never assigned, even when nothing else is.
        assert!(assign(&[vec![None, None]]).is_empty());
    }

    fn finding_titled(title: &str) -> Finding {
        Finding {
            id: None,
            severity: deep_review_protocol::Severity::Important,
            title: title.to_string(),
            body: String::new(),
            category: None,
            tag: None,
            locations: Vec::new(),
            code_excerpt: None,
            fix: None,
            confidence: None,
            verification: None,
            reproduction: None,
        }
    }
}
