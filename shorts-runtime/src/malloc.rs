//! Tuning of glibc's allocator for callback bodies of megabytes.
//!
//! A callback with inline files is a body of up to 4.45 MB, which the SQLite store copies twice
//! more on its way to disk. By default glibc serves allocations that large with pages that are
//! new to the process: by `mmap` until its adaptive threshold has grown past them, and afterwards
//! from a heap it trims as soon as twice that threshold lies free at its top, which two such
//! copies do. The kernel zeroes every new page on first touch; on a virtual machine that costs
//! about 10 µs a page, and an inline 3.3 MB file cost more CPU in page faults (2,200 of them) than
//! in base64. With the thresholds fixed at 16 MiB (served from the heap) and 32 MiB (kept free
//! before trimming), those buffers reuse the same memory: about 90 faults per callback.
//!
//! [`crate::run`] applies this at start; `GLIBC_TUNABLES` or glibc's `MALLOC_*` variables, when
//! set, take precedence and turn it off.

/// Fixes the allocator's thresholds, unless the environment sets its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    let own = std::env::vars_os().any(|(name, _)| {
        let name = name.to_string_lossy();
        name == "GLIBC_TUNABLES" || name.starts_with("MALLOC_")
    });
    if own {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets allocator parameters, under the allocator's own lock; both
    // values are in the range glibc accepts (the mmap threshold may be at most 32 MiB on 64-bit).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

/// Other allocators are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}
