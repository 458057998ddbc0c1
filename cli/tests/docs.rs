//! README.md and the pages of docs/ name files, commands and flags: every
//! one must exist. Read as a user would follow them: a link is opened, a
//! path under one of the repository's folders is looked up, a `hearth`
//! command is run with `--help` and its flags looked for in what it prints,
//! a `cargo ... -p P --bench B` names a package and a benchmark, a
//! `tests/run.sh LANE` a lane, and a script's `--flag` is in the script.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let root = repo();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The text a page shows as code: inline spans, and the lines of fenced
/// blocks in a shell language (the other languages are examples of API use,
/// which the bindings' tests compile).
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fence: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(lang.trim().to_string()),
            };
            continue;
        }
        match &fence {
            Some(lang) if lang == "sh" || lang == "bash" => {
                let command = line.split(" #").next().unwrap_or("").trim();
                if !command.is_empty() && !command.starts_with('#') {
                    spans.push(command.to_string());
                }
            }
            Some(_) => {}
            None => {
                let mut rest = line;
                while let Some(a) = rest.find('`') {
                    let after = &rest[a + 1..];
                    let Some(b) = after.find('`') else { break };
                    spans.push(after[..b].to_string());
                    rest = &after[b + 1..];
                }
            }
        }
    }
    spans
}

/// The targets of the page's markdown links `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(a) = rest.find("](") {
        let after = &rest[a + 2..];
        let Some(b) = after.find(')') else { break };
        out.push(after[..b].to_string());
        rest = &after[b + 1..];
    }
    out
}

/// The folders at the top of the repository: a code span that starts with
/// one of them is a path that must exist.
fn top_folders() -> BTreeSet<String> {
    std::fs::read_dir(repo())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "target")
        .collect()
}

/// The words of a span that are paths in the repository: they start with a
/// top folder and hold no placeholder.
fn repo_paths(span: &str, folders: &BTreeSet<String>) -> Vec<String> {
    span.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '(' || c == ')' || c == ';')
        .map(|w| w.trim_end_matches([':', '.']))
        .filter(|w| {
            let first = w.split('/').next().unwrap_or("");
            w.contains('/') && folders.contains(first)
        })
        .filter(|w| !w.contains(['<', '>', '*', '$', '{', '}']) && !w.contains("..."))
        .map(str::to_string)
        .collect()
}

fn hearth(args: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `hearth ...` command: its subcommand (one or two words) must answer
/// `--help`, and every `--flag` in the span must be in that help.
fn check_hearth_command(span: &str, problems: &mut Vec<String>) {
    let words: Vec<&str> = span.split_whitespace().collect();
    let mut sub: Vec<&str> = Vec::new();
    for w in &words[1..] {
        if w.starts_with('-') || !w.chars().all(|c| c.is_ascii_lowercase() || c == '|') {
            break;
        }
        sub.push(w);
    }
    // `hearth model keygen|sign|pubkey`: each alternative.
    let alternatives: Vec<Vec<&str>> = match sub.last() {
        Some(last) if last.contains('|') => {
            let head = &sub[..sub.len() - 1];
            last.split('|').map(|alt| head.iter().copied().chain([alt]).collect()).collect()
        }
        _ => vec![sub.clone()],
    };
    for sub in alternatives {
        let mut args = sub.clone();
        args.push("--help");
        let Some(help) = hearth(&args) else {
            problems.push(format!("`{span}`: `hearth {}` is not a command", sub.join(" ")));
            continue;
        };
        for w in &words {
            let flag = w.trim_matches(|c: char| c == '[' || c == ']' || c == '`' || c == ',');
            let flag = flag.split('=').next().unwrap();
            if flag.starts_with("--") && flag.len() > 2 && !help.contains(flag) {
                problems.push(format!("`{span}`: `hearth {}` has no flag {flag}", sub.join(" ")));
            }
        }
    }
}

/// The workspace's packages by name, with their folders (the root
/// Cargo.toml's `members`).
fn workspace_packages() -> BTreeMap<String, PathBuf> {
    let root = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = root.lines().find_map(|l| l.strip_prefix("members = ")).expect("a members line");
    members
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|m| repo().join(m.trim().trim_matches('"')))
        .map(|dir| {
            let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let name = toml.lines().find_map(|l| l.strip_prefix("name = ")).unwrap();
            (name.trim_matches('"').to_string(), dir)
        })
        .collect()
}

