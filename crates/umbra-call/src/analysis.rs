//! Measuring what was heard: the dominant frequency of a stretch of audio
//! (Goertzel filters over a range of frequencies) and the signal level. Used
//! by the tests that prove audio arrived, by the benchmark, and by
//! `umbra call` to report what a tone call received.

/// Power of `freq` in `samples` (Goertzel algorithm).
pub fn power_at(samples: &[i16], freq: f32, rate: u32) -> f64 {
    let w = std::f64::consts::TAU * f64::from(freq) / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency between 100 Hz and 4 kHz, to within 5 Hz.
pub fn dominant_frequency(samples: &[i16], rate: u32) -> f32 {
    let coarse = (100..=4000)
        .step_by(20)
        .map(|f| f as f32)
        .max_by(|a, b| power_at(samples, *a, rate).total_cmp(&power_at(samples, *b, rate)))
        .unwrap_or(0.0);
    let fine = (-20..=20).step_by(5).map(|d| coarse + d as f32);
    fine.max_by(|a, b| power_at(samples, *a, rate).total_cmp(&power_at(samples, *b, rate)))
        .unwrap_or(coarse)
}

/// Root-mean-square level, 0 for silence, about 8,500 for the standard tone.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The level in dBFS (full scale is 0 dB; silence is -96).
pub fn level_dbfs(samples: &[i16]) -> f64 {
    let r = rms(samples);
    if r < 1.0 {
        -96.0
    } else {
        20.0 * (r / 32_768.0).log10()
    }
}

/// Splits a recording of [`crate::audio::Tone::standard`]-like segments into
/// windows of `window` samples and returns each window's dominant frequency
/// (0 for windows quieter than -50 dBFS).
pub fn frequencies_per_window(samples: &[i16], window: usize, rate: u32) -> Vec<f32> {
    samples
        .chunks(window)
        .filter(|c| c.len() == window)
        .map(|c| {
            if level_dbfs(c) < -50.0 {
                0.0
            } else {
                dominant_frequency(c, rate)
            }
        })
        .collect()
}

/// Of the 200 ms windows of a 48 kHz recording, how many have a dominant
/// frequency within `tolerance` Hz of one of `notes`, and how many there
/// are: how a test or the benchmark judges that a tone came through.
pub fn windows_on_notes(samples: &[i16], notes: &[f32], tolerance: f32) -> (usize, usize) {
    let windows = frequencies_per_window(samples, 9_600, 48_000);
    let hits = windows
        .iter()
        .filter(|f| notes.iter().any(|n| (*f - n).abs() <= tolerance))
        .count();
    (hits, windows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{Source, Tone};

    #[test]
    fn finds_the_frequency_of_each_segment() {
        let mut t = Tone::new(&[(440.0, 0.4), (0.0, 0.4), (1320.0, 0.4)]);
        let mut all = Vec::new();
        while let Some(f) = t.next_frame() {
            all.extend_from_slice(&f);
        }
        let f = frequencies_per_window(&all, 19_200, 48_000);
        assert_eq!(f.len(), 3);
        assert!((f[0] - 440.0).abs() <= 5.0, "{f:?}");
        assert_eq!(f[1], 0.0);
        assert!((f[2] - 1320.0).abs() <= 5.0, "{f:?}");
        assert!(level_dbfs(&all[..19_200]) > -12.0);
    }
}
