//! Reads kustomize's own `krusty` tests (Go source in the Go module cache, never copied into
//! this repository) and turns each `th.Run`/`th.RunWithErr` into a case: the files the test
//! wrote before that call and the directory it builds.
//!
//! This is a tiny evaluator of the straight-line shape those tests have, not a Go
//! interpreter: `th := kusttest_test.MakeHarness(t)` (or the enhanced harness with built-in
//! plugins), `th.WriteK/WriteC/WriteF(path, content)`, string literals, `+` concatenation,
//! package-level and local string constants, `filepath.Join`, and helper functions taking the
//! harness (inlined). A test that does anything else with the harness (loops, subtests,
//! `fmt.Sprintf`, custom file systems, exec or Go plugins, non-default options) is skipped and
//! counted with the reason, so the extraction rate is visible rather than silently partial.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kustomize API module kubectl v1.32's kustomize (v5.5.0) is built from.
pub const KUSTOMIZE_API_MODULE: &str = "sigs.k8s.io/kustomize/api@v0.18.0";

/// One build extracted from a krusty test.
#[derive(Debug, Clone)]
pub struct KrustyCase {
    /// `<file stem>/<TestName>` plus `#n` for the n-th build of the same test.
    pub name: String,
    /// The test file's stem, the category the match rate is reported by.
    pub category: String,
    /// Files written so far: path relative to the in-memory root → content.
    pub files: BTreeMap<String, String>,
    /// Directory built, relative to the root ("" is the root).
    pub path: String,
    /// The test expects kustomize to fail (`RunWithErr`).
    pub expects_error: bool,
}

/// A test the evaluator could not follow, with the reason.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The Go test's name.
    pub name: String,
    /// What the evaluator could not follow.
    pub reason: String,
}

/// Directory of the krusty tests in the Go module cache, downloading the module through the
/// Go module proxy when it is missing.
pub fn krusty_dir() -> Result<PathBuf, String> {
    let out = Command::new("go")
        .args(["mod", "download", "-json", KUSTOMIZE_API_MODULE])
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| {
            format!("running `go mod download`: {e} (Go is needed for the krusty corpus)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "go mod download {KUSTOMIZE_API_MODULE} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("go mod download printed no JSON: {e}"))?;
    let dir = v
        .get("Dir")
        .and_then(|d| d.as_str())
        .ok_or("go mod download did not report the module directory")?;
    Ok(Path::new(dir).join("krusty"))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

fn tokenize(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '`' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i] != '`' {
                i += 1;
            }
            let s: String = b[start..i.min(b.len())]
                .iter()
                .filter(|c| **c != '\r')
                .collect();
            out.push(Tok::Str(s));
            i += 1;
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                    match b[i] {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        '\\' => s.push('\\'),
                        '"' => s.push('"'),
                        '\'' => s.push('\''),
                        'x' | 'u' | 'U' => {
                            let n = match b[i] {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let hex: String = b[i + 1..(i + 1 + n).min(b.len())].iter().collect();
                            if let Some(ch) =
                                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                            {
                                s.push(ch);
                            }
                            i += n;
                        }
                        other => s.push(other),
                    }
                } else {
                    s.push(b[i]);
                }
                i += 1;
            }
            out.push(Tok::Str(s));
            i += 1;
        } else if c == '\'' {
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Other);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            out.push(Tok::Other);
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// Index just past the bracket matching the one at `open`.
fn matching(toks: &[Tok], open: usize) -> usize {
    let (o, c) = match toks[open] {
        Tok::Punct('(') => ('(', ')'),
        Tok::Punct('{') => ('{', '}'),
        _ => ('[', ']'),
    };
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if *t == Tok::Punct(o) {
            depth += 1;
        } else if *t == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return k + 1;
            }
        }
    }
    toks.len()
}

