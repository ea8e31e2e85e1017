//! Percentiles of a set of measurements.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank percentiles; `None` without measurements.
    pub fn of(values: &mut [f64]) -> Option<Quantiles> {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        (!values.is_empty()).then(|| Quantiles {
            count: values.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let q = Quantiles::of(&mut v);
        assert_eq!(
            q.map(|q| (q.count, q.p50, q.p99, q.max)),
            Some((100, 51.0, 99.0, 100.0))
        );
        assert!(Quantiles::of(&mut []).is_none());
    }
}
