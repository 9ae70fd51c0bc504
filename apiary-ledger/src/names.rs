//! Names of hives, boxes and frames, and the `hive.box.frame` reference form.

use std::fmt;

use crate::error::{LedgerError, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// The naming rule, quoted in every name error.
pub const NAME_RULE: &str = "a lowercase letter followed by up to 62 lowercase letters, \
digits or `_`";

/// Checks a hive, box or frame name: a lowercase ASCII letter, then lowercase letters, digits
/// and `_`, at most [`MAX_NAME_LEN`] bytes. The rule keeps names safe as storage path
/// segments and as unquoted SQL identifiers, and leaves names starting with `_` to Apiary.
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is {} bytes long", name.len()))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it does not start with a lowercase letter".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
            .map(|c| format!("it contains {c:?}"))
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(LedgerError::InvalidName {
            kind,
            name: name.to_string(),
            reason,
        }),
    }
}

/// A fully qualified frame reference, `hive.box.frame`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameRef {
    /// Hive (database) name.
    pub hive: String,
    /// Box (schema) name.
    pub r#box: String,
    /// Frame (table) name.
    pub frame: String,
}

impl FrameRef {
    /// Builds a reference, validating every part.
    pub fn new(hive: &str, r#box: &str, frame: &str) -> Result<Self> {
        validate_name("hive", hive)?;
        validate_name("box", r#box)?;
        validate_name("frame", frame)?;
        Ok(Self {
            hive: hive.to_string(),
            r#box: r#box.to_string(),
            frame: frame.to_string(),
        })
    }

    /// Parses `hive.box.frame`.
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [h, b, f] => Self::new(h, b, f),
            _ => Err(LedgerError::InvalidName {
                kind: "frame reference",
                name: text.to_string(),
                reason: "expected three dot-separated names, `hive.box.frame`".into(),
            }),
        }
    }
}

impl fmt::Display for FrameRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.hive, self.r#box, self.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects_names() {
        for ok in ["a", "analytics", "x_1", "values", &"a".repeat(63)] {
            validate_name("hive", ok).unwrap();
        }
        for bad in [
            "",
            "_x",
            "1a",
            "A",
            "a-b",
            "a.b",
            "a/b",
            "..",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            let err = validate_name("hive", bad).unwrap_err().to_string();
            assert!(err.contains("lowercase letter"), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_frame_refs() {
        let r = FrameRef::parse("analytics.events.clicks").unwrap();
        assert_eq!(r.to_string(), "analytics.events.clicks");
        assert!(FrameRef::parse("a.b").is_err());
        assert!(FrameRef::parse("a.b.c.d").is_err());
        assert!(FrameRef::parse("a..c").is_err());
    }
}
