//! The repository carries its own documentation: every relative link in `README.md` and
//! `docs/*.md` names a file of the repository, and none leaves it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents users read first.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    for entry in fs::read_dir(root().join("docs")).expect("docs/ exists") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    docs
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_names_a_file_of_the_repository() {
    let root = root().canonicalize().expect("repository root");
    for doc in documents() {
        let text = fs::read_to_string(&doc).expect("read document");
        let dir = doc.parent().unwrap_or(Path::new("."));
        for link in links(&text) {
            if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let file = link.split('#').next().unwrap_or_default();
            let target = dir.join(file);
            let target = target
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: link {link} names nothing ({e})", doc.display()));
            assert!(
                target.starts_with(&root),
                "{}: link {link} leaves the repository",
                doc.display()
            );
        }
    }
}

#[test]
fn the_docs_name_no_file_outside_the_repository() {
    for doc in documents() {
        let text = fs::read_to_string(&doc).expect("read document");
        assert!(
            !text.contains("../shared"),
            "{} points outside the repository",
            doc.display()
        );
    }
}
