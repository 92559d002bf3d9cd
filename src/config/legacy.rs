//! Keys that moved to another section: the old name is still read, so an installed
//! `/etc/lesiond/lesiond.toml` keeps working across an upgrade, and a warning names the new
//! key. The move happens on the merged file-and-environment table, before serde reads it, so
//! the written layer ([`super::file`]) declares each key once, under its new name.

use config::{Map, Value, ValueKind};

use super::Invalid;

/// `(old section, new section, key)`: the key kept its name and changed sections.
const MOVED: &[(&str, &str, &str)] = &[
    // Read only by the examination, which judges focus against its own sharpest frame.
    ("checks", "examination", "focus_relative_min"),
];

/// An old key that was read: said at start (the log) and by `lesiond check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedKey {
    /// The dotted old key, e.g. `checks.focus_relative_min`.
    pub old: String,
    /// The dotted key that replaces it, e.g. `examination.focus_relative_min`.
    pub new: String,
    /// Both were set: the new one is used, the old one ignored.
    pub both_set: bool,
}

impl std::fmt::Display for MovedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.both_set {
            write!(f, "{} is set, and so is its new name {}: using {}, ignoring {} (remove it)", self.old, self.new, self.new, self.old)
        } else {
            write!(f, "{} has moved: write it as {} (the old name is still read, for now)", self.old, self.new)
        }
    }
}

/// Moves every old key in `root` to its new place, unless the new one is set too. An old
/// value that is no number is refused here, naming the key as it was written.
pub(super) fn move_old_keys(root: &mut Map<String, Value>) -> Result<Vec<MovedKey>, Invalid> {
    let mut moved = Vec::new();
    for &(old_section, new_section, key) in MOVED {
        let Some(value) = table(root, old_section).and_then(|t| t.remove(key)) else { continue };
        let (old, new) = (format!("{old_section}.{key}"), format!("{new_section}.{key}"));
        if let Err(e) = value.clone().into_float() {
            return Err(Invalid::at(&old, format!("{old} (now {new}): {e}")));
        }
        let target = root
            .entry(new_section.to_string())
            .or_insert_with(|| Value::new(None, ValueKind::Table(Map::new())));
        let ValueKind::Table(target) = &mut target.kind else {
            // `examination = 3`: serde says what is wrong with the section itself.
            continue;
        };
        let both_set = target.contains_key(key);
        if !both_set {
            target.insert(key.to_string(), value);
        }
        moved.push(MovedKey { old, new, both_set });
    }
    Ok(moved)
}

fn table<'a>(root: &'a mut Map<String, Value>, section: &str) -> Option<&'a mut Map<String, Value>> {
    match &mut root.get_mut(section)?.kind {
        ValueKind::Table(t) => Some(t),
        _ => None,
    }
}
