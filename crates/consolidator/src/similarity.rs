//! Normalised token similarity, used to decide whether two reports describe one problem.

use std::collections::BTreeSet;

/// Words too common in review prose to say anything about which problem is meant.
const STOP_WORDS: [&str; 40] = [
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "is", "are", "be", "it",
    "its", "this", "that", "with", "by", "from", "as", "not", "no", "but", "can", "may", "when",
    "if", "into", "than", "then", "so", "which", "was", "were", "has", "have", "does", "do",
];

/// Lower-cased alphanumeric tokens of `text`, without stop words, with a plural `s` removed.
pub fn tokens(text: &str) -> BTreeSet<String> {
    text.split(|character: char| !character.is_alphanumeric() && character != '_')
        .filter(|word| word.len() > 1)
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .map(|word| {
            if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") {
                word[..word.len() - 1].to_string()
            } else {
                word
            }
        })
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

/// Maps tokens (and paths) to small integers, so the pair loop of clustering compares
/// sorted integer slices instead of string sets.
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

    /// The sorted ids of `tokens`.
    pub fn ids(&mut self, tokens: &BTreeSet<String>) -> Vec<u32> {
        let mut ids: Vec<u32> = tokens.iter().map(|token| self.id(token)).collect();
        ids.sort_unstable();
        ids
    }
}

/// Number of ids two sorted, duplicate-free slices share.
fn shared(left: &[u32], right: &[u32]) -> usize {
    let (mut left_index, mut right_index, mut count) = (0, 0, 0);
    while left_index < left.len() && right_index < right.len() {
        match left[left_index].cmp(&right[right_index]) {
            std::cmp::Ordering::Less => left_index += 1,
            std::cmp::Ordering::Greater => right_index += 1,
            std::cmp::Ordering::Equal => {
                count += 1;
                left_index += 1;
                right_index += 1;
            }
        }
    }
    count
}

/// [`jaccard`] over interned ids.
pub fn jaccard_ids(left: &[u32], right: &[u32]) -> f64 {
    if left.is_empty() && right.is_empty() {
        return 0.0;
    }
    let common = shared(left, right);
    common as f64 / (left.len() + right.len() - common) as f64
}

/// [`overlap`] over interned ids.
pub fn overlap_ids(left: &[u32], right: &[u32]) -> f64 {
    let smaller = left.len().min(right.len());
    if smaller == 0 {
        return 0.0;
    }
    shared(left, right) as f64 / smaller as f64
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
    fn interned_scores_equal_string_scores() {
        let first = tokens("rancher-desktop namespace overwrites its own ownerReference");
        let second = tokens("Self-referential ownerReference on the rancher-desktop namespace");
        let mut interner = Interner::default();
        let (left, right) = (interner.ids(&first), interner.ids(&second));
        assert_eq!(jaccard_ids(&left, &right), jaccard(&first, &second));
        assert_eq!(overlap_ids(&left, &right), overlap(&first, &second));
        assert_eq!(jaccard_ids(&[], &[]), 0.0);
    }

    #[test]
    fn empty_sets_are_not_similar() {
        assert_eq!(jaccard(&tokens(""), &tokens("")), 0.0);
        assert_eq!(overlap(&tokens("the"), &tokens("a")), 0.0);
    }
}
