//! Client audio to model audio: PCM16 LE bytes to samples, and a streaming
//! linear-interpolation resampler to the acoustic model's 16 kHz.

/// Sample rate of the packaged acoustic model.
pub(crate) const MODEL_RATE: u32 = 16_000;

/// Lowest input rate [`Resampler`] accepts.
pub(crate) const MIN_RATE: u32 = 8_000;
/// Highest input rate [`Resampler`] accepts.
pub(crate) const MAX_RATE: u32 = 48_000;

/// Turns a stream of byte messages into little-endian i16 samples, carrying an
/// odd trailing byte over to the next message.
#[derive(Debug, Default)]
pub(crate) struct PcmDecoder {
    carry: Option<u8>,
}

impl PcmDecoder {
    /// Appends the samples in `bytes` (plus any byte carried from the last call) to `out`.
    pub(crate) fn decode(&mut self, mut bytes: &[u8], out: &mut Vec<i16>) {
        if let Some(low) = self.carry.take() {
            match bytes.split_first() {
                Some((&high, rest)) => {
                    out.push(i16::from_le_bytes([low, high]));
                    bytes = rest;
                }
                None => {
                    self.carry = Some(low);
                    return;
                }
            }
        }
        let pairs = bytes.chunks_exact(2);
        self.carry = pairs.remainder().first().copied();
        out.extend(pairs.map(|pair| i16::from_le_bytes([pair[0], pair[1]])));
    }
}

/// Streaming linear interpolation from `in_rate` to [`MODEL_RATE`].
///
/// Output sample `k` sits at input position `k * in_rate / 16000`; it is the
/// straight line between the two input samples around that position. The
/// position is kept as exact integers, so long streams do not drift. At most
/// one input sample is held back, waiting for its right-hand neighbour.
#[derive(Debug)]
pub(crate) struct Resampler {
    in_rate: u64,
    /// Output samples produced so far.
    produced: u64,
    /// Input samples seen so far.
    consumed: u64,
    /// The last input sample seen (input index `consumed - 1`).
    last: i16,
}

impl Resampler {
    /// A resampler from `in_rate`, or why that rate is refused.
    pub(crate) fn new(in_rate: u32) -> Result<Self, String> {
        if !(MIN_RATE..=MAX_RATE).contains(&in_rate) {
            return Err(format!(
                "unsupported sample rate {in_rate} Hz (supported: {MIN_RATE}–{MAX_RATE} Hz; \
                 the model is {MODEL_RATE} Hz)"
            ));
        }
        Ok(Self { in_rate: u64::from(in_rate), produced: 0, consumed: 0, last: 0 })
    }

    /// Appends the 16 kHz samples that `input` completes to `out`.
    pub(crate) fn push(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.in_rate == u64::from(MODEL_RATE) {
            out.extend_from_slice(input);
            return;
        }
        let Some(&newest) = input.last() else {
            return;
        };
        let base = self.consumed;
        let total = base + input.len() as u64;
        let sample = |index: u64| -> i64 {
            if index < base {
                // Only `base - 1` can be asked for: it is the held-back sample.
                i64::from(self.last)
            } else {
                i64::from(input[(index - base) as usize])
            }
        };
        let out_rate = u64::from(MODEL_RATE);
        loop {
            let position = self.produced * self.in_rate;
            let index = position / out_rate;
            if index + 1 >= total {
                break;
            }
            let frac = (position % out_rate) as i64;
            let (left, right) = (sample(index), sample(index + 1));
            let step = (right - left) * frac;
            // Round half away from zero so a rising and a falling edge are symmetric.
            let offset = (step + step.signum() * (out_rate as i64 / 2)) / out_rate as i64;
            out.push((left + offset) as i16);
            self.produced += 1;
        }
        self.consumed = total;
        self.last = newest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn decodes_little_endian_and_carries_odd_bytes() {
        let samples = [1i16, -2, 300, i16::MIN, i16::MAX];
        let bytes = bytes_of(&samples);
        for split in 0..=bytes.len() {
            let mut decoder = PcmDecoder::default();
            let mut out = Vec::new();
            decoder.decode(&bytes[..split], &mut out);
            decoder.decode(&[], &mut out);
            decoder.decode(&bytes[split..], &mut out);
            assert_eq!(out, samples, "split at {split}");
        }
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let mut resampler = Resampler::new(16_000).unwrap();
        let mut out = Vec::new();
        resampler.push(&[1, 2, 3], &mut out);
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn eight_khz_doubles_with_midpoints() {
        let mut resampler = Resampler::new(8_000).unwrap();
        let mut out = Vec::new();
        resampler.push(&[0, 100, -100, 7], &mut out);
        // The last input sample waits for its neighbour.
        assert_eq!(out, [0, 50, 100, 0, -100, -46]);
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input: Vec<i16> = (0..1000).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let mut whole = Vec::new();
            Resampler::new(rate).unwrap().push(&input, &mut whole);
            for chunk in [1, 2, 3, 7, 160, 999] {
                let mut resampler = Resampler::new(rate).unwrap();
                let mut pieces = Vec::new();
                for part in input.chunks(chunk) {
                    resampler.push(part, &mut pieces);
                }
                assert_eq!(pieces, whole, "rate {rate} chunk {chunk}");
            }
            // Duration is kept: one output sample short at most for the held-back input.
            let expected = (input.len() as u64 - 1) * 16_000 / rate as u64;
            assert!(
                (whole.len() as u64).abs_diff(expected) <= 1,
                "rate {rate}: {} samples, expected about {expected}",
                whole.len()
            );
        }
    }

    #[test]
    fn refuses_rates_out_of_range() {
        assert!(Resampler::new(7_999).is_err());
        assert!(Resampler::new(48_001).is_err());
        assert!(Resampler::new(0).is_err());
    }
}
