//! Tab completion for the shell: SQL keywords, hives, boxes, frames and columns, from a copy
//! of the catalog the shell loads in the background. A key press never asks storage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::Apiary;
use crate::apiary_query::datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

/// What the catalog held when it was last loaded.
#[derive(Debug, Default, Clone)]
pub(super) struct Names {
    /// Hives.
    pub(super) hives: BTreeSet<String>,
    /// Boxes by hive.
    pub(super) boxes: BTreeMap<String, BTreeSet<String>>,
    /// Frames by `hive.box`.
    pub(super) frames: BTreeMap<String, BTreeSet<String>>,
    /// Columns by `hive.box.frame`.
    pub(super) columns: BTreeMap<String, Vec<String>>,
}

impl Names {
    /// Lists every hive, box and frame (with its columns): one listing per hive and box,
    /// none per frame (a frame's schema comes with the listing).
    pub(super) async fn load(ap: &Apiary) -> crate::Result<Self> {
        let mut names = Names::default();
        for hive in ap.list_hives().await? {
            let boxes = ap.list_boxes(&hive.name).await?;
            for b in &boxes {
                let scope = format!("{}.{}", hive.name, b.name);
                let frames = ap.list_frames(&hive.name, &b.name).await?;
                for f in &frames {
                    let columns = f
                        .definition
                        .schema
                        .columns
                        .iter()
                        .map(|c| c.name.clone())
                        .collect();
                    names
                        .columns
                        .insert(format!("{scope}.{}", leaf(&f.name)), columns);
                }
                names.frames.insert(
                    scope,
                    frames.iter().map(|f| leaf(&f.name).to_string()).collect(),
                );
            }
            names.boxes.insert(
                hive.name.clone(),
                boxes.into_iter().map(|b| b.name).collect(),
            );
            names.hives.insert(hive.name);
        }
        Ok(names)
    }

