//! The service error codes have one home, `blockrep-codes` (re-exported as
//! `blockrep::codes`): the docs' error tables list exactly its codes, and no crate writes a
//! code as a literal outside its tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use blockrep::codes;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `SMS.` and four digits at the start of `s`.
fn code_at(s: &str) -> Option<&str> {
    let digits = s.strip_prefix("SMS.")?.get(..4)?;
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| &s[..8])
}

/// Every `SMS.dddd` anywhere in `text`.
fn mentioned(text: &str) -> Vec<&str> {
    text.match_indices("SMS.")
        .filter_map(|(i, _)| code_at(&text[i..]))
        .collect()
}

/// The codes of `doc`'s error table: the rows whose first cell is a code (with or without
/// backticks), in order.
fn table_codes(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .map(|cell| cell.trim().trim_matches('`'))
        .filter(|cell| code_at(cell).is_some_and(|c| c.len() == cell.len()))
        .map(str::to_owned)
        .collect()
}

fn all() -> BTreeSet<&'static str> {
    codes::ALL.iter().map(|(code, _)| *code).collect()
}

fn check_doc(rel: &str) {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    let listed = table_codes(&text);
    let set: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    assert_eq!(
        set.len(),
        listed.len(),
        "{rel} lists a code twice: {listed:?}"
    );
    let missing: Vec<_> = all().difference(&set).copied().collect();
    let unknown: Vec<_> = set.difference(&all()).copied().collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{rel}'s error table: missing {missing:?}, not a code of blockrep_codes::ALL {unknown:?}"
    );
    for code in mentioned(&text) {
        assert!(
            all().contains(code),
            "{rel} mentions {code}, which is not in codes::ALL"
        );
    }
}

#[test]
fn readme_lists_every_code() {
    check_doc("README.md");
}

#[test]
fn protocol_lists_every_code() {
    check_doc("docs/PROTOCOL.md");
}

#[test]
fn operations_troubleshooting_lists_every_code() {
    check_doc("docs/OPERATIONS.md");
}

#[test]
fn the_crate_paths_are_the_one_home() {
    assert_eq!(
        codes::RULES,
        blockrep_rate::RuleError::TooMany { count: 0 }.code()
    );
    assert_eq!(blockrep::error::codes::ALL, blockrep_codes::ALL);
    assert_eq!(codes::ALL.len(), 13);
}

/// The Rust files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Outside their tests, the crates write no code as a string literal: they take it from
/// `blockrep-codes`.
#[test]
fn no_crate_writes_a_code_literal() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let krate = entry.unwrap().path();
        if krate.file_name().is_some_and(|n| n != "codes") {
            rust_files(&krate.join("src"), &mut files);
        }
    }
    assert!(files.len() > 20, "{files:?}");
    let mut literals = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name == "testutil.rs" {
            continue; // test-only modules
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("\"SMS.") {
                if code_at(&line[i + 1..]).is_some() {
                    literals.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        literals.is_empty(),
        "code literals outside tests:\n{}",
        literals.join("\n")
    );
}
