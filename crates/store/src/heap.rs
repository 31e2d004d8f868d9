//! Giving the heap memory freed by a walk of the index back to the system.
//!
//! A walk of the whole index (the background verification, about 9 M entries at 200 cameras ×
//! 30 days) makes sled read every page once: each read allocates the page's node and values,
//! and its cache frees the least recently used page as it goes, so what is *in use* stays
//! bounded by `storage.index_cache_bytes`. glibc's `malloc` keeps what is freed in its
//! arenas for reuse, and a thread's arena gives memory back to the system only from its top:
//! pages freed in the middle of a heap fragmented by nodes of different sizes stay resident
//! (measured: docs/BENCHMARKS.md "Restart"). `malloc_trim(0)` releases every whole free page
//! of every arena (`madvise(MADV_DONTNEED)`), which the walk calls between batches.
//!
//! Not here: limiting what sled keeps (its cache setting, [`crate::index`]). On other C
//! libraries (musl, macOS) this does nothing: their allocators return memory differently.

/// Releases the free pages of glibc's arenas to the system (a few milliseconds for a heap of
/// a few hundred MiB: it walks the arenas' free lists, each under its lock).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    // SAFETY: `malloc_trim` takes no pointer and only rearranges glibc's own free lists; it
    // is safe to call from any thread at any time (it locks each arena it trims).
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// (No-op off glibc.)
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() {}
