//! Stamps the git commit the harness is built from, so that stored cases
//! and reports name the code that produced them (`KHALA_PARITY_GIT_COMMIT`,
//! read with `option_env!`); outside a git checkout nothing is stamped.

use std::process::Command;

fn git(arguments: &[&str]) -> Option<String> {
    let output = Command::new("git").args(arguments).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|text| !text.is_empty())
}

fn main() {
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=KHALA_PARITY_GIT_COMMIT={commit}");
    }
    // A new commit moves HEAD or the branch it points at.
    for path in ["HEAD", "refs/heads"] {
        if let Some(path) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
