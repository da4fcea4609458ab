//! The console's templates and catalogues, compiled in by `build.rs`.

include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// A file under `templates/static/`, by name.
pub fn static_file(name: &str) -> Option<&'static str> {
    TEMPLATES
        .iter()
        .find(|(path, _)| path.strip_prefix("static/") == Some(name))
        .map(|(_, text)| *text)
}
