//! Telling group call members apart by ear in tests: each member sends a
//! tone of its own, and a recording is checked for who is in it.
// Each test file takes what it needs.
#![allow(dead_code)]

use umbra_call::analysis::power_at;
use umbra_call::codec::SAMPLE_RATE;

/// Each member's tone: no sum, difference or third-order product of any
/// three of them (as clipping in a mix makes) falls on the fourth.
pub const TONES: [f32; 4] = [440.0, 620.0, 1_010.0, 1_370.0];

/// A tone counts as heard above this share, and as absent below the other.
pub const HEARD: f64 = 0.05;
pub const ABSENT: f64 = 0.001;

/// The share of the last two seconds' energy that is at `freq` (about 1
/// for a lone tone, about a third for each of three mixed, near 0 for a
/// tone nobody sent or for silence).
pub fn presence(recording: &[i16], freq: f32) -> f64 {
    let tail = &recording[recording.len().saturating_sub(SAMPLE_RATE as usize * 2)..];
    let energy: f64 = tail.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if energy < 1.0 {
        return 0.0;
    }
    power_at(tail, freq, SAMPLE_RATE) / (tail.len() as f64 / 2.0 * energy)
}

/// Member `me`'s recording holds every other member's tone and not its own.
pub fn assert_hears_all_but(me: usize, recording: &[i16]) {
    for (j, &tone) in TONES.iter().enumerate() {
        let p = presence(recording, tone);
        if j == me {
            assert!(p < ABSENT, "member {me} heard its own tone ({p:.4})");
        } else {
            assert!(
                p > HEARD,
                "member {me} did not hear member {j}'s tone ({p:.4})"
            );
        }
    }
}
