//! BENCHMARKS.md: the `kv` comparison first, then one section per other
//! benchmark (`## <name>`), each replaced by its own next run and kept by
//! the others'.

use std::path::Path;

use anyhow::{Context, Result};

/// The sections after the `kv` document, in the order they are written.
const SECTIONS: [&str; 6] = [
    "## iterate-100k",
    "## scan-load",
    "## snapshot-memory",
    "## idle-tables",
    "## follower-writes",
    "## resource-limits",
];

/// Splits `text` into what comes before the first section and each
/// section present, by heading.
fn split(text: &str) -> (String, Vec<(&'static str, String)>) {
    let mut starts: Vec<(usize, &'static str)> = SECTIONS
        .iter()
        .filter_map(|heading| {
            let at = if text.starts_with(&format!("{heading}\n")) {
                Some(0)
            } else {
                text.find(&format!("\n{heading}\n")).map(|at| at + 1)
            };
            at.map(|at| (at, *heading))
        })
        .collect();
    starts.sort();
    let head_end = starts.first().map_or(text.len(), |(at, _)| *at);
    let mut sections = Vec::new();
    for (i, (at, heading)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |(next, _)| *next);
        sections.push((*heading, text[*at..end].trim_end().to_string()));
    }
    (text[..head_end].trim_end().to_string(), sections)
}

fn join(head: &str, sections: &[(&'static str, String)]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !head.is_empty() {
        parts.push(head);
    }
    for heading in SECTIONS {
        if let Some((_, body)) = sections.iter().find(|(h, _)| *h == heading) {
            parts.push(body);
        }
    }
    let mut text = parts.join("\n\n");
    text.push('\n');
    text
}

/// Writes `section` (starting with `heading`) into `out`, replacing the
/// section of that heading and keeping everything else.
pub fn record_section(out: &Path, heading: &'static str, section: &str) -> Result<()> {
    // A heading not listed would be written and then dropped by `join`.
    anyhow::ensure!(
        SECTIONS.contains(&heading),
        "{heading} is not a section of BENCHMARKS.md (record.rs SECTIONS)"
    );
    let existing = std::fs::read_to_string(out).unwrap_or_default();
    let (head, mut sections) = split(&existing);
    sections.retain(|(h, _)| *h != heading);
    sections.push((heading, section.trim_end().to_string()));
    std::fs::write(out, join(&head, &sections))
        .with_context(|| format!("writing {}", out.display()))
}

/// Writes the `kv` document `head` into `out`, keeping the sections there.
pub fn record_head(out: &Path, head: &str) -> Result<()> {
    let existing = std::fs::read_to_string(out).unwrap_or_default();
    let (_, sections) = split(&existing);
    std::fs::write(out, join(head.trim_end(), &sections))
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_replaces_its_own_part_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("BENCHMARKS.md");
        record_section(&out, "## scan-load", "## scan-load\n\nfirst scan").expect("write");
        record_head(&out, "# Benchmarks\n\nkv one").expect("write");
        record_section(&out, "## iterate-100k", "## iterate-100k\n\niterate").expect("write");
        record_section(&out, "## scan-load", "## scan-load\n\nsecond scan").expect("write");
        record_head(&out, "# Benchmarks\n\nkv two").expect("write");
        let text = std::fs::read_to_string(&out).expect("read");
        assert_eq!(
            text,
            "# Benchmarks\n\nkv two\n\n## iterate-100k\n\niterate\n\n## scan-load\n\nsecond scan\n"
        );
        assert!(record_section(&out, "## unlisted", "## unlisted\n\nx").is_err());
    }
}
