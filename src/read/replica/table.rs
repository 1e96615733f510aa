//! The token table's compact layout: a token id is kept as 96 bits of its
//! xxh3-128 hash and an entry's end as a `u32` unix second, so a slot is
//! 16 bytes (plus hashbrown's control byte) instead of 32 for a `u128` key
//! and an `i64`. At 10 M entries that is 17–39 B an entry whatever the
//! table's fill, against ~100 B before. 96 bits keep a false match out of
//! reach: at 10 M entries the chance that a given unrevoked id hits one is
//! 10⁷ / 2⁹⁶ ≈ 10⁻²².
//!
//! The key's bits are already uniform, so the map's hasher passes them
//! through ([`PassThrough`]) instead of hashing them again.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use dashmap::DashMap;
use xxhash_rust::xxh3::xxh3_128;

/// A token id as the replica keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKey([u32; 3]);

impl TokenKey {
    /// The key of `token_id`.
    pub fn of(token_id: &[u8]) -> Self {
        let h = xxh3_128(token_id);
        // Truncation is the point: the low 96 bits of the hash.
        #[allow(clippy::cast_possible_truncation)]
        Self([h as u32, (h >> 32) as u32, (h >> 64) as u32])
    }
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32));
    }
}

/// A hasher for keys that are hashes already: the last `u64` written is the
/// hash. Only [`TokenKey`] uses it, which writes exactly one.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached through TokenKey; mixes anyway rather than ignore.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// token key → unix second the entry ends.
pub type TokenTable = DashMap<TokenKey, u32, BuildHasherDefault<PassThrough>>;

/// A unix time as the table stores it: clamped to `u32` (1970..2106).
pub fn secs(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_sixteen_bytes() {
        // dashmap's `SharedValue<u32>` is a transparent `UnsafeCell<u32>`.
        assert_eq!(std::mem::size_of::<(TokenKey, u32)>(), 16);
    }

    #[test]
    fn times_clamp_to_u32() {
        assert_eq!(secs(-5), 0);
        assert_eq!(secs(1_800_000_000), 1_800_000_000);
        assert_eq!(secs(i64::MAX), u32::MAX);
    }

    #[test]
    fn distinct_ids_get_distinct_keys() {
        let keys: std::collections::HashSet<_> = (0..10_000)
            .map(|i| TokenKey::of(format!("token-{i}").as_bytes()).0)
            .collect();
        assert_eq!(keys.len(), 10_000);
    }
}
