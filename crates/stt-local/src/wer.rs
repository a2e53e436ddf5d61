//! Word error rate: the word-level edit distance between a reference and a
//! hypothesis, over the reference's length. Used by the `wer` binary.

/// Splits a transcript into lower-case words, dropping sentence markers
/// (`<s>`, `</s>`) and a trailing utterance id in parentheses, as found in
/// CMU Sphinx `transcription` files.
pub fn words(text: &str) -> Vec<String> {
    let mut tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.last().is_some_and(|t| t.starts_with('(') && t.ends_with(')')) {
        tokens.pop();
    }
    tokens.into_iter().filter(|t| !matches!(*t, "<s>" | "</s>")).map(str::to_lowercase).collect()
}

/// Substitutions + deletions + insertions turning `reference` into `hypothesis`.
pub fn edit_distance<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> usize {
    // One row of the Levenshtein table at a time.
    let mut row: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitute = diagonal + usize::from(r != h);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[hypothesis.len()]
}

/// Word error rate of `hypothesis` against `reference` (case-insensitive);
/// `None` for an empty reference.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> Option<f64> {
    let reference = words(reference);
    let hypothesis = words(hypothesis);
    if reference.is_empty() {
        return None;
    }
    Some(edit_distance(&reference, &hypothesis) as f64 / reference.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcription_lines_are_cleaned() {
        assert_eq!(words("<s> He was NOT </s> (sense-0880)"), ["he", "was", "not"]);
    }

    #[test]
    fn counts_substitutions_deletions_insertions() {
        let w = |s: &str| words(s);
        assert_eq!(edit_distance(&w("a b c"), &w("a b c")), 0);
        assert_eq!(edit_distance(&w("a b c"), &w("a x c")), 1);
        assert_eq!(edit_distance(&w("a b c"), &w("a c")), 1);
        assert_eq!(edit_distance(&w("a b c"), &w("a b c d")), 1);
        assert_eq!(edit_distance(&w("a b c"), &w("")), 3);
        assert_eq!(edit_distance(&w(""), &w("x y")), 2);
        assert_eq!(edit_distance(&w("kitten sat"), &w("sitting sat on")), 2);
    }

    #[test]
    fn rate_is_case_insensitive_and_can_exceed_one() {
        assert_eq!(word_error_rate("Go Forward", "go forward"), Some(0.0));
        assert_eq!(word_error_rate("go", "no no no"), Some(3.0));
        assert_eq!(word_error_rate("", "x"), None);
        let rate = word_error_rate("go forward ten meters", "go forward then meters").unwrap();
        assert!((rate - 0.25).abs() < 1e-12);
    }
}
