//! Keep freed buffers in the process while a run trains or evaluates (Linux, glibc).
//!
//! Every candle op allocates its output fresh. glibc serves allocations above its mmap
//! threshold (128 KiB, adaptively up to 32 MiB) with a new `mmap` and returns them with
//! `munmap` on free, and trims the heap's free top above its trim threshold: each step then
//! faults in its activation buffers page by page again. Profiling a MiniLM training step showed
//! about a quarter of its time in those page faults. PyTorch avoids them with a caching
//! allocator; here the same effect comes from glibc itself: while a run is active, large blocks
//! come from the heap and freed ones stay there for the next step's buffers of the same sizes.
//! When the last run ends, `malloc_trim` gives the memory back and the thresholds go to the
//! values glibc's own adaptation would reach for such buffers (see `platform::release`).
//!
//! Elsewhere (WASM, whose linear memory never shrinks; other C libraries) this does nothing.

use std::sync::Mutex;

/// How many runs hold the setting (several models may train in one process).
static ACTIVE: Mutex<usize> = Mutex::new(0);

/// While alive, freed memory is kept for reuse; dropping the last one releases it.
pub struct ReuseFreedMemory(());

impl ReuseFreedMemory {
    pub fn begin() -> Self {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        if *active == 0 {
            platform::keep();
        }
        *active += 1;
        ReuseFreedMemory(())
    }
}

impl Drop for ReuseFreedMemory {
    fn drop(&mut self) {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        *active -= 1;
        if *active == 0 {
            platform::release();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod platform {
    /// glibc's ceiling for its adaptive mmap threshold on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`).
    /// Setting a threshold with `mallopt` turns the adaptation off for the rest of the process,
    /// so the default (128 KiB, raised to the size of each large block freed) cannot be
    /// restored; restoring a fixed 128 KiB would make every later large allocation (inference
    /// after training, say) a fresh `mmap`. After a run, the adaptation would have raised the
    /// threshold to the run's largest activation buffer, so the ceiling is the nearest fixed
    /// value, and the trim threshold is twice it, as glibc's adaptation sets it.
    const ADAPTIVE_MMAP_CEILING: libc::c_int = 32 * 1024 * 1024;
    /// Above any activation or gradient buffer of the models kronlora trains on a CPU.
    const KEEP_THRESHOLD: libc::c_int = 1 << 30;

    pub fn keep() {
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_THRESHOLD);
        }
    }

    pub fn release() {
        // SAFETY: as above; malloc_trim releases free heap memory and is thread-safe.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ADAPTIVE_MMAP_CEILING);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * ADAPTIVE_MMAP_CEILING);
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod platform {
    pub fn keep() {}
    pub fn release() {}
}
