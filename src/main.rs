//! The `transbordo` command: see `transbordo --help`.

use std::alloc::{GlobalAlloc, Layout};

/// mimalloc: a loaded flow is hundreds of thousands of small allocations; glibc's
/// malloc spends a third of `check`'s time coalescing them and adds a header to each.
#[global_allocator]
static ALLOC: Mi = Mi(mimalloc::MiMalloc);

/// mimalloc, asked through its plain API where the alignment allows. `MiMalloc` asks
/// for every block through `mi_malloc_aligned`, which, whenever the current page of a
/// size class is full (all the time while a flow loads and the heap only grows), takes
/// an over-allocating path of ~200 instructions instead of the ordinary refill.
/// mimalloc's blocks are multiples of 8 bytes, so `mi_malloc` serves alignments up to 8.
struct Mi(mimalloc::MiMalloc);

/// The alignment every plain mimalloc block has.
const PLAIN_ALIGN: usize = 8;

// SAFETY: a request whose alignment mimalloc's plain blocks satisfy goes to the plain
// API, any other to `MiMalloc`; a block is freed or resized by the same API that gave
// it, since its layout's alignment decides both times.
unsafe impl GlobalAlloc for Mi {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            unsafe { self.0.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            unsafe { self.0.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            unsafe { self.0.realloc(ptr, layout, new_size) }
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    transbordo::cli::main().await
}
