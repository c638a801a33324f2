//! Giving freed memory back to the operating system.
//!
//! mimalloc returns the pages of freed memory to the system lazily, on later allocations by the
//! same thread. A worker that has just closed many connections (a burst of slow consumers, the
//! end of a load spike) and then goes quiet would keep that memory resident; the worker asks
//! for it to be returned a moment after connections close.

/// Returns free memory to the operating system now (mimalloc's `mi_collect(force)`: the calling
/// thread's free pages, and every purge that would otherwise wait for its delay to pass, so
/// that what was freed just before the call goes back too).
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it trims the calling thread's heap and the
    // shared arenas, which mimalloc synchronises itself.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
