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
    fn empty_sets_are_not_similar() {
        assert_eq!(jaccard(&tokens(""), &tokens("")), 0.0);
        assert_eq!(overlap(&tokens("the"), &tokens("a")), 0.0);
    }
}
