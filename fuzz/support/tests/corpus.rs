//! The seed corpus and the fuzz targets, on stable: every seed runs clean,
//! the committed files are what `seeds()` builds, arbitrary bytes run clean,
//! and every target in `fuzz/` is the one-line call into this crate.

use std::path::{Path, PathBuf};

use keyward_fuzz_support::{DetRng, LimitsCase, TARGETS, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(target: &str, bytes: &[u8]) {
    let Some((_, f)) = TARGETS.iter().find(|(name, _)| *name == target) else { panic!("unknown target {target}") };
    f(bytes);
}

#[test]
fn seeds_run_clean() {
    for (target, name, bytes) in seeds() {
        eprintln!("{target}/{name}");
        run(target, &bytes);
        if target == "limits" {
            let case = LimitsCase::read(&bytes);
            assert_eq!(case.write(), bytes, "limits seed {name} does not round-trip");
            assert_eq!(case.limits.validate(), Ok(()));
        }
    }
}

/// The committed corpus is what `seeds()` builds; regenerate it with
/// `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.
#[test]
fn committed_seeds_are_current() {
    let root = fuzz_dir().join("corpus");
    for (target, name, bytes) in seeds() {
        let path = root.join(target).join(format!("seed-{name}"));
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(on_disk == bytes, "{} is missing or stale", path.display());
    }
}

/// Hand-made seeds (a minimised crash, once fixed) are committed as
/// `corpus/<target>/seed-*` too: every one runs clean.
#[test]
fn committed_seeds_run_clean() {
    let mut seen = 0;
    for dir in std::fs::read_dir(fuzz_dir().join("corpus")).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_str().unwrap().to_owned();
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.file_name().unwrap().to_str().is_some_and(|n| n.starts_with("seed-")) {
                eprintln!("{}", path.display());
                run(&target, &std::fs::read(&path).unwrap());
                seen += 1;
            }
        }
    }
    assert!(seen >= seeds().len(), "only {seen} committed seeds");
}

#[test]
fn arbitrary_bytes_run_clean() {
    let mut rng = DetRng::new(b"unit");
    for len in 0..300usize {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        for (_, f) in TARGETS {
            f(&data);
        }
    }
}

/// `fuzz/Cargo.toml` builds exactly the targets of [`TARGETS`], each a file
/// holding the one-line call into this crate.
#[test]
fn every_target_is_one_line() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| bin.lines().find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')))
        .collect();
    let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    bins.sort_unstable();
    names.sort_unstable();
    assert_eq!(bins, names, "fuzz/Cargo.toml [[bin]]s and TARGETS differ");
    for name in names {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&path).unwrap();
        let want =
            format!("#![no_main]\n\nlibfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz_support::{name}(data));\n");
        assert_eq!(text, want, "{}", path.display());
    }
}
