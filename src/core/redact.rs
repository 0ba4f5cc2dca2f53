//! Redact: keep secrets out of logs, metrics and notifications.
//!
//! ecs-rerun never logs environment overrides, but error messages and failure details are free
//! text written by AWS and may echo what a caller sent. Every such text passes through
//! [`scrub`], which masks the known values of the event's environment overrides and anything
//! shaped like a credential.

const MASK: &str = "***";
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "credential",
];

/// Masks the given known secret values and common secret shapes in `text`.
pub fn scrub<'a>(text: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for value in known {
        // Very short values ("1", "true") would mask half the message and protect nothing.
        if value.len() >= 4 {
            out = out.replace(value, MASK);
        }
    }
    mask_words(&mask_assignments(&out))
}

/// Masks the value of `password=...`, `secret: ...`, `"token":"..."` and the like.
fn mask_assignments(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let keyword = SECRET_WORDS
            .iter()
            .find(|w| lower[i..].starts_with(**w) && text.is_char_boundary(i + w.len()));
        let Some(word) = keyword else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        };
        // Skip the rest of the key (e.g. `_KEY` in `SECRET_KEY`), then the separator.
        let mut j = i + word.len();
        j += text[j..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(text.len() - j);
        let sep_len = text[j..]
            .find(|c: char| !matches!(c, ' ' | '"' | '\'' | ':' | '='))
            .unwrap_or(text.len() - j);
        let sep = &text[j..j + sep_len];
        out.push_str(&text[i..j + sep_len]);
        i = j + sep_len;
        if sep.contains(['=', ':']) {
            let value_len = text[i..]
                .find(|c: char| {
                    c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '&' | ';' | '}')
                })
                .unwrap_or(text.len() - i);
            if value_len > 0 {
                out.push_str(MASK);
                i += value_len;
            }
        }
    }
    out
}

/// Masks words shaped like AWS access key IDs or secret access keys.
fn mask_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_secret(word) {
            out.push_str(MASK);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || ch == '/' || ch == '+' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn looks_secret(word: &str) -> bool {
    let access_key_id = word.len() == 20
        && (word.starts_with("AKIA") || word.starts_with("ASIA"))
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let secret_key = word.len() == 40
        && word.chars().any(|c| c.is_ascii_uppercase())
        && word.chars().any(|c| c.is_ascii_lowercase())
        && word.chars().any(|c| c.is_ascii_digit());
    access_key_id || secret_key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_known_values_and_keeps_the_rest() {
        let text = "container app failed: could not connect with hunter2-db-pass";
        assert_eq!(
            scrub(text, ["hunter2-db-pass", "x"]),
            "container app failed: could not connect with ***"
        );
    }

    #[test]
    fn masks_assignments_of_secret_looking_keys() {
        assert_eq!(
            scrub("bad value DB_PASSWORD=s3cr3t! for app", []),
            "bad value DB_PASSWORD=*** for app"
        );
        assert_eq!(scrub(r#"{"apiKey": "abc123"}"#, []), r#"{"apiKey": "***"}"#);
        assert_eq!(scrub("secret: sauce, ok", []), "secret: ***, ok");
        // A word that merely mentions a secret is left alone.
        assert_eq!(scrub("the secret sauce", []), "the secret sauce");
    }

    #[test]
    fn masks_aws_key_shapes_but_not_hex_tokens() {
        assert_eq!(scrub("key AKIAIOSFODNN7EXAMPLE used", []), "key *** used");
        assert_eq!(
            scrub("sk wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end", []),
            "sk *** end"
        );
        let hex_token = "ecs-rerun-0123456789abcdef0123456789abcdef01234567";
        assert_eq!(scrub(hex_token, []), hex_token);
    }

    #[test]
    fn survives_non_ascii_text() {
        assert_eq!(
            scrub("You’ve reached the limit – token=é1", []),
            "You’ve reached the limit – token=***"
        );
    }
}
