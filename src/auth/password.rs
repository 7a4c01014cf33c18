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
