//! CPython's `random.Random`, as far as the seed's prompt sampling uses it: seeding by an int,
//! `getrandbits`, `_randbelow` and `shuffle`, bit for bit.
//!
//! CPython's generator is MT19937. `Random(n)` for an int `n` seeds it with `init_by_array` on the
//! 32-bit words of `abs(n)`, least significant first (one word `[0]` for 0). `getrandbits(k)`
//! takes one 32-bit output per 32 bits, filling from the least significant word, and keeps the
//! top `k mod 32` bits of the last one. `_randbelow(n)` draws `getrandbits(n.bit_length())` until
//! the result is below `n`. `shuffle(x)` runs `for i in reversed(range(1, len(x))): j =
//! _randbelow(i + 1); x[i], x[j] = x[j], x[i]` (Python 3.2 and later).

use rand_mt::Mt;

/// A `random.Random(seed)` of CPython.
pub struct PyRandom {
    mt: Mt,
}

impl PyRandom {
    /// `random.Random(seed)`.
    pub fn new(seed: u64) -> Self {
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        let mt = if high == 0 { Mt::new_with_key([low]) } else { Mt::new_with_key([low, high]) };
        PyRandom { mt }
    }

    /// `getrandbits(k)` for `k <= 64` (0 for `k == 0`, consuming nothing).
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(k <= 64, "getrandbits supports at most 64 bits here");
        let mut out = 0u64;
        let mut left = k;
        let mut shift = 0;
        while left > 0 {
            let mut word = self.mt.next_u32();
            if left < 32 {
                word >>= 32 - left;
            }
            out |= u64::from(word) << shift;
            shift += 32;
            left = left.saturating_sub(32);
        }
        out
    }

    /// `_randbelow(n)`: a uniform integer in `[0, n)`; 0 for `n == 0`.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let k = 64 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `shuffle(x)` in place.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            x.swap(i, j);
        }
    }

    /// `random()`: 53 random bits as a float in `[0, 1)`.
    pub fn random(&mut self) -> f64 {
        let a = self.mt.next_u32() >> 5;
        let b = self.mt.next_u32() >> 6;
        (f64::from(a) * 67108864.0 + f64::from(b)) * (1.0 / 9007199254740992.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value below was printed once by CPython 3.11 with this snippet:
    //
    //   import random
    //   r = random.Random(0); print([r.getrandbits(32) for _ in range(4)])
    //   r = random.Random(0); x = list(range(20)); r.shuffle(x); print(x)
    //   r = random.Random(0); x = list(range(1000)); r.shuffle(x)
    //   print(x[:10], x[-5:], sum(i*v for i,v in enumerate(x)))
    //   r = random.Random(2**40 + 5); print([r.getrandbits(k) for k in (1, 7, 31, 32, 33, 63, 64)])
    //   r = random.Random(12345); print([r._randbelow(n) for n in (1, 2, 3, 10, 1000, 2**32 + 7)])
    //   r = random.Random(0); print(repr(r.random()))

    #[test]
    fn seed_zero_stream() {
        let mut r = PyRandom::new(0);
        let words: Vec<u64> = (0..4).map(|_| r.getrandbits(32)).collect();
        assert_eq!(words, [3626764237, 1654615998, 3255389356, 3823568514]);
        assert_eq!(PyRandom::new(0).random(), 0.8444218515250481);
    }

    #[test]
    fn shuffle_matches_cpython() {
        let mut x: Vec<u32> = (0..20).collect();
        PyRandom::new(0).shuffle(&mut x);
        assert_eq!(x, [10, 18, 16, 14, 0, 17, 11, 2, 3, 9, 5, 7, 4, 19, 6, 15, 8, 1, 13, 12]);
        let mut x: Vec<u64> = (0..1000).collect();
        PyRandom::new(0).shuffle(&mut x);
        assert_eq!(&x[..10], &[439, 621, 160, 549, 237, 389, 658, 507, 124, 290]);
        assert_eq!(&x[995..], &[430, 911, 776, 394, 864]);
        assert_eq!(x.iter().enumerate().map(|(i, &v)| i as u64 * v).sum::<u64>(), 251292570);
    }

    #[test]
    fn wide_seeds_and_bit_counts() {
        let mut r = PyRandom::new((1 << 40) + 5);
        let got: Vec<u64> = [1, 7, 31, 32, 33, 63, 64].iter().map(|&k| r.getrandbits(k)).collect();
        assert_eq!(got, [1, 66, 576823636, 2850991874, 3976222944, 6995385778996834761, 15389504867515374616]);
        let mut r = PyRandom::new(12345);
        let got: Vec<u64> = [1, 2, 3, 10, 1000, (1u64 << 32) + 7].iter().map(|&n| r.randbelow(n)).collect();
        assert_eq!(got, [0, 0, 1, 5, 954, 831769172]);
        assert_eq!(PyRandom::new(3).getrandbits(0), 0);
    }
}
