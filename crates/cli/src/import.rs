//! `keyward key import --file`: many keys from a JSONL file.
//!
//! Two passes over the file. The first checks every line (JSON, the spec's
//! fields, then the engine's own checks, batch by batch, and hashes repeated
//! across the file) and writes nothing: a bad line stops the import before
//! any key is written, naming the line and the field. The second imports
//! the keys `batch` per commit, printing each committed batch's keys before
//! the next one begins. If a batch is refused then (the database changed
//! between the passes, or the store failed) the error says exactly which
//! lines were imported before it; those stay imported, each batch being
//! all or nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use keyward::{Actor, BatchKey, Engine, Error};
use keyward_core::WorkspaceId;
use serde_json::{Map, Value};

use crate::Fail;

/// Most bad lines one error lists.
const SHOWN: usize = 20;

/// The spec lines of a file: (line number, text), blank lines skipped.
struct Specs {
    reader: BufReader<File>,
    line: usize,
    read: u64,
}

impl Specs {
    fn open(path: &Path) -> Result<Self, Fail> {
        let file = File::open(path).map_err(|e| Fail(2, format!("{}: {e}", path.display())))?;
        Ok(Self { reader: BufReader::new(file), line: 0, read: 0 })
    }

    /// The next non-blank line, or `None` at the end.
    fn next_line(&mut self, path: &Path) -> Result<Option<(usize, String)>, Fail> {
        loop {
            let mut text = String::new();
            let n = self
                .reader
                .read_line(&mut text)
                .map_err(|e| Fail(2, format!("{} line {}: {e}", path.display(), self.line + 1)))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.read += n as u64;
            if !text.trim().is_empty() {
                return Ok(Some((self.line, text)));
            }
        }
    }

    /// Up to `n` specs with their line numbers; bad lines go to `bad`.
    fn chunk(&mut self, path: &Path, n: usize, bad: &mut Vec<String>) -> Result<Vec<(usize, BatchKey)>, Fail> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some((line, text)) = self.next_line(path)? else { break };
            match parse(&text) {
                Ok(spec) => out.push((line, spec)),
                Err(why) => bad.push(format!("line {line}: {why}")),
            }
        }
        Ok(out)
    }
}

fn parse(text: &str) -> Result<BatchKey, String> {
    keyward_http::import_spec(text.as_bytes()).map_err(|e| e.message)
}

/// A refusal of the engine's, as a line's error text.
fn reason(e: &Error) -> String {
    match e {
        Error::Invalid { field, message } => format!("{field}: {message}"),
        Error::AlreadyExists { .. } => "token/hash: a key with this hash already exists".into(),
        e => e.to_string(),
    }
}

/// The lines of a refused batch, or the error of a whole call.
fn refusals(e: Error, lines: &[usize]) -> Result<Vec<String>, Fail> {
    match e {
        Error::Batch { refused, .. } => Ok(refused
            .iter()
            .map(|(i, e)| format!("line {}: {}", lines.get(*i).copied().unwrap_or(0), reason(e)))
            .collect()),
        e => Err(Fail(2, e.to_string())),
    }
}

