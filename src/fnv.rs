//! 64-bit FNV-1a: the one stable, unseeded hash vigil needs.
//!
//! Two things must hash the same forever, across builds and hosts: the
//! spool's record checksums (a file written by one version is read by the
//! next) and the scheduler's splay phase (every scheduler must compute the
//! same slots). std's hashers are randomly seeded or unspecified, so this
//! small, fixed one is used for both.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a hash being computed over several pieces.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(OFFSET)
    }
}

impl Fnv1a {
    pub fn new() -> Fnv1a {
        Fnv1a::default()
    }

    /// Hashes `bytes` after what came before.
    #[must_use]
    pub fn write(self, bytes: &[u8]) -> Fnv1a {
        Fnv1a(
            bytes
                .iter()
                .fold(self.0, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME)),
        )
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a of one byte string.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv1a::new().write(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn pieces_hash_as_their_concatenation() {
        assert_eq!(
            Fnv1a::new().write(b"foo").write(b"bar").finish(),
            fnv1a(b"foobar")
        );
    }
}
