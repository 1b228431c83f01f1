//! Order statistics over a handful of wall-time samples.

use std::time::Duration;

/// Median and 90th percentile of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (mean of the two middle samples for an even count).
    pub median: Duration,
    /// The nearest-rank 90th percentile: the smallest sample that at least 90% of samples do not
    /// exceed.
    pub p90: Duration,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        // Nearest rank: ceil(0.9 n), 1-based.
        let p90 = sorted[(9 * n).div_ceil(10) - 1];
        Some(Self { median, p90 })
    }
}

/// Milliseconds with a fractional part, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_samples(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn one_sample_is_its_own_median_and_p90() {
        let s = Summary::of(&ms_samples(&[7])).unwrap();
        assert_eq!(
            (s.median, s.p90),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }

    #[test]
    fn odd_count_unsorted() {
        let s = Summary::of(&ms_samples(&[5, 1, 4, 2, 3])).unwrap();
        assert_eq!(s.median, Duration::from_millis(3));
        assert_eq!(s.p90, Duration::from_millis(5));
    }

    #[test]
    fn even_count_averages_the_middle_pair() {
        let s = Summary::of(&ms_samples(&[1, 2, 3, 4])).unwrap();
        assert_eq!(s.median, Duration::from_micros(2500));
    }

    #[test]
    fn p90_of_thirty_is_the_27th() {
        let samples: Vec<u64> = (1..=30).collect();
        let s = Summary::of(&ms_samples(&samples)).unwrap();
        assert_eq!(s.p90, Duration::from_millis(27));
    }
}