fn bar(show: bool, len: u64, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Imports the keys of `path` into `ws`, `batch` per commit.
pub(crate) fn run(engine: &Engine, ws: WorkspaceId, path: &Path, batch: usize, json: bool) -> Result<(), Fail> {
    let show = !json && std::io::stderr().is_terminal();
    let started = Instant::now();
    let shown = path.display();

    // Pass 1: check everything, write nothing.
    let size = std::fs::metadata(path).map_err(|e| Fail(2, format!("{shown}: {e}")))?.len();
    let checking = bar(show, size, "checking {bar:40} {bytes}/{total_bytes} ({eta} left)");
    let mut specs = Specs::open(path)?;
    let mut bad: Vec<String> = Vec::new();
    let mut hashes: HashMap<[u8; 32], usize> = HashMap::new();
    let mut total = 0usize;
    loop {
        let chunk = specs.chunk(path, batch, &mut bad)?;
        if chunk.is_empty() {
            break;
        }
        total += chunk.len();
        for (line, spec) in &chunk {
            let hash = match spec {
                BatchKey::Token { token, .. } => Some(token.hash()),
                BatchKey::Hash(i) => i.hash,
                _ => None,
            };
            if let Some(h) = hash
                && let Some(first) = hashes.insert(h.0, *line)
            {
                bad.push(format!("line {line}: token/hash: the same key as line {first}"));
            }
        }
        let lines: Vec<usize> = chunk.iter().map(|(l, _)| *l).collect();
        if let Err(e) = engine.check_keys(ws, chunk.into_iter().map(|(_, s)| s).collect(), &Actor::Admin) {
            bad.extend(refusals(e, &lines)?);
        }
        checking.set_position(specs.read);
        if bad.len() > SHOWN {
            break;
        }
    }
    checking.finish_and_clear();
    drop(hashes);
    if !bad.is_empty() {
        let line_of =
            |b: &String| b.split(':').next().and_then(|l| l.trim_start_matches("line ").parse::<usize>().ok());
        // Stable: a line's first reason stays first, and is the one kept.
        bad.sort_by_key(line_of);
        bad.dedup_by_key(|b| line_of(b));
        let more = if bad.len() > SHOWN { "\n  … (checking stopped here)" } else { "" };
        bad.truncate(SHOWN);
        return Err(Fail(2, format!("{shown}: nothing imported:\n  {}{more}", bad.join("\n  "))));
    }

    // Pass 2: import, one commit per batch.
    let importing = bar(show, total as u64, "importing {bar:40} {pos}/{len} keys ({per_sec}, {eta} left)");
    let mut specs = Specs::open(path)?;
    let mut out = std::io::stdout().lock();
    let (mut done, mut last_line, mut minted) = (0usize, 0usize, 0usize);
    loop {
        let mut bad = Vec::new();
        let chunk = specs.chunk(path, batch, &mut bad)?;
        let committed = || {
            if done == 0 {
                "no key was imported".to_owned()
            } else {
                format!("lines 1–{last_line} were imported ({done} keys, printed above)")
            }
        };
        if let Some(why) = bad.first() {
            return Err(Fail(2, format!("{shown} {why} (the file changed?); {}", committed())));
        }
        if chunk.is_empty() {
            break;
        }
        let lines: Vec<usize> = chunk.iter().map(|(l, _)| *l).collect();
        let created = match engine.create_keys(ws, chunk.into_iter().map(|(_, s)| s).collect(), &Actor::Admin) {
            Ok(c) => c,
            Err(e) => {
                let why = match refusals(e, &lines) {
                    Ok(lines) => lines.join("; "),
                    Err(Fail(_, m)) => m,
                };
                return Err(Fail(2, format!("{shown}: {why}; {}; nothing after them was written", committed())));
            }
        };
        for (line, k) in lines.iter().zip(&created) {
            let mut m = Map::new();
            m.insert("line".into(), (*line).into());
            m.insert("id".into(), k.info.id.to_string().into());
            m.insert("name".into(), k.info.name.clone().into());
            if let Some(t) = &k.token {
                m.insert("secret".into(), t.expose().into());
                minted += 1;
            }
            if let Some(s) = &k.signing {
                m.insert("api_secret".into(), s.api_secret.as_str().into());
                m.insert("user_id".into(), s.user_id.clone().into());
                m.insert("nonce".into(), s.nonce.into());
            }
            writeln!(out, "{}", Value::Object(m)).map_err(|e| Fail(2, format!("stdout: {e}")))?;
        }
        out.flush().map_err(|e| Fail(2, format!("stdout: {e}")))?;
        done += created.len();
        last_line = lines.last().copied().unwrap_or(last_line);
        importing.set_position(done as u64);
    }
    importing.finish_and_clear();
    if !json {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "imported {done} keys from {shown} ({minted} new, {} issued elsewhere) in {secs:.1} s",
            done - minted
        );
    }
    Ok(())
}
