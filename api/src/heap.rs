//! What the heap holds: `oo` allocates through a counting wrapper (`cap::Cap` around mimalloc,
//! set up in `main.rs`) and registers here how to read its count, so that `/metrics` can report
//! `oo_heap_live_bytes` — the bytes allocated and not freed. Beside the resident memory it tells
//! a rise in live data (a leak, a cache) from memory the allocator keeps after a peak. Processes
//! that allocate otherwise (the tests) register nothing and report nothing.

use std::sync::OnceLock;

static PROBE: OnceLock<fn() -> usize> = OnceLock::new();

/// Registers how to read the bytes the process holds (once; later calls are ignored).
pub fn register(probe: fn() -> usize) {
    let _ = PROBE.set(probe);
}

/// The bytes the process holds, if a probe is registered.
pub fn live_bytes() -> Option<usize> {
    PROBE.get().map(|probe| probe())
}
