//! Normalised token similarity, used to decide whether two reports describe one problem.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

/// Words too common in review prose to say anything about which problem is meant.
const STOP_WORDS: [&str; 40] = [
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "is", "are", "be", "it",
    "its", "this", "that", "with", "by", "from", "as", "not", "no", "but", "can", "may", "when",
    "if", "into", "than", "then", "so", "which", "was", "were", "has", "have", "does", "do",
];

/// The English Snowball stemmer, so that `listener`, `listening` and `listens` are one word.
static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Lower-cased, stemmed alphanumeric tokens of `text`, without stop words.
pub fn tokens(text: &str) -> BTreeSet<String> {
    text.split(|character: char| !character.is_alphanumeric() && character != '_')
        .filter(|word| word.len() > 1)
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .map(|word| STEMMER.stem(&word).into_owned())
        .collect()
}

/// Jaccard similarity of two token sets, 0 when both are empty.
pub fn jaccard(left: &BTreeSet<String>, right: &BTreeSet<String>) -> f64 {
    if left.is_empty() && right.is_empty() {
        return 0.0;
    }
    let shared = left.intersection(right).count();
    let union = left.len() + right.len() - shared;
    shared as f64 / union as f64
}

/// Overlap coefficient: shared tokens over the smaller set. Suits a short title against a
/// longer one that says the same thing with more words.
pub fn overlap(left: &BTreeSet<String>, right: &BTreeSet<String>) -> f64 {
    let smaller = left.len().min(right.len());
    if smaller == 0 {
        return 0.0;
    }
    left.intersection(right).count() as f64 / smaller as f64
}

/// Maps tokens, identifiers and paths to small integers, so the pair loop of grouping
/// compares sorted integer slices instead of string sets.
#[derive(Debug, Default)]
pub struct Interner {
    ids: std::collections::HashMap<String, u32>,
}

impl Interner {
    /// The id of `text`, assigned on first sight.
    pub fn id(&mut self, text: &str) -> u32 {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(text.to_string(), id);
        id
    }

    /// The text of every id, for explaining scores.
    pub fn names(&self) -> std::collections::HashMap<u32, String> {
        self.ids
            .iter()
            .map(|(text, id)| (*id, text.clone()))
            .collect()
    }

    /// The sorted ids of `tokens`.
    pub fn ids(&mut self, tokens: &BTreeSet<String>) -> Vec<u32> {
        let mut ids: Vec<u32> = tokens.iter().map(|token| self.id(token)).collect();
        ids.sort_unstable();
        ids
    }
}

/// The values two sorted, duplicate-free slices share, in order.
pub fn shared<T: Ord + Copy>(left: &[T], right: &[T]) -> Vec<T> {
    let mut common = Vec::new();
    let (mut left_index, mut right_index) = (0, 0);
    while left_index < left.len() && right_index < right.len() {
        match left[left_index].cmp(&right[right_index]) {
            std::cmp::Ordering::Less => left_index += 1,
            std::cmp::Ordering::Greater => right_index += 1,
            std::cmp::Ordering::Equal => {
                common.push(left[left_index]);
                left_index += 1;
                right_index += 1;
            }
        }
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_titles_score_high_and_unrelated_low() {
        let first = tokens("rancher-desktop namespace overwrites its own ownerReference");
        let second = tokens("Self-referential ownerReference on the rancher-desktop namespace");
        let unrelated = tokens("Missing IsNotFound handling causes retry churn");
        assert!(
            jaccard(&first, &second) > 0.4,
            "{}",
            jaccard(&first, &second)
        );
        assert!(jaccard(&first, &unrelated) < 0.1);
        assert!(overlap(&first, &second) > 0.6);
    }

    #[test]
    fn inflections_are_one_token() {
        assert_eq!(tokens("listener listening listens"), tokens("listen"));
    }

    #[test]
    fn shared_values_of_sorted_slices() {
        assert_eq!(shared(&[1u32, 3, 5, 7], &[2, 3, 4, 7, 9]), vec![3, 7]);
        assert!(shared::<u64>(&[], &[1]).is_empty());
    }

    #[test]
    fn empty_sets_are_not_similar() {
        assert_eq!(jaccard(&tokens(""), &tokens("")), 0.0);
        assert_eq!(overlap(&tokens("the"), &tokens("a")), 0.0);
    }
}
