//! Where a problem is: field paths mapped to file, line and column, and back.

use super::*;

/// One problem in a spec file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (a missing table).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `rollout.phases[1].weight`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Maps field paths to places in the source text and back.
pub(super) struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(text: &'a str) -> Locator<'a> {
        Locator { text, doc: toml_edit::Document::parse(text).ok() }
    }

    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    /// Finds the place of `path` (e.g. `rollout.phases[1].weight`), or of its nearest
    /// existing parent when the field itself is absent.
    pub(super) fn locate(&self, path: &str) -> (usize, usize) {
        let Some(doc) = &self.doc else { return (0, 0) };
        let mut best = None;
        let mut item: &toml_edit::Item = doc.as_item();
        for seg in split_path(path) {
            let next = match seg {
                Seg::Key(k) => {
                    let found = item.get(k);
                    if let (Some(table), Some(_)) = (item.as_table_like(), found)
                        && let Some((key, _)) = table.get_key_value(k)
                        && let Some(span) = key.span()
                    {
                        best = Some(span.start);
                    }
                    found
                }
                Seg::Index(i) => item.get(i),
            };
            match next {
                Some(n) => {
                    if let Some(span) = n.span() {
                        best = Some(span.start);
                    } else if let Some(span) = n.as_value().and_then(|v| v.span()) {
                        best = Some(span.start);
                    }
                    item = n;
                }
                None => break,
            }
        }
        best.map(|o| self.line_col(o)).unwrap_or((0, 0))
    }

    /// The field at `offset`: the key or value that starts last at or before it.
    pub(super) fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut places = Vec::new();
        collect_places(doc.as_item(), "", &mut places);
        places.into_iter().filter(|(start, _)| *start <= offset).max_by_key(|(start, _)| *start).map(|(_, p)| p)
    }
}

/// Every key, value and table header of the document with where it starts.
fn collect_places(item: &toml_edit::Item, path: &str, out: &mut Vec<(usize, String)>) {
    let join = |key: &str| {
        if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
    };
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            let child_path = join(key);
            if let Some(span) = table.get_key_value(key).and_then(|(k, _)| k.span()) {
                out.push((span.start, child_path.clone()));
            }
            if let Some(span) = child.span().or_else(|| child.as_value().and_then(|v| v.span())) {
                out.push((span.start, child_path.clone()));
            }
            collect_places(child, &child_path, out);
        }
    } else if let Some(arr) = item.as_array_of_tables() {
        for (i, t) in arr.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(span) = t.span() {
                out.push((span.start, p.clone()));
            }
            collect_places(&toml_edit::Item::Table(t.clone()), &p, out);
        }
    } else if let Some(arr) = item.as_array() {
        for (i, v) in arr.iter().enumerate() {
            if let Some(span) = v.span() {
                out.push((span.start, format!("{path}[{i}]")));
            }
        }
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            out.push(Seg::Key(&rest[..b]));
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..end].parse() {
                    out.push(Seg::Index(i));
                }
                rest = stripped.get(end + 1..).unwrap_or("");
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest));
        }
    }
    out
}
