//! Compile tests for `#[ai_short]`: what it accepts (`ui/pass`) and how it reports each mistake
//! (`ui/fail`, one mistake per file, with the expected `.stderr`).
//!
//! The `.stderr` files depend on the compiler's wording, so the test runs only on the pinned
//! toolchain; regenerate them with `TRYBUILD=overwrite cargo test -p shorts-tests --test ui` and
//! read the diff.

#[rustversion::attr(not(stable(1.95)), ignore)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
