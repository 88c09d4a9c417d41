//! The open-loop schedule (`--rate`, `--ramp`): when each request was *meant* to go out.
//!
//! Latency in open loop counts from that intended time, not from when the request actually
//! went out (wrk2's correction for coordinated omission): a client still waiting on a stalled
//! reply sends its next request late, and that request's latency includes the wait.
//!
//! The schedule is a cumulative count of requests, `N(t) = R·t` (or, during a `--ramp` of `T`
//! seconds, `R·t²/(2T)`: the rate grows linearly from 0 to `R`). Client slot `j` of `C` owns the
//! work units `u = phase_j + n·C`, `n = 0, 1, ...`, so the total rate is `R` and each client
//! sends at `R/C`; its `n`-th request is due at `N⁻¹(u)`. The phases are random in `[0, C)`
//! (from `--seed` when given), so clients do not fire in lockstep.

/// A small, seedable generator (xorshift64*): enough for phases and churn decisions.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; mixed with splitmix64 so nearby seeds differ).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The total rate and its ramp.
#[derive(Clone, Copy)]
pub struct Schedule {
    /// Requests per second over all clients and threads.
    pub rate: f64,
    /// Seconds of linear ramp from 0 to `rate`.
    pub ramp: f64,
    /// Client slots in all.
    pub clients: f64,
}

impl Schedule {
    /// Seconds after the schedule's start at which work unit `u` is due.
    pub fn time_of(&self, u: f64) -> f64 {
        let ramp_units = self.rate * self.ramp / 2.0;
        if self.ramp > 0.0 && u < ramp_units {
            (2.0 * u * self.ramp / self.rate).sqrt()
        } else {
            self.ramp + (u - ramp_units) / self.rate
        }
    }

    /// Seconds after the schedule's start at which request `n` of the slot with `phase` is due.
    pub fn due(&self, phase: f64, n: u64) -> f64 {
        self.time_of(phase + n as f64 * self.clients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_ramp_requests_are_evenly_spaced_at_the_total_rate() {
        let s = Schedule { rate: 1000.0, ramp: 0.0, clients: 10.0 };
        // Each of 10 clients sends at 100/s.
        assert!((s.due(0.0, 1) - 0.01).abs() < 1e-12);
        assert!((s.due(5.0, 0) - 0.005).abs() < 1e-12);
    }

    #[test]
    fn a_ramp_reaches_the_rate_at_its_end_and_sends_half_as_much_during_it() {
        let s = Schedule { rate: 1000.0, ramp: 2.0, clients: 1.0 };
        // 1000 requests in the 2 s ramp (half of 2000), then 1000/s.
        assert!((s.time_of(1000.0) - 2.0).abs() < 1e-9);
        assert!((s.time_of(2000.0) - 3.0).abs() < 1e-9);
        assert!((s.time_of(250.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_f64().to_bits(), b.next_f64().to_bits());
        }
        assert_ne!(Rng::new(1).next_f64().to_bits(), Rng::new(2).next_f64().to_bits());
    }
}
