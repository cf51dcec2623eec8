//! Distinct items with a memory that fades: each item seen counts 1 when seen and half as
//! much every `half_life` after, so a slow scan (one probe every few minutes) adds up over
//! hours while a host denied once in a while never does. No fixed window: nothing falls off
//! a cliff at the end of five minutes.
//!
//! The score is kept incrementally (O(1) per observation): it decays as a whole, a new item
//! adds 1, and a repeated item adds back what it had lost (`1 - its current weight`), so the
//! score is always the sum of the items' current weights.

use std::{collections::HashMap, hash::Hash};

/// Weight left after `age_ms` with the given half-life.
pub fn weight(age_ms: u64, half_life_ms: u64) -> f64 {
    (-(age_ms as f64) / half_life_ms.max(1) as f64).exp2()
}

#[derive(Clone, Debug)]
pub struct Decaying<K> {
    half_life_ms: u64,
    /// Most items remembered; beyond it new items still add to the score and the total,
    /// but are not remembered (a repeat then counts as new: the score errs high, never low).
    cap: usize,
    items: HashMap<K, u64>,
    score: f64,
    score_at_ms: u64,
    /// Distinct items ever seen (not decayed): the alert's `count`.
    pub total: u64,
    /// When the first item was seen.
    pub first_ms: u64,
}

impl<K: Eq + Hash + Clone> Decaying<K> {
    pub fn new(half_life_ms: u64, cap: usize) -> Self {
        Decaying {
            half_life_ms,
            cap,
            items: HashMap::new(),
            score: 0.0,
            score_at_ms: 0,
            total: 0,
            first_ms: 0,
        }
    }

    /// Records `item` at `now_ms`; true if it was not remembered (a new distinct item).
    pub fn touch(&mut self, item: K, now_ms: u64) -> bool {
        self.decay_to(now_ms);
        match self.items.get_mut(&item) {
            Some(last) => {
                self.score += 1.0 - weight(now_ms.saturating_sub(*last), self.half_life_ms);
                *last = now_ms;
                false
            }
            None => {
                if self.total == 0 {
                    self.first_ms = now_ms;
                }
                self.score += 1.0;
                self.total += 1;
                if self.items.len() >= self.cap {
                    self.forget_faded(now_ms);
                }
                if self.items.len() < self.cap {
                    self.items.insert(item, now_ms);
                }
                true
            }
        }
    }

    /// The decayed number of distinct items at `now_ms`.
    pub fn score(&self, now_ms: u64) -> f64 {
        self.score * weight(now_ms.saturating_sub(self.score_at_ms), self.half_life_ms)
    }

    pub fn remembered(&self) -> usize {
        self.items.len()
    }

    /// The `n` smallest remembered items (an alert's sample, the same on every run).
    pub fn smallest(&self, n: usize) -> Vec<K>
    where
        K: Ord,
    {
        let mut v: Vec<K> = self.items.keys().cloned().collect();
        v.sort();
        v.truncate(n);
        v
    }

    /// Drops items whose weight fell below 1/64 (six half-lives): they no longer matter.
    pub fn forget_faded(&mut self, now_ms: u64) {
        let limit = 6 * self.half_life_ms;
        self.items.retain(|_, t| now_ms.saturating_sub(*t) <= limit);
    }

    fn decay_to(&mut self, now_ms: u64) {
        if now_ms > self.score_at_ms {
            self.score = self.score(now_ms);
            self.score_at_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn distinct_items_add_repeats_do_not() {
        let mut d = Decaying::new(HOUR, 100);
        for i in 0..5 {
            assert!(d.touch(i, 1000));
        }
        assert!(!d.touch(3, 1000));
        assert!((d.score(1000) - 5.0).abs() < 1e-9);
        assert_eq!(d.total, 5);
    }

    #[test]
    fn score_halves_every_half_life_and_repeat_restores_weight() {
        let mut d = Decaying::new(HOUR, 100);
        d.touch("a", 0);
        d.touch("b", 0);
        assert!((d.score(HOUR) - 1.0).abs() < 1e-9);
        // "a" again an hour later: back to full weight, "b" still at one half.
        d.touch("a", HOUR);
        assert!((d.score(HOUR) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn slow_scan_accumulates_over_hours() {
        // One new port every 5 minutes for 3 hours: far more than 10 distinct at the end.
        let mut d = Decaying::new(HOUR, 4096);
        for i in 0..36u64 {
            d.touch(i, i * 300_000);
        }
        assert!(d.score(35 * 300_000) > 15.0, "{}", d.score(35 * 300_000));
    }

    #[test]
    fn over_capacity_items_still_count() {
        let mut d = Decaying::new(HOUR, 4);
        for i in 0..10 {
            d.touch(i, 0);
        }
        assert_eq!(d.remembered(), 4);
        assert_eq!(d.total, 10);
        assert!((d.score(0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn faded_items_are_forgotten() {
        let mut d = Decaying::new(HOUR, 100);
        d.touch(1, 0);
        d.touch(2, 7 * HOUR);
        d.forget_faded(7 * HOUR);
        assert_eq!(d.remembered(), 1);
    }
}
