//! The skip of a test that cannot run on this machine: for the unit tests of this crate, and
//! included by path in the blockmap crate's tests and the end-to-end tests.

/// A test that cannot run on this machine (not root, no loop devices, no mount, a tool
/// missing) calls this, then returns: it prints `SKIPPED <test>: <why>`. Where every test
/// must run it panics instead, so a skip cannot pass unseen: with `BLOCKREP_REQUIRE_ROOT=1`
/// (scripts/test sets it when it runs as root, as CI does), or in CI (`CI=true`) as root
/// unless `BLOCKREP_REQUIRE_ROOT=0`. A test named in `BLOCKREP_ALLOW_SKIP` (comma-separated
/// test names: what this machine's kernel cannot do, declared where the run is configured)
/// may still skip.
pub(crate) fn skip(test: &str, why: impl std::fmt::Display) {
    let required = match std::env::var("BLOCKREP_REQUIRE_ROOT").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::env::var("CI").is_ok_and(|v| v == "true") && effective_uid() == Some(0),
    };
    let allowed = std::env::var("BLOCKREP_ALLOW_SKIP")
        .is_ok_and(|list| list.split(',').any(|name| name.trim() == test));
    if required && !allowed {
        panic!(
            "{test} cannot run here: {why}; skipping is refused (BLOCKREP_REQUIRE_ROOT=1, or CI \
             as root): install what it needs, or name it in BLOCKREP_ALLOW_SKIP"
        );
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// This process's effective uid, from /proc/self/status (`Uid: real effective ...`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}
