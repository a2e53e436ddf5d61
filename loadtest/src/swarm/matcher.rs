//! Pairs the words a client receives with the audio chunks that produced them.
//!
//! The client runs fake-stt's own recogniser ([`Chunker`]) over every byte it
//! sends, so it knows which chunk becomes which word and when the chunk's last
//! byte left. A received word is matched to the oldest pending word with the same
//! vocabulary entry among the next [`LOOKAHEAD`]; pending words it skips were lost
//! (audio hark could not forward, say), and a word matching none is unmatched (a
//! real STT, or audio that lost its alignment with fake-stt's chunk grid). The
//! script cycles through the vocabulary, so a match in a short look-ahead window is
//! unambiguous.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use hark_fakes::fake_stt::transcribe::{Chunk, Chunker};
use hark_fakes::fake_stt::VOCAB;

/// Pending words a received word may skip to find its match.
pub const LOOKAHEAD: usize = 8;
/// Pending words older than this are given up as lost.
pub const HORIZON: Duration = Duration::from_secs(30);

/// A word whose audio was sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SentWord {
    /// Index into the vocabulary.
    pub vocab: usize,
    /// When the chunk's last byte was sent.
    pub at: Instant,
    /// The same, in unix milliseconds (for logs).
    pub unix_ms: u64,
    /// The talk stretch it belongs to.
    pub block: u64,
}

/// What one received word turned out to be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Matched {
    /// Matched; `skipped` pending words before it were lost.
    Word {
        /// The sent word.
        sent: SentWord,
        /// Lost words skipped over.
        skipped: usize,
    },
    /// Not a pending word.
    Unmatched,
}

/// One client's sent-but-not-yet-transcribed words.
#[derive(Debug)]
pub struct Matcher {
    chunker: Chunker,
    pending: VecDeque<SentWord>,
    /// Words given up after [`HORIZON`].
    pub expired: u64,
}

impl Matcher {
    /// A matcher for audio at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        Self { chunker: Chunker::new(sample_rate), pending: VecDeque::new(), expired: 0 }
    }

    /// Feeds audio just sent; returns how many words it completed.
    pub fn sent(&mut self, pcm: &[u8], at: Instant, unix_ms: u64, block: u64) -> usize {
        let before = self.pending.len();
        let pending = &mut self.pending;
        self.chunker.push(pcm, |chunk| {
            if let Chunk::Word { vocab, .. } = chunk {
                pending.push_back(SentWord { vocab, at, unix_ms, block });
            }
        });
        self.pending.len() - before
    }

    /// Matches one received word (text as sent by hark, any case or punctuation).
    pub fn received(&mut self, word: &str, now: Instant) -> Matched {
        self.expire(now);
        let Some(vocab) = vocab_index(word) else { return Matched::Unmatched };
        let window = self.pending.len().min(LOOKAHEAD);
        match self.pending.iter().take(window).position(|w| w.vocab == vocab) {
            Some(skipped) => {
                self.pending.drain(..skipped);
                let sent = self.pending.pop_front().expect("position is in range");
                Matched::Word { sent, skipped }
            }
            None => Matched::Unmatched,
        }
    }

    /// Words sent and not matched yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn expire(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|w| now.duration_since(w.at) > HORIZON) {
            self.pending.pop_front();
            self.expired += 1;
        }
    }
}

/// The vocabulary index of a transcript word (`"Apple,"` → 0).
pub fn vocab_index(word: &str) -> Option<usize> {
    let clean: String =
        word.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).collect();
    VOCAB.iter().position(|v| *v == clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_fakes::fake_stt::{silence, synth};

    #[test]
    fn matches_in_order_and_skips_lost_words() {
        let t0 = Instant::now();
        let mut m = Matcher::new(8000);
        let pcm = synth(&[("apple", 0), ("bridge", 0), ("candle", 1)], 8000);
        // Send in odd pieces: words complete when their last byte goes out.
        let (a, b) = pcm.split_at(8000 + 3);
        assert_eq!(m.sent(a, t0, 1, 0), 1);
        assert_eq!(m.sent(b, t0 + Duration::from_millis(500), 2, 0), 2);
        assert_eq!(m.sent(&silence(0.5, 8000), t0, 3, 0), 0);
        let now = t0 + Duration::from_secs(1);
        // "bridge" lost: "Candle." skips it.
        assert!(
            matches!(m.received("Apple", now), Matched::Word { skipped: 0, sent } if sent.unix_ms == 1)
        );
        assert!(matches!(
            m.received("Candle.", now),
            Matched::Word { skipped: 1, sent } if sent.vocab == 2 && sent.unix_ms == 2
        ));
        assert_eq!(m.received("zebra", now), Matched::Unmatched);
        assert_eq!(m.received("hello", now), Matched::Unmatched);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn old_words_expire() {
        let t0 = Instant::now();
        let mut m = Matcher::new(8000);
        m.sent(&synth(&[("apple", 0)], 8000), t0, 1, 0);
        assert_eq!(m.received("apple", t0 + HORIZON * 2), Matched::Unmatched);
        assert_eq!(m.expired, 1);
    }

    #[test]
    fn vocabulary_lookup() {
        assert_eq!(vocab_index("Guitar!"), Some(31));
        assert_eq!(vocab_index(""), None);
    }
}
