//! The shapes the OpenAPI document gives credentials. The parsers in
//! `domain` are what decide; these describe them to clients.

use utoipa::openapi::{Object, ObjectBuilder, Type};

/// Printable ASCII, one `@`, a domain of two or more non-empty labels.
const EMAIL: &str = "[!-?A-~]+@[!-,\\-/-?A-~]+(\\.[!-,\\-/-?A-~]+)+";

fn string(pattern: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
}

/// A member that may also be `null`, which counts as absent.
pub fn nullable(mut schema: Object) -> Object {
    schema.schema_type = [Type::String, Type::Null].into_iter().collect();
    schema
}

pub fn optional_email() -> Object {
    nullable(email())
}

pub fn username() -> Object {
    string(
        "^[A-Za-z0-9_.-]{3,32}$",
        "3 to 32 characters of letters, digits, '_', '.' and '-'; unique without regard to case",
    )
    .examples(["ada"])
    .build()
}

/// The character count can only bound the byte count from above.
pub fn password() -> Object {
    string("^[^\\u0000]{8,72}$", "8 to 72 bytes of UTF-8, no NUL")
        .examples(["correct horse battery"])
        .build()
}

pub fn email() -> Object {
    string(
        &format!("^{EMAIL}$"),
        "An e-mail address (printable ASCII), at most 254 bytes",
    )
    .max_length(Some(254))
    .examples(["ada@example.com"])
    .build()
}

/// What sign-in takes as `username`.
pub fn login() -> Object {
    string(
        &format!("^([A-Za-z0-9_.-]{{3,32}}|{EMAIL})$"),
        "A username, or an e-mail address (recognised by its '@')",
    )
    .max_length(Some(254))
    .examples(["ada"])
    .build()
}
