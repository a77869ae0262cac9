//! The figures the benchmarks report from repeated measurements.

/// The median of `v` (the upper of the two middle values of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A median with its distribution-free 95 % confidence interval.
#[derive(Debug, PartialEq)]
pub(crate) struct Interval {
    pub(crate) low: f64,
    pub(crate) median: f64,
    pub(crate) high: f64,
}

impl Interval {
    /// The median of `values` and its interval: the order statistics that the binomial
    /// distribution of "values below the true median" puts 2.5 % outside on each side. With
    /// fewer than six values no interval reaches 95 %: then it is the whole range.
    pub(crate) fn of_median(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        // The largest k with P(Binomial(n, 1/2) < k) <= 0.025: the k-th smallest and the
        // k-th largest value bound the interval.
        let (mut k, mut below, mut p) = (0, 0.0, 0.5f64.powi(n as i32));
        for j in 0..n {
            if below + p > 0.025 {
                break;
            }
            below += p;
            k = j + 1;
            p *= (n - j) as f64 / (j + 1) as f64;
        }
        let k = k.max(1);
        Self { low: values[k - 1], median: values[n / 2], high: values[n - k] }
    }

    /// Whether the interval says the value is at least `goal`: met when all of it is, not
    /// met when none of it is, undecided when it holds the goal (more measurements, or a
    /// quieter machine, may decide).
    pub(crate) fn verdict(&self, goal: f64) -> String {
        let outcome = match () {
            _ if self.low >= goal => "met",
            _ if self.high < goal => "not met",
            _ => "undecided (the interval holds it)",
        };
        format!("goal >= {goal:.2}: {outcome}")
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} [{:.3}, {:.3}]", self.median, self.low, self.high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(values: impl IntoIterator<Item = f64>) -> (f64, f64, f64) {
        let i = Interval::of_median(values.into_iter().collect());
        (i.low, i.median, i.high)
    }

    #[test]
    fn the_interval_is_the_order_statistics_of_the_binomial_tables() {
        // n = 100: the 40th and 61st values, as a table of the binomial distribution has them.
        assert_eq!(interval((1..=100).map(f64::from)), (40.0, 51.0, 61.0));
        // n = 10: the 2nd and 9th.
        assert_eq!(interval((1..=10).map(f64::from)), (2.0, 6.0, 9.0));
        // Too few for 95 %: the whole range.
        assert_eq!(interval([3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
    }

    #[test]
    fn the_verdict_needs_the_whole_interval_on_one_side() {
        let at = |low, high| Interval { low, median: (low + high) / 2.0, high };
        assert_eq!(at(0.90, 0.95).verdict(0.90), "goal >= 0.90: met");
        assert_eq!(at(0.85, 0.899).verdict(0.90), "goal >= 0.90: not met");
        assert_eq!(at(0.89, 0.93).verdict(0.90), "goal >= 0.90: undecided (the interval holds it)");
    }
}
