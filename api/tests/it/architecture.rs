//! The architecture invariants docs/architecture.md states, checked against the sources and the
//! manifests (each crate's `src/`: tests may break a rule on purpose), so that a change that
//! breaks one fails here rather than in review.

use std::path::{Path, PathBuf};

/// The workspace's root (this crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("a readable folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("a readable file")
}

/// The names of a crate's dependencies, as its manifest lists them (all sections).
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = read(&root().join(krate).join("Cargo.toml"));
    let mut in_deps = false;
    let mut out = vec![];
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// A crate's dependencies by section (`dependencies`, `dev-dependencies`, `build-dependencies`).
fn dependencies_by_section(krate: &str) -> Vec<(String, String)> {
    let manifest = read(&root().join(krate).join("Cargo.toml"));
    let mut section = String::new();
    let mut out = vec![];
    for line in manifest.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if section.ends_with("dependencies")
            && let Some((name, _)) = line.split_once(['=', '.'])
            && !name.trim().is_empty()
            && !name.trim().starts_with('#')
        {
            out.push((section.clone(), name.trim().to_owned()));
        }
    }
    out
}

/// Whether `text` names the crate `dependency` (as a path or in a `use`).
fn names_crate(text: &str, dependency: &str) -> bool {
    let ident = dependency.replace('-', "_");
    text.match_indices(&ident).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + ident.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

const CRATES: [&str; 7] = ["domain", "proto", "commands", "projections", "replay", "api", "bench"];

#[test]
fn only_proto_knows_protobuf() {
    for krate in CRATES {
        let deps = dependencies(krate);
        let prost = deps.iter().any(|d| d.starts_with("prost"));
        assert_eq!(prost, krate == "proto", "{krate} lists prost: {deps:?}");
        if krate != "proto" {
            for file in sources(&root().join(krate).join("src")) {
                assert!(!read(&file).contains("prost::"), "{} names prost", file.display());
            }
        }
    }
}

#[test]
fn the_domain_knows_no_io_runtime_or_wire_format() {
    let deps = dependencies("domain");
    for forbidden in [
        "sqlx",
        "tokio",
        "axum",
        "prost",
        "reqwest",
        "async-nats",
        "cqrs-es",
        "rand",
    ] {
        assert!(!deps.iter().any(|d| d == forbidden), "domain depends on {forbidden}");
    }
}

#[test]
fn only_api_knows_http() {
    for krate in CRATES {
        let deps = dependencies(krate);
        let http = deps
            .iter()
            .any(|d| ["axum", "tower-http", "utoipa"].contains(&d.as_str()));
        assert_eq!(http, krate == "api", "{krate}: {deps:?}");
    }
}

/// In the code that ships (`src/`): tests may write a poisoned event on purpose.
#[test]
fn only_the_store_appends_events() {
    for krate in CRATES {
        for file in sources(&root().join(krate).join("src")) {
            let text = read(&file).to_lowercase();
            let inserts = text.contains("insert into events");
            let owner = file.ends_with("commands/src/store.rs");
            assert!(!inserts || owner, "{} inserts into events", file.display());
            for verb in ["update events", "delete from events"] {
                assert!(!text.contains(verb), "{} changes stored events", file.display());
            }
        }
    }
}

#[test]
fn the_command_side_names_no_projection_table() {
    let tables: Vec<&str> = oo_projections::all()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    assert!(
        tables.contains(&"reward_pending"),
        "the projections' tables: {tables:?}"
    );
    for file in sources(&root().join("commands").join("src")) {
        let text = read(&file);
        for table in &tables {
            assert!(
                !text.contains(table),
                "{} names the projection table {table}",
                file.display()
            );
        }
    }
}

#[test]
fn no_crate_depends_on_one_it_does_not_use() {
    for krate in CRATES {
        let dir = root().join(krate);
        let text_of = |folders: &[&str]| -> String {
            let mut text = String::new();
            for folder in folders {
                let path = dir.join(folder);
                if path.is_dir() {
                    for file in sources(&path) {
                        text.push_str(&read(&file));
                    }
                } else if path.is_file() {
                    text.push_str(&read(&path));
                }
            }
            text
        };
        let shipped = text_of(&["src", "build.rs"]);
        let everything = text_of(&["src", "build.rs", "tests", "benches"]);
        for (section, dependency) in dependencies_by_section(krate) {
            let used = match section.as_str() {
                "dependencies" => names_crate(&shipped, &dependency),
                "build-dependencies" => names_crate(&text_of(&["build.rs"]), &dependency),
                _ => names_crate(&everything, &dependency),
            };
            assert!(used, "{krate} lists {dependency} in [{section}] and does not use it");
        }
    }
}
