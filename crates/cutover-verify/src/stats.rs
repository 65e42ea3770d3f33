//! Percentiles of latencies.

/// Latencies in seconds, sorted once so several percentiles can be read from them.
pub(crate) struct Sorted(Vec<f64>);

impl Sorted {
    pub(crate) fn new(mut values: Vec<f64>) -> Sorted {
        values.sort_by(f64::total_cmp);
        Sorted(values)
    }

    /// The `p`th percentile in milliseconds (nearest rank); `None` with no values.
    pub(crate) fn ms(&self, p: f64) -> Option<f64> {
        let last = self.0.len().checked_sub(1)?;
        let rank = ((p / 100.0) * last as f64).round() as usize;
        Some(self.0[rank.min(last)] * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Sorted;

    #[test]
    fn percentiles_use_the_nearest_rank_of_sorted_values() {
        let values = Sorted::new((1..=100).rev().map(|ms| ms as f64 / 1000.0).collect());
        assert_eq!(values.ms(50.0), Some(51.0));
        assert_eq!(values.ms(99.0), Some(99.0));
        assert_eq!(values.ms(100.0), Some(100.0));
        assert_eq!(Sorted::new(Vec::new()).ms(99.0), None);
    }
}
