//! FNV-1a: a small, stable hash for seeds and fingerprints that must be the same on every
//! platform and in every build (std's hashers promise neither).

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

/// An FNV-1a state; `word` mixes a whole `u64` in one step (as the data fingerprint always has).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(OFFSET)
    }
}

impl Fnv1a {
    pub fn word(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(PRIME);
    }
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.word(b as u64);
        }
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a of a string's bytes.
pub fn fnv1a(text: &str) -> u64 {
    let mut h = Fnv1a::default();
    h.bytes(text.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_published_fnv1a_values() {
        // Test vectors of the FNV reference (draft-eastlake-fnv): "" and "a".
        assert_eq!(super::fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
