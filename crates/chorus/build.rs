//! Puts the git commit the binary is built from into `CHORUS_COMMIT` (for
//! `chorus --version`): `CHORUS_COMMIT` from the environment when set (a build from a
//! tarball or a Docker context without `.git` can pass it), else `git rev-parse --short
//! HEAD`, else `unknown`. Never fails the build.

#![allow(clippy::print_stdout)] // how a build script talks to cargo

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CHORUS_COMMIT");
    let (commit, source) = match std::env::var("CHORUS_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => (commit.trim().to_owned(), "env"),
        _ => {
            // Rebuilt when HEAD moves: HEAD itself (a checkout, a detached commit), the
            // branch refs (a commit; the directory, since a fresh clone's branch is only
            // in packed-refs until its first commit writes the file) and packed refs. A
            // worktree keeps its HEAD in its own git dir and the refs in the common one.
            let own = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from);
            let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
                .map(PathBuf::from);
            let mut watched: Vec<PathBuf> = own.iter().map(|d| d.join("HEAD")).collect();
            if let Some(common) = &common {
                watched.push(common.join("packed-refs"));
                watched.push(common.join("refs").join("heads"));
            }
            for path in watched.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            match git(&["rev-parse", "--short=10", "HEAD"]) {
                Some(commit) => (commit, "git"),
                None => ("unknown".to_owned(), "none"),
            }
        }
    };
    println!("cargo:rustc-env=CHORUS_COMMIT={commit}");
    // Where it came from (`env`, `git` or `none`), for the test of `--version`.
    println!("cargo:rustc-env=CHORUS_COMMIT_SOURCE={source}");
}
