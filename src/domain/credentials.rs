//! What a person types to sign up, sign in and change a password: each
//! value on its own, and the sets a request brings, parsed with every
//! field at fault named at once.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::InvalidInput;

/// A username: 3 to 32 characters of `A-Z a-z 0-9 _ . -`. Stored as typed;
/// compared and kept unique without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN_CHARS: usize = 3;
    pub const MAX_CHARS: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        // All allowed characters are ASCII, so bytes count characters here.
        if (Self::MIN_CHARS..=Self::MAX_CHARS).contains(&raw.len()) && raw.chars().all(allowed) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "username",
                "must be 3 to 32 characters of letters, digits, '_', '.' and '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which uniqueness is decided.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, checked for shape only (ASCII, one `@`, a dotted
/// domain, no spaces, at most 254 bytes); nobody can check more without
/// sending mail. ASCII only, so that case folding means the same in Rust and
/// in PostgreSQL whatever the database's locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_BYTES: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let well_formed = raw.len() <= Self::MAX_BYTES
            && raw.bytes().all(|b| b.is_ascii_graphic())
            && match raw.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.split('.').count() >= 2
                        && domain.split('.').all(|label| !label.is_empty())
                }
                None => false,
            };
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "email",
                "must be an e-mail address such as ada@example.com",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which uniqueness is decided.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A password: 8 to 72 bytes, no NUL. bcrypt reads at most 72 bytes, so a
/// longer password is refused rather than silently cut. Never printed.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    pub const MIN_BYTES: usize = 8;
    pub const MAX_BYTES: usize = 72;

    /// Parses `raw`, naming `field` in the error (`password`, `new_password`).
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        if raw.contains('\0') {
            return Err(InvalidInput::new(field, "must not contain NUL characters"));
        }
        if !(Self::MIN_BYTES..=Self::MAX_BYTES).contains(&raw.len()) {
            return Err(InvalidInput::new(
                field,
                "must be 8 to 72 bytes long (UTF-8)",
            ));
        }
        Ok(Self(raw.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Who is signing in: by username or by e-mail address.
#[derive(Debug, Clone)]
pub enum Login {
    Username(Username),
    Email(Email),
}

impl Login {
    /// The login as the store matches it, regardless of case.
    pub fn folded(&self) -> String {
        match self {
            Login::Username(name) => name.folded(),
            Login::Email(email) => email.folded(),
        }
    }
}

/// The fields of a sign-up: a username, a password and maybe an e-mail.
#[derive(Debug, Clone)]
pub struct Registration {
    pub username: Username,
    pub email: Option<Email>,
    pub password: Password,
}

impl Registration {
    pub fn parse(
        username: &str,
        password: &str,
        email: Option<&str>,
    ) -> Result<Self, Vec<InvalidInput>> {
        let username = Username::parse(username);
        let password = Password::parse(password, "password");
        let email = email.map(Email::parse).transpose();
        match (username, password, email) {
            (Ok(username), Ok(password), Ok(email)) => Ok(Self {
                username,
                email,
                password,
            }),
            (u, p, e) => Err(faults([u.err(), p.err(), e.err()])),
        }
    }
}

/// Who signs in and with what password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub login: Login,
    pub password: Password,
}

impl Credentials {
    /// `username` may be an e-mail address (recognised by its `@`); exactly
    /// one of `username` and `email` must be given.
    pub fn parse(
        username: Option<&str>,
        email: Option<&str>,
        password: &str,
    ) -> Result<Self, Vec<InvalidInput>> {
        let login = match (username, email) {
            (Some(name), None) if name.contains('@') => Email::parse(name).map(Login::Email),
            (Some(name), None) => Username::parse(name).map(Login::Username),
            (None, Some(email)) => Email::parse(email).map(Login::Email),
            (Some(_), Some(_)) => Err(InvalidInput::new(
                "username",
                "send a username or an email, not both",
            )),
            (None, None) => Err(InvalidInput::new(
                "username",
                "a username or an email is required",
            )),
        };
        match (login, Password::parse(password, "password")) {
            (Ok(login), Ok(password)) => Ok(Self { login, password }),
            (login, password) => Err(faults([login.err(), password.err()])),
        }
    }
}

/// A password change: the current password, asked again, and the new one.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub current: Password,
    pub new: Password,
}

impl PasswordChange {
    pub fn parse(current: &str, new: &str) -> Result<Self, Vec<InvalidInput>> {
        let current = Password::parse(current, "current_password");
        let new = Password::parse(new, "new_password");
        match (current, new) {
            (Ok(current), Ok(new)) => Ok(Self { current, new }),
            (current, new) => Err(faults([current.err(), new.err()])),
        }
    }
}

/// The fields that failed, in the order the request has them.
fn faults<const N: usize>(results: [Option<InvalidInput>; N]) -> Vec<InvalidInput> {
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_documented_alphabet_and_length() {
        for ok in ["ada", "Ada.Lovelace_1-x", &"a".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(33),
            "ada lovelace",
            "adä",
            "ada;drop",
            "",
            "ad\0a",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_fold_case_for_uniqueness() {
        assert_eq!(Username::parse("AdA").unwrap().folded(), "ada");
    }

    #[test]
    fn passwords_are_limited_in_bytes_not_characters() {
        assert!(Password::parse(&"x".repeat(72), "password").is_ok());
        assert!(Password::parse(&"x".repeat(73), "password").is_err());
        // 24 three-byte characters are 72 bytes; one more is 75.
        assert!(Password::parse(&"€".repeat(24), "password").is_ok());
        assert!(Password::parse(&"€".repeat(25), "password").is_err());
        assert!(Password::parse("short", "password").is_err());
        assert!(Password::parse("has\0nul-inside", "password").is_err());
    }

    #[test]
    fn password_errors_name_the_field_they_came_from() {
        let err = Password::parse("short", "new_password").unwrap_err();
        assert_eq!(err.field, "new_password");
    }

    #[test]
    fn passwords_are_not_printed_by_debug() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn a_sign_in_names_one_login_and_every_fault_at_once() {
        let by_name = Credentials::parse(Some("ada"), None, "correct horse").unwrap();
        assert!(matches!(by_name.login, Login::Username(_)));
        let by_mail = Credentials::parse(Some("ada@example.com"), None, "correct horse").unwrap();
        assert!(matches!(by_mail.login, Login::Email(_)));

        let both = Credentials::parse(Some("ada"), Some("ada@example.com"), "short").unwrap_err();
        let fields: Vec<&str> = both.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["username", "password"]);
        assert_eq!(
            Credentials::parse(None, None, "correct horse")
                .unwrap_err()
                .len(),
            1
        );
    }

    #[test]
    fn a_registration_names_every_field_at_fault() {
        let faults = Registration::parse("a", "short", Some("nope")).unwrap_err();
        let fields: Vec<&str> = faults.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["username", "password", "email"]);
        assert!(Registration::parse("ada", "correct horse", None).is_ok());
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(Email::parse("ada@example.com").is_ok());
        for bad in [
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "a@b@c.d",
            "ada@.com",
            "adä@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