    /// Frames (`hive.box.frame`) the text names, written whole or under the session's
    /// `USE` scope.
    fn frames_in(&self, text: &str, scope: &[String]) -> Vec<String> {
        let words: BTreeSet<String> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map(str::to_lowercase)
            .collect();
        self.columns
            .keys()
            .filter(|full| {
                words.contains(*full)
                    || words.iter().any(|w| match scope {
                        [hive, r#box] => *full == &format!("{hive}.{box}.{w}"),
                        [hive] => *full == &format!("{hive}.{w}"),
                        _ => false,
                    })
            })
            .cloned()
            .collect()
    }
}

/// The last part of a dotted name.
fn leaf(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The shell's helper for rustyline: completion only (no hints, no highlighting).
pub(super) struct ShellHelper {
    /// The catalog as last loaded.
    pub(super) names: Arc<RwLock<Names>>,
    /// The session's `USE` (`[hive]` or `[hive, box]`).
    pub(super) scope: Arc<Mutex<Vec<String>>>,
    /// The lines of the statement typed so far, before the current one.
    pub(super) pending: Arc<Mutex<String>>,
}

impl ShellHelper {
    /// Candidates for `word` (the text before the cursor back to a separator), given the
    /// whole statement so far.
    pub(super) fn candidates(&self, word: &str, statement: &str) -> Vec<String> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let scope = self.scope.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lower = word.to_lowercase();
        let mut out: BTreeSet<String> = BTreeSet::new();
        if let Some((prefix, part)) = lower.rsplit_once('.') {
            let part_matches = |c: &&String| c.starts_with(part);
            let mut add = |set: Option<&BTreeSet<String>>| {
                for c in set.into_iter().flatten().filter(part_matches) {
                    out.insert(format!("{prefix}.{c}"));
                }
            };
            // `hive.` → boxes; `hive.box.` → frames; `box.` under `USE hive` → frames.
            add(names.boxes.get(prefix));
            add(names.frames.get(prefix));
            if let [hive, ..] = scope.as_slice() {
                add(names.frames.get(&format!("{hive}.{prefix}")));
            }
            // `frame.` or `hive.box.frame.` → that frame's columns.
            let full = match (prefix.matches('.').count(), scope.as_slice()) {
                (2, _) => Some(prefix.to_string()),
                (0, [hive, r#box]) => Some(format!("{hive}.{box}.{prefix}")),
                (1, [hive, ..]) => Some(format!("{hive}.{prefix}")),
                _ => None,
            };
            if let Some(columns) = full.and_then(|f| names.columns.get(&f)) {
                for c in columns.iter().filter(|c| c.starts_with(part)) {
                    out.insert(format!("{prefix}.{c}"));
                }
            }
            return out.into_iter().collect();
        }
        let upper = word.chars().next().is_some_and(char::is_uppercase);
        for keyword in ALL_KEYWORDS
            .iter()
            .filter(|k| k.len() > 1 && k.to_lowercase().starts_with(&lower) && !lower.is_empty())
        {
            out.insert(if upper {
                keyword.to_string()
            } else {
                keyword.to_lowercase()
            });
        }
        for hive in names.hives.iter().filter(|h| h.starts_with(&lower)) {
            out.insert(hive.clone());
        }
        let in_scope = match scope.as_slice() {
            [hive, r#box] => names.frames.get(&format!("{hive}.{box}")),
            [hive] => names.boxes.get(hive),
            _ => None,
        };
        for name in in_scope
            .into_iter()
            .flatten()
            .filter(|n| n.starts_with(&lower))
        {
            out.insert(name.clone());
        }
        for frame in names.frames_in(statement, &scope) {
            for column in names.columns[&frame]
                .iter()
                .filter(|c| c.starts_with(&lower))
            {
                out.insert(column.clone());
            }
        }
        out.into_iter().collect()
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        let statement = format!(
            "{}\n{line}",
            self.pending.lock().unwrap_or_else(|p| p.into_inner())
        );
        let candidates = self
            .candidates(word, &statement)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(scope: &[&str]) -> ShellHelper {
        let mut names = Names::default();
        names.hives.insert("analytics".into());
        names
            .boxes
            .insert("analytics".into(), ["events".to_string()].into());
        names.frames.insert(
            "analytics.events".into(),
            ["clicks".to_string(), "pages".to_string()].into(),
        );
        names.columns.insert(
            "analytics.events.clicks".into(),
            vec!["event_id".into(), "country".into(), "duration_ms".into()],
        );
        names.columns.insert(
            "analytics.events.pages".into(),
            vec!["page".into(), "section".into()],
        );
        ShellHelper {
            names: Arc::new(RwLock::new(names)),
            scope: Arc::new(Mutex::new(scope.iter().map(|s| s.to_string()).collect())),
            pending: Arc::default(),
        }
    }

    #[test]
    fn completes_keywords_names_and_the_columns_of_frames_in_the_statement() {
        let h = helper(&[]);
        assert!(h.candidates("SEL", "SEL").contains(&"SELECT".to_string()));
        assert!(h.candidates("sel", "sel").contains(&"select".to_string()));
        // Names beside the keywords that share their start.
        assert_eq!(h.candidates("ana", "ana"), vec!["analytics", "analyze"]);
        assert_eq!(h.candidates("analytics.", ""), vec!["analytics.events"]);
        assert_eq!(
            h.candidates("analytics.events.c", ""),
            vec!["analytics.events.clicks"]
        );
        assert_eq!(
            h.candidates("analytics.events.clicks.d", ""),
            vec!["analytics.events.clicks.duration_ms"]
        );
        // Columns of the frames the statement reads, not of others.
        let statement = "SELECT cou FROM analytics.events.clicks";
        assert!(
            h.candidates("cou", statement)
                .contains(&"country".to_string())
        );
        assert!(
            !h.candidates("cou", "SELECT cou")
                .contains(&"country".to_string())
        );
        assert!(
            !h.candidates("se", statement)
                .contains(&"section".to_string())
        );
    }

    #[test]
    fn under_use_frames_and_their_columns_complete_by_short_names() {
        let h = helper(&["analytics", "events"]);
        assert!(h.candidates("cl", "cl").contains(&"clicks".to_string()));
        assert_eq!(h.candidates("clicks.ev", ""), vec!["clicks.event_id"]);
        assert!(
            h.candidates("sec", "SELECT sec FROM pages")
                .contains(&"section".to_string())
        );
        assert!(
            !h.candidates("sec", "SELECT sec FROM clicks")
                .contains(&"section".to_string())
        );
    }
}
