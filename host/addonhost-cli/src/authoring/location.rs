//! Where a build tool's error points, as the tool said it, for the one-line
//! summary of a failed build: rustc's `--> src/lib.rs:12:5`, Python's
//! `File "app.py", line 3`, Node's `/…/index.js:4`, componentize-js's
//! `index.js:4:7`.

/// The first file-and-line a line of tool output names, if it is an error
/// location.
pub fn of(line: &str) -> Option<String> {
    let t = line.trim();
    if let Some(at) = t.strip_prefix("--> ") {
        return Some(at.trim().to_string());
    }
    if let Some(rest) = t.strip_prefix("File \"") {
        let (file, rest) = rest.split_once('"')?;
        let n: String = rest
            .trim_start_matches(", line ")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !n.is_empty() && !file.starts_with('<') {
            return Some(format!("{}:{n}", short(file)));
        }
        return None;
    }
    // `path/to/file.js:12` or `file.js:12:3`, at the start of the line.
    let token = t.split_whitespace().next()?;
    let mut parts = token.splitn(3, ':');
    let (file, line_no) = (parts.next()?, parts.next()?);
    let known = [".js", ".mjs", ".py", ".rs"]
        .iter()
        .any(|e| file.ends_with(e));
    if known && !line_no.is_empty() && line_no.chars().all(|c| c.is_ascii_digit()) {
        let col: String = parts
            .next()
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return Some(if col.is_empty() {
            format!("{}:{line_no}", short(file))
        } else {
            format!("{}:{line_no}:{col}", short(file))
        });
    }
    None
}

/// A path as short as it is still clear: componentize-py's `/0/app.py` is
/// the add-on's `app.py`.
fn short(file: &str) -> &str {
    let mut parts = file.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some(n), Some(rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn tools_error_locations_are_found() {
        assert_eq!(
            of("  --> src/lib.rs:12:5").as_deref(),
            Some("src/lib.rs:12:5")
        );
        assert_eq!(
            of("  File \"/0/app.py\", line 37").as_deref(),
            Some("app.py:37")
        );
        assert_eq!(
            of("/tmp/x/index.js:4").as_deref(),
            Some("/tmp/x/index.js:4")
        );
        assert_eq!(
            of("index.js:4:7 SyntaxError").as_deref(),
            Some("index.js:4:7")
        );
        assert_eq!(of("error: could not compile"), None);
        assert_eq!(of("  File \"<frozen importlib>\", line 3"), None);
    }
}
