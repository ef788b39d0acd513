//! Utilities for the slice primitive type (reduced: `[T]` methods of liballoc, Rust 1.28).

use core::mem;
use core::ptr;

use vec::Vec;

#[lang = "slice_alloc"]
#[cfg(not(test))]
impl<T> [T] {
    /// Copies `self` into a new `Vec`.
    #[stable(feature = "rust1", since = "1.0.0")]
    #[inline]
    pub fn to_vec(&self) -> Vec<T>
        where T: Clone
    {
        let mut vector = Vec::with_capacity(self.len());
        vector.extend_from_slice(self);
        vector
    }

    /// Converts `self` into a vector without clones or allocation.
    #[stable(feature = "rust1", since = "1.0.0")]
    #[inline]
    pub fn into_vec(self: Box<Self>) -> Vec<T> {
        unsafe {
            let b = Box::into_raw(self);
            let xs = Vec::from_raw_parts(b as *mut T, (*b).len(), (*b).len());
            mem::forget(b);
            xs
        }
    }
}
