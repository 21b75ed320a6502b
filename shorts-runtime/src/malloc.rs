//! Tuning of glibc's allocator for callback bodies of megabytes.
//!
//! A callback with inline files is a body of up to 4.45 MB, which the SQLite store copies twice
//! more on its way to disk. By default glibc serves allocations that large with pages that are
//! new to the process: by `mmap` until its adaptive threshold has grown past them, and afterwards
//! from a heap it trims as soon as twice that threshold lies free at its top, which two such
//! copies do. The kernel zeroes every new page on first touch. Measured with `shorts-bench files`,
//! an inline 3.3 MB file mapped about 2,200 new pages per callback; with the thresholds fixed at
//! 16 MiB (served from the heap) and 32 MiB (kept free before trimming) the same buffers are
//! reused: about 80 new pages per callback. BENCHMARKS.md has the CPU figures.
//!
//! The cost: each of glibc's arenas may keep up to 32 MiB free instead of returning it.
//!
//! [`crate::run`] applies this at start, unless `SHORTS_MALLOC_TUNING=off` or the environment
//! already sets either threshold (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or
//! `glibc.malloc.mmap_threshold` / `glibc.malloc.trim_threshold` in `GLIBC_TUNABLES`).

use crate::config::ConfigError;

/// The variable that turns the tuning off.
pub(crate) const TUNING_VAR: &str = "SHORTS_MALLOC_TUNING";

/// Whether to tune, from `SHORTS_MALLOC_TUNING`'s value: unset (or blank) tunes, `off` does not.
///
/// # Errors
///
/// Any other value, so that a misspelt setting is not silently ignored.
pub(crate) fn tuning_wanted(value: Option<&std::ffi::OsStr>) -> Result<bool, ConfigError> {
    let Some(value) = value else {
        return Ok(true);
    };
    match value.to_str().map(str::trim) {
        Some("") => Ok(true),
        Some("off") => Ok(false),
        _ => Err(ConfigError::Invalid {
            var: TUNING_VAR,
            reason: format!(
                "{value:?} is not understood; set it to `off` to leave glibc's allocator settings alone, or leave it unset"
            ),
        }),
    }
}

/// The mmap threshold: allocations up to this size come from the heap.
const MMAP_THRESHOLD: i32 = 16 << 20;
/// The trim threshold: free memory kept at the top of a heap before it is returned.
const TRIM_THRESHOLD: i32 = 32 << 20;

/// Fixes the allocator's thresholds, unless the environment sets its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    if thresholds_set_by(|name| std::env::var(name).ok()) {
        tracing::debug!("allocator thresholds left as the environment sets them");
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets allocator parameters, under the allocator's own lock; both
    // values are in the range glibc accepts (the mmap threshold may be at most 32 MiB on 64-bit).
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !applied {
        tracing::warn!("glibc refused the allocator thresholds; large callbacks will cost more CPU");
    }
}

/// Other allocators are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}

/// Whether the environment (read through `var`) sets glibc's mmap or trim threshold itself.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn thresholds_set_by(var: impl Fn(&str) -> Option<String>) -> bool {
    let tunables = var("GLIBC_TUNABLES").unwrap_or_default();
    var("MALLOC_MMAP_THRESHOLD_").is_some()
        || var("MALLOC_TRIM_THRESHOLD_").is_some()
        || tunables.split(':').any(|tunable| {
            tunable.starts_with("glibc.malloc.mmap_threshold=")
                || tunable.starts_with("glibc.malloc.trim_threshold=")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_off_turns_the_tuning_off_and_other_values_are_refused() {
        let wanted = |value: &str| tuning_wanted(Some(std::ffi::OsStr::new(value)));
        assert!(tuning_wanted(None).unwrap());
        assert!(wanted("").unwrap());
        assert!(wanted("  ").unwrap());
        assert!(!wanted("off").unwrap());
        assert!(!wanted(" off ").unwrap());
        for value in ["on", "OFF", "0", "false", "no", "offf"] {
            let error = wanted(value).unwrap_err().to_string();
            assert!(
                error.starts_with("`SHORTS_MALLOC_TUNING` is invalid: "),
                "{error}"
            );
            assert!(error.contains(&format!("{value:?}")), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    fn set_by(pairs: &[(&str, &str)]) -> bool {
        thresholds_set_by(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn only_the_two_thresholds_turn_the_tuning_off() {
        assert!(!set_by(&[]));
        assert!(!set_by(&[("MALLOC_ARENA_MAX", "2")]));
        assert!(!set_by(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0:glibc.malloc.arena_max=2"
        )]));
        assert!(set_by(&[("MALLOC_TRIM_THRESHOLD_", "0")]));
        assert!(set_by(&[("MALLOC_MMAP_THRESHOLD_", "131072")]));
        assert!(set_by(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0:glibc.malloc.trim_threshold=1"
        )]));
        assert!(set_by(&[("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1")]));
    }
}