/// Splits the tokens between the parentheses at `open` into top-level arguments.
fn args(toks: &[Tok], open: usize) -> (Vec<&[Tok]>, usize) {
    let end = matching(toks, open);
    let inner = &toks[open + 1..end.saturating_sub(1).max(open + 1)];
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (k, t) in inner.iter().enumerate() {
        match t {
            Tok::Punct('(' | '{' | '[') => depth += 1,
            Tok::Punct(')' | '}' | ']') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                out.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        out.push(&inner[start..]);
    }
    (out, end)
}

struct Func {
    params: Vec<(String, String)>,
    body: Vec<Tok>,
}

struct Package {
    /// The krusty directory (test data is read relative to it).
    dir: PathBuf,
    consts: HashMap<String, String>,
    funcs: HashMap<String, Func>,
    /// Test functions in file order: (file stem, name).
    tests: Vec<(String, String)>,
}

fn eval(expr: &[Tok], scopes: &[&HashMap<String, String>]) -> Option<String> {
    if expr.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut i = 0;
    loop {
        match expr.get(i)? {
            Tok::Str(s) => {
                out.push_str(s);
                i += 1;
            }
            Tok::Ident(pkg)
                if (pkg == "filepath" || pkg == "path")
                    && expr.get(i + 1) == Some(&Tok::Punct('.'))
                    && expr.get(i + 2) == Some(&Tok::Ident("Join".into())) =>
            {
                let (parts, end) = args(expr, i + 3);
                let parts: Option<Vec<String>> = parts.iter().map(|p| eval(p, scopes)).collect();
                let joined = parts?
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push_str(&joined);
                i = end;
            }
            Tok::Ident(conv) if conv == "string" && expr.get(i + 1) == Some(&Tok::Punct('(')) => {
                let (inner, end) = args(expr, i + 1);
                out.push_str(&eval(inner.first()?, scopes)?);
                i = end;
            }
            Tok::Ident(name) => {
                out.push_str(scopes.iter().find_map(|s| s.get(name))?);
                i += 1;
            }
            _ => return None,
        }
        match expr.get(i) {
            None => return Some(out),
            Some(Tok::Punct('+')) => i += 1,
            Some(_) => return None,
        }
    }
}

fn parse_package(dir: &Path) -> Result<Package, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("_test.go"))
        .collect();
    files.sort();
    let mut pkg = Package {
        dir: dir.to_path_buf(),
        consts: HashMap::new(),
        funcs: HashMap::new(),
        tests: Vec::new(),
    };
    let mut pending_consts: Vec<(String, Vec<Tok>)> = Vec::new();
    for file in files {
        let src = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .trim_end_matches("_test.go")
            .to_string();
        let toks = tokenize(&src);
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Ident(kw) if kw == "func" => {
                    // Methods (`func (r T) Name`) are not inlined.
                    if toks.get(i + 1) == Some(&Tok::Punct('(')) {
                        let after = matching(&toks, i + 1);
                        i = skip_func(&toks, after);
                        continue;
                    }
                    let Some(Tok::Ident(name)) = toks.get(i + 1).cloned() else {
                        i += 1;
                        continue;
                    };
                    let (ps, after) = args(&toks, i + 2);
                    let params = ps
                        .iter()
                        .map(|p| {
                            let name = match p.first() {
                                Some(Tok::Ident(n)) => n.clone(),
                                _ => String::new(),
                            };
                            let ty = p
                                .iter()
                                .skip(1)
                                .map(|t| match t {
                                    Tok::Ident(s) => s.clone(),
                                    Tok::Punct(c) => c.to_string(),
                                    _ => String::new(),
                                })
                                .collect::<String>();
                            (name, ty)
                        })
                        .collect();
                    let end = skip_func(&toks, after);
                    let body_start = (after..end)
                        .find(|k| toks[*k] == Tok::Punct('{'))
                        .unwrap_or(end);
                    // The statements between the function's braces.
                    let body = toks
                        [(body_start + 1).min(end)..end.saturating_sub(1).max(body_start.min(end))]
                        .to_vec();
                    if name.starts_with("Test") {
                        pkg.tests.push((stem.clone(), name.clone()));
                    }
                    pkg.funcs.insert(name, Func { params, body });
                    i = end;
                }
                Tok::Ident(kw) if kw == "const" || kw == "var" => {
                    if toks.get(i + 1) == Some(&Tok::Punct('(')) {
                        let end = matching(&toks, i + 1);
                        let mut k = i + 2;
                        while k + 2 < end {
                            if let (Tok::Ident(n), Tok::Punct('=')) = (&toks[k], &toks[k + 1]) {
                                let mut e = k + 2;
                                while e < end - 1
                                    && !matches!(
                                        (&toks[e], toks.get(e + 1)),
                                        (Tok::Ident(_), Some(Tok::Punct('=')))
                                    )
                                {
                                    e += 1;
                                }
                                pending_consts.push((n.clone(), toks[k + 2..e].to_vec()));
                                k = e;
                            } else {
                                k += 1;
                            }
                        }
                        i = end;
                    } else if let (Some(Tok::Ident(n)), Some(Tok::Punct('='))) =
                        (toks.get(i + 1), toks.get(i + 2))
                    {
                        let mut e = i + 3;
                        while e < toks.len() && matches!(toks[e], Tok::Str(_) | Tok::Punct('+'))
                            || (e < toks.len()
                                && matches!(toks[e], Tok::Ident(_))
                                && matches!(
                                    toks.get(e - 1),
                                    Some(Tok::Punct('+')) | Some(Tok::Punct('='))
                                ))
                        {
                            e += 1;
                        }
                        pending_consts.push((n.clone(), toks[i + 3..e].to_vec()));
                        i = e;
                    } else {
                        i += 1;
                    }
                }
                Tok::Punct('{') => i = matching(&toks, i),
                _ => i += 1,
            }
        }
    }
    // Constants may refer to each other in any order.
    for _ in 0..4 {
        for (n, e) in &pending_consts {
            if !pkg.consts.contains_key(n)
                && let Some(v) = eval(e, &[&pkg.consts])
            {
                pkg.consts.insert(n.clone(), v);
            }
        }
    }
    Ok(pkg)
}

