//! Response header values that share a per-thread buffer instead of an allocation each.
//!
//! A `HeaderValue` owns its bytes, so one built from a number or a formatted string costs an
//! allocation and a free on every response. The values made here are slices of a 4 KiB
//! buffer of the current thread: a few hundred of them share one allocation, and each costs
//! a reference count. A value keeps its buffer alive until it is dropped, so this is for
//! values that leave with a response, not for values kept for long.

use std::cell::RefCell;

use bytes::BytesMut;
use http::{HeaderValue, header::InvalidHeaderValue};

/// Bytes of one buffer; a longer value gets a buffer of its own size.
const BUFFER_BYTES: usize = 4096;

thread_local! {
    // Initialised as a constant: no lazy-initialisation check on each use.
    static BUFFER: RefCell<Option<BytesMut>> = const { RefCell::new(None) };
}

/// `bytes` as a header value in the thread's shared buffer; fails as
/// `HeaderValue::from_bytes` does (control characters).
pub(crate) fn shared(bytes: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
    BUFFER.with_borrow_mut(|buffer| {
        let buffer = match buffer {
            Some(buffer) if buffer.capacity() >= bytes.len() => buffer,
            _ => buffer.insert(BytesMut::with_capacity(BUFFER_BYTES.max(bytes.len()))),
        };
        buffer.extend_from_slice(bytes);
        // The value takes the written bytes; the buffer keeps the room after them.
        HeaderValue::from_maybe_shared(buffer.split().freeze())
    })
}

/// Text written into a fixed array, for values formatted without a heap buffer.
#[derive(Debug)]
pub(crate) struct Inline<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Inline<N> {
    /// An empty text.
    pub(crate) fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    /// The text written so far.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends the decimal digits of `n`.
    pub(crate) fn push_number(&mut self, n: u64) -> std::fmt::Result {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = n;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[start..])
    }

    /// Appends `bytes`; an error when they do not fit.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> std::fmt::Result {
        let end = self.len + bytes.len();
        self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_their_bytes_and_outlive_their_buffer() {
        let values: Vec<HeaderValue> = (0..2000).map(|i| shared(format!("value {i}").as_bytes()).unwrap()).collect();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(value, &format!("value {i}"));
        }
        let long = "x".repeat(BUFFER_BYTES * 2);
        assert_eq!(shared(long.as_bytes()).unwrap(), long.as_str(), "longer than a buffer");
        assert!(shared(b"bad\nvalue").is_err(), "checked as HeaderValue::from_bytes checks");
        assert_eq!(shared(b"after").unwrap(), "after", "a refused value leaves nothing behind");
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        for n in [0, 7, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX] {
            let mut text = Inline::<24>::new();
            text.push_number(n).unwrap();
            assert_eq!(text.as_bytes(), n.to_string().as_bytes());
        }
        let mut small = Inline::<2>::new();
        assert!(small.push_number(123).is_err(), "does not fit");
    }
}
