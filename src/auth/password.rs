//! bcrypt. It reads at most 72 bytes of a password; `Password` refuses
//! longer ones, so nothing is ever silently cut. (bcrypt's own
//! `non_truncating_*` calls count the C string terminator and so refuse a
//! password of exactly 72 bytes, which the contract allows.)
//! These calls block for a long time by design: run them on the hasher pool.

use crate::domain::Password;

/// Why hashing or verifying failed. With a parsed `Password` and a hash
/// written by [`hash`], either means a bug or a corrupt stored hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the password hasher panicked")]
    Panicked,
}

/// Hashes `password` at `cost` with a fresh salt.
pub fn hash(password: &Password, cost: u32) -> Result<String, HashError> {
    Ok(bcrypt::hash(password.expose(), cost)?)
}

/// Whether `password` matches the bcrypt `hash`.
pub fn verify(password: &Password, hash: &str) -> Result<bool, HashError> {
    Ok(bcrypt::verify(password.expose(), hash)?)
}

/// The cost `hash` was made at, if it reads as a bcrypt hash.
pub fn cost_of(hash: &str) -> Option<u32> {
    hash.parse::<bcrypt::HashParts>()
        .ok()
        .map(|parts| parts.get_cost())
}

/// Does the work of verifying against a hash at cost `to` less that of
/// one at cost `from`: bcrypt at cost k runs 2^k rounds, and
/// 2^to − 2^from = 2^from + 2^(from+1) + … + 2^(to−1), so one hash at each
/// cost from `from` up to `to − 1`. Nothing when `from` is not below `to`.
pub fn pad(password: &Password, from: u32, to: u32) -> Result<(), HashError> {
    for cost in from..to {
        bcrypt::hash_with_salt(password.expose(), cost, [0; 16])?;
    }
    Ok(())
}

/// Whether `hash` was made at another cost than `cost` and should be made
/// again the next time its password is known. An unreadable hash is left
/// alone: verification will report it.
pub fn needs_rehash(hash: &str, cost: u32) -> bool {
    hash.parse::<bcrypt::HashParts>()
        .is_ok_and(|parts| parts.get_cost() != cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_is_read_from_the_hash_and_padding_down_is_nothing() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        assert_eq!(cost_of(&hash(&password, 5).unwrap()), Some(5));
        assert_eq!(cost_of("not a hash"), None);
        assert!(pad(&password, 12, 4).is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let right = Password::parse("correct horse battery", "password").unwrap();
        let wrong = Password::parse("correct horse battery!", "password").unwrap();
        let hashed = hash(&right, 4).unwrap();
        assert!(hashed.starts_with("$2b$04$"));
        assert!(verify(&right, &hashed).unwrap());
        assert!(!verify(&wrong, &hashed).unwrap());
    }

    #[test]
    fn a_password_of_exactly_72_bytes_hashes_and_only_it_verifies() {
        let longest = Password::parse(&"a".repeat(72), "password").unwrap();
        let one_short = Password::parse(&"a".repeat(71), "password").unwrap();
        let hashed = hash(&longest, 4).unwrap();
        assert!(verify(&longest, &hashed).unwrap());
        assert!(!verify(&one_short, &hashed).unwrap());
    }

    #[test]
    fn passwords_differing_only_past_byte_72_would_collide_so_they_never_get_here() {
        // The domain type stops them; bcrypt itself would read only 72 bytes.
        assert!(Password::parse(&"a".repeat(73), "password").is_err());
    }

    #[test]
    fn a_hash_at_another_cost_needs_rehashing() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        let hashed = hash(&password, 4).unwrap();
        assert!(!needs_rehash(&hashed, 4));
        assert!(needs_rehash(&hashed, 5));
        assert!(!needs_rehash("not-a-bcrypt-hash", 5));
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error_not_a_mismatch() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        assert!(verify(&password, "not-a-bcrypt-hash").is_err());
    }
}