/// Index just past the body of a function whose signature ends somewhere after `from`.
fn skip_func(toks: &[Tok], from: usize) -> usize {
    let mut k = from;
    while k < toks.len() {
        match toks[k] {
            Tok::Punct('{') => return matching(toks, k),
            Tok::Punct('(') => k = matching(toks, k),
            _ => k += 1,
        }
    }
    toks.len()
}

const HARNESS_MAKERS: &[&str] = &["MakeHarness", "MakeEnhancedHarness"];
const PLUGIN_PREPS: &[&str] = &["PrepExecPlugin", "PrepGoPlugin", "BuildGoPlugin"];

struct Run<'p> {
    pkg: &'p Package,
    stem: String,
    test: String,
    files: BTreeMap<String, String>,
    cases: Vec<KrustyCase>,
    /// Local option variables changed away from the defaults.
    custom_opts: Vec<String>,
}

fn normalise(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

impl Run<'_> {
    /// Follows a helper function's body with its harness and string parameters bound.
    fn inline(
        &mut self,
        func: &Func,
        a: &[&[Tok]],
        harness: &[String],
        locals: &HashMap<String, String>,
        depth_limit: usize,
    ) -> Result<(), String> {
        let mut inner_locals = HashMap::new();
        let mut inner_harness = Vec::new();
        for (k, (pname, ty)) in func.params.iter().enumerate() {
            let arg = a.get(k);
            if ty.contains("Harness")
                || arg.is_some_and(|e| matches!(e, [Tok::Ident(v)] if harness.contains(v)))
            {
                inner_harness.push(pname.clone());
            } else if let Some(v) = arg.and_then(|e| eval(e, &[locals, &self.pkg.consts])) {
                inner_locals.insert(pname.clone(), v);
            }
        }
        let body = func.body.clone();
        self.walk(
            &body,
            &mut inner_harness,
            &mut inner_locals,
            depth_limit - 1,
        )
    }

    /// Follows `body` with `harness` as the harness variable's name.
    fn walk(
        &mut self,
        body: &[Tok],
        harness: &mut Vec<String>,
        locals: &mut HashMap<String, String>,
        depth_limit: usize,
    ) -> Result<(), String> {
        if depth_limit == 0 {
            return Err("helper functions nested too deeply".into());
        }
        let mut depth = 0usize;
        let mut i = 0;
        while i < body.len() {
            match &body[i] {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth = depth.saturating_sub(1),
                Tok::Ident(name) if HARNESS_MAKERS.contains(&name.as_str()) => {
                    if let Some(Tok::Ident(v)) = i.checked_sub(5).and_then(|k| body.get(k)) {
                        harness.push(v.clone());
                    }
                    if name == "MakeHarnessWithFs" {
                        return Err("custom file system".into());
                    }
                }
                Tok::Ident(name)
                    if name == "MakeHarnessWithFs"
                        || name == "MakeEnhancedHarnessWithTmpRoot"
                        || name == "GetFSys"
                        || name == "CreateKustDir" =>
                {
                    return Err(format!("uses {name} (its own file system)"));
                }
                Tok::Ident(name) if PLUGIN_PREPS.contains(&name.as_str()) => {
                    return Err(format!("{name}: needs a Go or exec plugin"));
                }
                Tok::Ident(v)
                    if harness.contains(v)
                        && body.get(i + 1) == Some(&Tok::Punct('.'))
                        && matches!(body.get(i + 3), Some(Tok::Punct('('))) =>
                {
                    let Some(Tok::Ident(method)) = body.get(i + 2) else {
                        i += 1;
                        continue;
                    };
                    let (a, end) = args(body, i + 3);
                    let scopes = [&*locals, &self.pkg.consts];
                    let is_io = matches!(
                        method.as_str(),
                        "WriteK" | "WriteC" | "WriteF" | "Run" | "RunWithErr" | "MkDir"
                    );
                    if is_io && depth > 0 {
                        return Err("harness used inside a block (loop, closure or branch)".into());
                    }
                    match method.as_str() {
                        "WriteK" | "WriteC" | "WriteF" => {
                            let (Some(p), Some(c)) = (
                                a.first().and_then(|e| eval(e, &scopes)),
                                a.get(1).and_then(|e| eval(e, &scopes)),
                            ) else {
                                return Err(format!("{method} with an argument not evaluated"));
                            };
                            let (path, content) = match method.as_str() {
                                "WriteK" => (
                                    format!("{p}/kustomization.yaml"),
                                    format!(
                                        "\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n{c}"
                                    ),
                                ),
                                "WriteC" => (
                                    format!("{p}/kustomization.yaml"),
                                    format!(
                                        "\napiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n{c}"
                                    ),
                                ),
                                _ => (p, c),
                            };
                            self.files.insert(normalise(&path), content);
                        }
                        "Run" | "RunWithErr" => {
                            let Some(p) = a.first().and_then(|e| eval(e, &scopes)) else {
                                return Err(format!("{method} path not evaluated"));
                            };
                            match a.get(1) {
                                Some([_, Tok::Punct('.'), Tok::Ident(m), ..])
                                    if m == "MakeDefaultOptions"
                                        || m == "MakeOptionsPluginsDisabled"
                                        || m == "MakeOptionsPluginsEnabled" => {}
                                Some([Tok::Ident(v)]) if !self.custom_opts.contains(v) => {}
                                _ => return Err("non-default build options".into()),
                            }
                            let n = self.cases.len();
                            self.cases.push(KrustyCase {
                                name: if n == 0 {
                                    format!("{}/{}", self.stem, self.test)
                                } else {
                                    format!("{}/{}#{}", self.stem, self.test, n + 1)
                                },
                                category: self.stem.clone(),
                                files: self.files.clone(),
                                path: normalise(&p),
                                expects_error: method == "RunWithErr",
                            });
                        }
                        _ => {}
                    }
                    i = end;
                    continue;
                }
                // `opts.Field = ...` makes `opts` non-default.
                Tok::Ident(v)
                    if body.get(i + 1) == Some(&Tok::Punct('.'))
                        && matches!(body.get(i + 3), Some(Tok::Punct('=')))
                        && body.get(i + 4) != Some(&Tok::Punct('=')) =>
                {
                    self.custom_opts.push(v.clone());
                }
                // `name := <string expression>`
                Tok::Ident(v)
                    if body.get(i + 1) == Some(&Tok::Punct(':'))
                        && body.get(i + 2) == Some(&Tok::Punct('=')) =>
                {
                    let mut e = i + 3;
                    while e < body.len()
                        && (matches!(body[e], Tok::Str(_) | Tok::Punct('+'))
                            || (matches!(body[e], Tok::Ident(_))
                                && matches!(body[e - 1], Tok::Punct('+') | Tok::Punct('='))
                                && !matches!(body.get(e + 1), Some(Tok::Punct('.' | '(')))))
                    {
                        e += 1;
                    }
                    let scopes = [&*locals, &self.pkg.consts];
                    if let Some(val) = eval(&body[i + 3..e], &scopes) {
                        locals.insert(v.clone(), val);
                    }
                }
                // `data, _ := os.ReadFile("./testdata/x")`: the module's own test data.
                Tok::Ident(v)
                    if body.get(i + 1) == Some(&Tok::Punct(','))
                        && body.get(i + 5) == Some(&Tok::Ident("os".into()))
                        && body.get(i + 7) == Some(&Tok::Ident("ReadFile".into())) =>
                {
                    let (a, end) = args(body, i + 8);
                    let scopes = [&*locals, &self.pkg.consts];
                    if let Some(content) = a
                        .first()
                        .and_then(|e| eval(e, &scopes))
                        .and_then(|p| std::fs::read_to_string(self.pkg.dir.join(p)).ok())
                    {
                        locals.insert(v.clone(), content);
                    }
                    i = end;
                    continue;
                }
                // `wrapper(t, func(t *testing.T) { ... })` at the top level: the closure's
                // statements are the test's.
                Tok::Ident(f)
                    if depth == 0
                        && body.get(i + 1) == Some(&Tok::Punct('('))
                        && !harness.contains(f) =>
                {
                    let (a, end) = args(body, i + 1);
                    if let Some(last) = a.last()
                        && last.first() == Some(&Tok::Ident("func".into()))
                        && let Some(open) = last.iter().position(|t| *t == Tok::Punct('{'))
                        && !self.pkg.funcs.get(f.as_str()).is_some_and(|func| {
                            func.params.iter().any(|(_, ty)| ty.contains("Harness"))
                        })
                    {
                        let close = matching(last, open);
                        let inner = last[open + 1..close.saturating_sub(1).max(open + 1)].to_vec();
                        self.walk(&inner, harness, locals, depth_limit - 1)?;
                        i = end;
                        continue;
                    }
                    if let Some(func) = self.pkg.funcs.get(f.as_str()) {
                        let passes_harness = a
                            .iter()
                            .any(|e| matches!(e, [Tok::Ident(v)] if harness.contains(v)));
                        if passes_harness {
                            self.inline(func, &a, harness, locals, depth_limit)?;
                            i = end;
                            continue;
                        }
                    }
                }
                // A helper taking the harness: inline it.
                Tok::Ident(f) if body.get(i + 1) == Some(&Tok::Punct('(')) => {
                    if let Some(func) = self.pkg.funcs.get(f.as_str()) {
                        let (a, end) = args(body, i + 1);
                        let passes_harness = a
                            .iter()
                            .any(|e| matches!(e, [Tok::Ident(v)] if harness.contains(v)));
                        if passes_harness {
                            if depth > 0 {
                                return Err(
                                    "harness used inside a block (loop, closure or branch)".into(),
                                );
                            }
                            self.inline(func, &a, harness, locals, depth_limit)?;
                            i = end;
                            continue;
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

/// Extracts every case of the krusty tests in `dir`.
pub fn extract(dir: &Path) -> Result<(Vec<KrustyCase>, Vec<Skipped>), String> {
    let pkg = parse_package(dir)?;
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    for (stem, test) in &pkg.tests {
        let Some(func) = pkg.funcs.get(test) else {
            continue;
        };
        let mut run = Run {
            pkg: &pkg,
            stem: stem.clone(),
            test: test.clone(),
            files: BTreeMap::new(),
            cases: Vec::new(),
            custom_opts: Vec::new(),
        };
        let mut harness = Vec::new();
        let mut locals = HashMap::new();
        let name = format!("{stem}/{test}");
        match run.walk(&func.body, &mut harness, &mut locals, 8) {
            Ok(()) if run.cases.is_empty() => skipped.push(Skipped {
                name,
                reason: "no build at the top level of the test".into(),
            }),
            Ok(()) => cases.extend(run.cases),
            Err(reason) => skipped.push(Skipped { name, reason }),
        }
    }
    Ok((cases, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_the_straight_line_shape() {
        let dir = std::env::temp_dir().join(format!("krusty-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("x_test.go"),
            r#"package krusty_test
const base = `
resources:
- a.yaml
`
func writeBase(th kusttest_test.Harness, name string) {
	th.WriteF(filepath.Join("base", name), "kind: ConfigMap\n")
}
func TestA(t *testing.T) {
	th := kusttest_test.MakeHarness(t)
	th.WriteK("/app/base", base + "namePrefix: p-\n")
	writeBase(th, "a.yaml")
	m := th.Run("/app/base", th.MakeDefaultOptions())
	_ = th.RunWithErr("base", th.MakeDefaultOptions())
}
func TestLoop(t *testing.T) {
	for _, tc := range cases {
		th := kusttest_test.MakeHarness(t)
		th.WriteK(".", tc.k)
	}
}
"#,
        )
        .expect("write");
        let (cases, skipped) = extract(&dir).expect("extract");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cases.len(), 2, "{cases:?}");
        assert_eq!(cases[0].name, "x/TestA");
        assert_eq!(cases[0].path, "app/base");
        assert!(
            cases[0].files["app/base/kustomization.yaml"].ends_with("- a.yaml\nnamePrefix: p-\n")
        );
        assert_eq!(cases[0].files["base/a.yaml"], "kind: ConfigMap\n");
        assert!(cases[1].expects_error);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].name, "x/TestLoop");
    }
}
