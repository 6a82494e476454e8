//! Architectural rules as tests: projections and the event contract do no I/O
//! and read neither the clock nor a random source.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::fs",
    "std::net",
    "std::time",
    "SystemTime",
    "Instant",
    "std::thread",
    "getrandom",
    "rand::",
    "now_v7",
    "std::env",
    "std::process",
    "std::io::stdin",
];

#[test]
fn pure_crates_stay_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["projections", "schemas"] {
        let mut files = Vec::new();
        sources(&root.join(krate).join("src"), &mut files);
        assert!(!files.is_empty());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for f in FORBIDDEN {
                    assert!(
                        !code.contains(f),
                        "{}:{}: `{f}` in a pure crate",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
        for line in deps.lines().filter(|l| l.contains('=')) {
            let name = line.split(['=', '.']).next().unwrap().trim();
            assert!(
                ["serde", "serde_json", "authlog-schemas"].contains(&name),
                "{krate} depends on {name}: pure crates depend on serde and authlog-schemas only"
            );
        }
    }
}
