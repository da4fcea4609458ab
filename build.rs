//! Compiles the console's templates and message catalogues into the binary: writes
//! `$OUT_DIR/console_files.rs` listing every file under `templates/` and `locales/` with its text
//! (`include_str!`), so adding a template or a catalogue needs no code change.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=locales");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut out = String::new();
    out.push_str(
        "/// `(path under templates/, text)`.\npub const TEMPLATES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in files(&root.join("templates")) {
        out.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    out.push_str("];\n/// `(path under locales/, text)`, e.g. `(\"en/common.toml\", …)`.\n");
    out.push_str("pub const LOCALES: &[(&str, &str)] = &[\n");
    for (name, path) in files(&root.join("locales")) {
        out.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("console_files.rs");
    std::fs::write(dest, out).expect("write console_files.rs");
}

/// Every file under `dir`, as (path relative to `dir` with `/`, absolute path), sorted.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

fn walk(base: &Path, dir: &Path, found: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(base, &path, found);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            found.push((rel, path.display().to_string()));
        }
    }
}
