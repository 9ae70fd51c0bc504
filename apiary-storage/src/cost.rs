//! What requests cost: object stores bill every request, and for a node that mostly waits
//! the requests of waiting are its bill.
//!
//! Prices are per request class, as S3 bills them: writes and listings (PUT, COPY, POST,
//! LIST) are one class, reads (GET, HEAD) another, DELETE is free. Other stores price
//! the same classes within a factor of two or so.

use std::time::Duration;

use crate::RequestCounts;

/// Prices of request classes, in dollars per 1000 requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// PUT (conditional or not) and LIST.
    pub write_or_list_per_1000: f64,
    /// GET and HEAD.
    pub read_per_1000: f64,
}

/// Amazon S3 Standard (us-east-1): $0.005 per 1000 PUT or LIST, $0.0004 per 1000 GET or
/// HEAD, DELETE free.
pub const S3_STANDARD: Prices = Prices {
    write_or_list_per_1000: 0.005,
    read_per_1000: 0.0004,
};

/// An average month: 365.25 days over 12.
pub const MONTH: Duration = Duration::from_secs(2_629_800);

impl Prices {
    /// What `counts` cost, in dollars.
    pub fn cost(&self, counts: &RequestCounts) -> f64 {
        let writes = (counts.put + counts.conditional_put + counts.list) as f64;
        let reads = (counts.get + counts.head) as f64;
        (writes * self.write_or_list_per_1000 + reads * self.read_per_1000) / 1000.0
    }

    /// What a month costs at the rate of `counts` made `over` this long, in dollars.
    pub fn monthly(&self, counts: &RequestCounts, over: Duration) -> f64 {
        if over.is_zero() {
            return 0.0;
        }
        self.cost(counts) * MONTH.as_secs_f64() / over.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_example_costs_what_it_says() {
        // Per minute: 12 PUTs, 12 LISTs, 6 GETs and 60 HEADs, at S3 Standard prices.
        let minute = RequestCounts {
            put: 12,
            list: 12,
            get: 6,
            head: 60,
            ..RequestCounts::default()
        };
        let monthly = S3_STANDARD.monthly(&minute, Duration::from_secs(60));
        assert!((monthly - 6.42).abs() < 0.01, "{monthly}");
        // DELETE is free; a conditional PUT is a PUT.
        let deletes = RequestCounts {
            delete: 1_000_000,
            ..RequestCounts::default()
        };
        assert_eq!(S3_STANDARD.cost(&deletes), 0.0);
        let created = RequestCounts {
            conditional_put: 1000,
            ..RequestCounts::default()
        };
        assert_eq!(S3_STANDARD.cost(&created), 0.005);
        assert_eq!(S3_STANDARD.monthly(&minute, Duration::ZERO), 0.0);
    }
}
