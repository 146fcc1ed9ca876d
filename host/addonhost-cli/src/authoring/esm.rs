//! JavaScript modules for a development build: each ES module of the add-on
//! becomes the text of a function of its imports, which the dev loader
//! (`plugins/sdk-js/dev-loader.js`) evaluates at call time — the engine in
//! the component evaluates scripts, not module files it cannot read.
//!
//! The rewrite is line for line, so a stack names the author's line: the
//! function opens on the module's first line, each `import`/`export`
//! statement is rewritten in place (a statement over several lines keeps
//! its line count), and the exports are defined after the last line. It
//! reads the statements that begin a line (as every formatter writes them):
//! `import … from '…'`, `import '…'`, `export const|let|var|function|class`,
//! `export default`, `export { … }` and `export … from '…'`.

use anyhow::bail;

/// `source` (the module at `path`) as the text the dev loader evaluates:
/// `(function (__import, __exports) { … })`, named `path` in stacks.
pub fn to_function(path: &str, source: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = source.split('\n').collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 4);
    let mut exported: Vec<(String, String)> = Vec::new(); // (local, exported name)
    let mut reexports: Vec<String> = Vec::new();
    let mut temp = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let starts = |kw: &str| {
            line.strip_prefix(kw)
                .is_some_and(|r| r.starts_with([' ', '{', '*', '\'', '"']))
        };
        if starts("import") && !line.starts_with("import(") && !line.starts_with("import.") {
            let (stmt, n) = statement(&lines, i, |s| has_module_specifier(s) || s.contains('('))?;
            out.push(
                import(&stmt, &mut temp).map_err(|e| anyhow::anyhow!("{path}:{}: {e}", i + 1))?,
            );
            out.extend(std::iter::repeat_n(String::new(), n - 1));
            i += n;
            continue;
        }
        if starts("export") {
            let rest = line["export".len()..].trim_start();
            if rest.starts_with('{') || rest.starts_with('*') {
                let (stmt, n) =
                    statement(&lines, i, |s| s.contains('}') || has_module_specifier(s))?;
                let body = stmt["export".len()..].trim().trim_end_matches(';').trim();
                if let Some((names, spec)) = split_from(body) {
                    temp += 1;
                    let m = format!("__m{temp}");
                    let mut code = format!("const {m} = __import({spec});");
                    if names.trim() == "*" {
                        reexports.push(m);
                    } else {
                        for (local, name) in specifiers(names)? {
                            code.push_str(&format!(" const __re_{name} = {m}.{local};"));
                            exported.push((format!("__re_{name}"), name));
                        }
                    }
                    out.push(code);
                } else {
                    for (local, name) in specifiers(body)? {
                        exported.push((local, name));
                    }
                    out.push(String::new());
                }
                out.extend(std::iter::repeat_n(String::new(), n - 1));
                i += n;
                continue;
            }
            if let Some(decl) = rest.strip_prefix("default") {
                let decl = decl.trim_start();
                let named = ["async function", "function", "class"]
                    .iter()
                    .find(|kw| decl.starts_with(*kw))
                    .and_then(|kw| ident(decl[kw.len()..].trim_start_matches('*').trim_start()));
                match named {
                    Some(name) => {
                        exported.push((name.clone(), "default".into()));
                        out.push(decl.to_string());
                    }
                    None => out.push(format!("__exports.default = {decl}")),
                }
                i += 1;
                continue;
            }
            for kw in ["const", "let", "var", "async function", "function", "class"] {
                if let Some(after) = rest.strip_prefix(kw) {
                    let after = after.trim_start_matches('*').trim_start();
                    let Some(name) = ident(after) else {
                        bail!("{path}:{}: a dev build reads `export {kw} NAME` with one name (write `export {{ a, b }}` for a pattern)", i + 1);
                    };
                    exported.push((name.clone(), name));
                    break;
                }
            }
            out.push(rest.to_string());
            i += 1;
            continue;
        }
        out.push(line.to_string());
        i += 1;
    }
    let mut text = String::from("(function (__import, __exports) { ");
    text.push_str(&out.join("\n"));
    text.push('\n');
    for m in &reexports {
        text.push_str(&format!("Object.assign(__exports, {m});\n"));
    }
    for (local, name) in &exported {
        text.push_str(&format!(
            "Object.defineProperty(__exports, {name:?}, {{ get: () => {local}, enumerable: true }});\n"
        ));
    }
    text.push_str(&format!("}})\n//# sourceURL={path}\n"));
    Ok(text)
}