/// `cargo ... -p P [--bench B]`: the package, and its benchmark.
fn check_cargo_command(span: &str, problems: &mut Vec<String>) {
    let words: Vec<&str> = span.split_whitespace().collect();
    let packages = workspace_packages();
    let mut package = "hearth-core";
    for pair in words.windows(2) {
        if pair[0] == "-p" {
            if !packages.contains_key(pair[1]) {
                problems.push(format!("`{span}`: no package {}", pair[1]));
            }
            package = pair[1];
        }
    }
    for pair in words.windows(2) {
        if pair[0] == "--bench" {
            let Some(dir) = packages.get(package) else { continue };
            if !dir.join("benches").join(format!("{}.rs", pair[1])).exists() {
                problems.push(format!("`{span}`: no benchmark {}", pair[1]));
            }
        }
    }
}

/// `tests/run.sh LANE ...`: each lane is one the script knows.
fn check_lanes(span: &str, problems: &mut Vec<String>) {
    let script = std::fs::read_to_string(repo().join("tests/run.sh")).unwrap();
    let words: Vec<&str> = span.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| w.ends_with("tests/run.sh")) else { return };
    for lane in &words[at + 1..] {
        if lane.starts_with('-') || lane.contains(['`', '(', ')']) {
            break;
        }
        if !script.contains(&format!("lane_{lane}()")) {
            problems.push(format!("`{span}`: tests/run.sh has no lane {lane}"));
        }
    }
}

/// A repository script followed by `--flag`s: each flag is in the script or
/// in a file beside it that the script hands its options to.
fn check_script_flags(span: &str, path: &str, problems: &mut Vec<String>) {
    let file = repo().join(path);
    if !file.is_file() {
        return;
    }
    let words: Vec<&str> = span.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == path) else { return };
    let beside: String = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    for w in &words[at + 1..] {
        let flag = w.split('=').next().unwrap();
        if flag.starts_with("--") && !beside.contains(flag) {
            problems.push(format!("`{span}`: {path} takes no {flag}"));
        }
    }
}

#[test]
fn every_file_command_and_flag_the_docs_name_exists() {
    let root = repo();
    let folders = top_folders();
    let mut problems = Vec::new();
    let mut checked = 0usize;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(&root).unwrap().display().to_string();
        let before = problems.len();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            checked += 1;
            if !page.parent().unwrap().join(file).exists() {
                problems.push(format!("link to {target}, which does not exist"));
            }
        }
        for span in code_spans(&text) {
            for path in repo_paths(&span, &folders) {
                checked += 1;
                if !root.join(&path).exists() {
                    problems.push(format!("`{span}`: {path} does not exist"));
                }
                check_script_flags(&span, &path, &mut problems);
            }
            let first = span.split_whitespace().next().unwrap_or("");
            if first == "hearth" && span.split_whitespace().nth(1).is_some_and(|w| !w.starts_with('=')) {
                checked += 1;
                check_hearth_command(&span, &mut problems);
            }
            if first == "cargo" {
                checked += 1;
                check_cargo_command(&span, &mut problems);
            }
            if span.contains("tests/run.sh ") {
                checked += 1;
                check_lanes(&span, &mut problems);
            }
        }
        for p in &mut problems[before..] {
            *p = format!("{name}: {p}");
        }
    }
    assert!(checked > 100, "only {checked} names checked: is the scan reading the pages?");
    assert!(problems.is_empty(), "{} names in the docs do not exist:\n{}", problems.len(), problems.join("\n"));
}