/// The statement starting at line `i`: its lines joined, and how many.
fn statement(
    lines: &[&str],
    i: usize,
    ends: impl Fn(&str) -> bool,
) -> anyhow::Result<(String, usize)> {
    let mut stmt = String::new();
    for (n, line) in lines[i..].iter().enumerate() {
        if n > 0 {
            stmt.push(' ');
        }
        stmt.push_str(line.trim());
        if ends(&stmt) {
            return Ok((stmt, n + 1));
        }
        if n > 200 {
            break;
        }
    }
    bail!(
        "line {}: an import or export statement that never ends",
        i + 1
    )
}

/// Whether a statement so far ends with `'…'` or `"…"` (its module).
fn has_module_specifier(s: &str) -> bool {
    let s = s.trim_end().trim_end_matches(';').trim_end();
    (s.ends_with('\'') || s.ends_with('"')) && s.matches(['\'', '"']).count() >= 2
}

/// `{ a, b } from './x.js'` → (`{ a, b }`, `'./x.js'`).
fn split_from(s: &str) -> Option<(&str, &str)> {
    let at = s.rfind(" from ")?;
    Some((s[..at].trim(), s[at + 6..].trim()))
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
        .collect();
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

/// `{ a, b as c }` → [(a, a), (b, c)].
fn specifiers(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (local, name) = match part.split_once(" as ") {
            Some((l, n)) => (l.trim(), n.trim()),
            None => (part, part),
        };
        if ident(local).as_deref() != Some(local) && local != "default" {
            bail!("cannot read the specifier {part:?}");
        }
        out.push((local.to_string(), name.to_string()));
    }
    Ok(out)
}

/// One `import` statement as `const` bindings of `__import(…)`.
fn import(stmt: &str, temp: &mut usize) -> anyhow::Result<String> {
    let body = stmt["import".len()..].trim().trim_end_matches(';').trim();
    if body.starts_with('\'') || body.starts_with('"') {
        return Ok(format!("__import({body});"));
    }
    let Some((clause, spec)) = split_from(body) else {
        bail!("cannot read the import {stmt:?}");
    };
    *temp += 1;
    let m = format!("__m{temp}");
    let mut code = format!("const {m} = __import({spec});");
    let (default, rest) = match clause.find(['{', '*']) {
        Some(0) => (None, clause),
        Some(at) => (
            Some(clause[..at].trim().trim_end_matches(',').trim()),
            &clause[at..],
        ),
        None => (Some(clause), ""),
    };
    if let Some(d) = default.filter(|d| !d.is_empty()) {
        code.push_str(&format!(" const {d} = {m}.default;"));
    }
    let rest = rest.trim();
    if let Some(ns) = rest.strip_prefix('*') {
        let name = ns.trim().trim_start_matches("as").trim();
        code.push_str(&format!(" const {name} = {m};"));
    } else if rest.starts_with('{') {
        let bindings: Vec<String> = specifiers(rest)?
            .into_iter()
            .map(|(imported, local)| {
                if imported == local {
                    local
                } else {
                    format!("{imported}: {local}")
                }
            })
            .collect();
        code.push_str(&format!(" const {{ {} }} = {m};", bindings.join(", ")));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_become_functions_line_for_line() {
        let src = "import {\n  a, b as c,\n} from './addonhost.js';\nimport * as kv from 'addonhost:addon/kv@0.1.0';\nimport d, { e } from \"./d.js\";\n\nexport const lifecycle = {\n  provision() { return a(c); },\n};\nexport async function verify() {}\nfunction f() {}\nexport { f, f as g };\nexport default f;\n";
        let out = to_function("index.js", src).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("(function (__import, __exports) { const __m1 = __import('./addonhost.js'); const { a, b: c } = __m1;"), "{out}");
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[3],
            "const __m2 = __import('addonhost:addon/kv@0.1.0'); const kv = __m2;"
        );
        assert_eq!(
            lines[4],
            "const __m3 = __import(\"./d.js\"); const d = __m3.default; const { e } = __m3;"
        );
        assert_eq!(lines[6], "const lifecycle = {");
        assert_eq!(lines[7], "  provision() { return a(c); },");
        assert_eq!(lines[9], "async function verify() {}");
        assert_eq!(lines[12], "__exports.default = f;");
        for name in ["lifecycle", "verify", "f", "g"] {
            assert!(
                out.contains(&format!("Object.defineProperty(__exports, \"{name}\"")),
                "{name}: {out}"
            );
        }
        assert!(out.ends_with("})\n//# sourceURL=index.js\n"));
    }

    #[test]
    fn a_destructured_export_is_refused_with_its_line() {
        let e = to_function("x.js", "\nexport const { a } = b;\n").unwrap_err();
        assert!(e.to_string().starts_with("x.js:2:"), "{e}");
    }
}
