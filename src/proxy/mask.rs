//! Masking injected values out of an upstream's answer before the agent sees it.
//!
//! Every occurrence of a value is overwritten with `*` of the same length, so `Content-Length`
//! stays true and framing is untouched. The body masker holds back the last `longest value - 1`
//! bytes of what it has seen, so a value split across chunks is still caught whole. Must never:
//! pass on a byte of a complete value, or change the length of anything.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use zeroize::Zeroizing;

/// What each byte of a value becomes.
pub const MASK_BYTE: u8 = b'*';

/// The values to mask, longest first.
#[derive(Clone, Default)]
pub struct Values(std::sync::Arc<Vec<Zeroizing<Vec<u8>>>>);

impl Values {
    pub fn new(values: impl IntoIterator<Item = Zeroizing<String>>) -> Self {
        let mut v: Vec<Zeroizing<Vec<u8>>> =
            values.into_iter().filter(|s| !s.is_empty()).map(|s| Zeroizing::new(s.as_bytes().to_vec())).collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.len()));
        Self(std::sync::Arc::new(v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn max_len(&self) -> usize {
        self.0.first().map_or(0, |v| v.len())
    }

    /// Overwrites every complete occurrence in place; true if anything was masked.
    pub fn mask_in_place(&self, buf: &mut [u8]) -> bool {
        let mut hit = false;
        for v in self.0.iter() {
            let mut from = 0;
            while let Some(at) = memchr::memmem::find(&buf[from..], v) {
                let start = from + at;
                buf[start..start + v.len()].fill(MASK_BYTE);
                from = start + v.len();
                hit = true;
            }
        }
        hit
    }

    /// A header value with the values masked; `None` if nothing needed masking.
    pub fn mask_header(&self, value: &hyper::header::HeaderValue) -> Option<hyper::header::HeaderValue> {
        let mut bytes = value.as_bytes().to_vec();
        if !self.mask_in_place(&mut bytes) {
            return None;
        }
        // '*' replacing valid header bytes keeps the value valid.
        hyper::header::HeaderValue::from_bytes(&bytes).ok()
    }
}

/// Why a response body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the upstream response is larger than the proxy's limit")]
    TooLarge,
    #[error("upstream: {0}")]
    Upstream(#[from] hyper::Error),
}

/// Streams an upstream body through the masker and a size limit, and reports the byte count
/// when it ends.
pub struct MaskedBody {
    inner: hyper::body::Incoming,
    values: Values,
    /// Bytes seen but not yet passed on (a possible start of a value).
    held: BytesMut,
    limit: u64,
    seen: u64,
    done: bool,
    on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl MaskedBody {
    pub fn new(
        inner: hyper::body::Incoming,
        values: Values,
        limit: u64,
        on_end: Box<dyn FnOnce(u64) + Send + Sync>,
    ) -> Self {
        Self { inner, values, held: BytesMut::new(), limit, seen: 0, done: false, on_end: Some(on_end) }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.seen);
        }
    }
}

impl Drop for MaskedBody {
    fn drop(&mut self) {
        // Wipes a held tail (it may be most of a value).
        zeroize::Zeroize::zeroize(&mut self.held[..]);
        self.finish();
    }
}

impl Body for MaskedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.finish();
                    if this.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    let mut tail = std::mem::take(&mut this.held);
                    this.values.mask_in_place(&mut tail);
                    return Poll::Ready(Some(Ok(Frame::data(tail.freeze()))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(frame) => {
                            // Trailers: masked like headers.
                            let Ok(mut trailers) = frame.into_trailers() else { continue };
                            for v in trailers.values_mut() {
                                if let Some(m) = this.values.mask_header(v) {
                                    *v = m;
                                }
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    };
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.done = true;
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    if this.values.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.held.extend_from_slice(&data);
                    this.values.mask_in_place(&mut this.held);
                    // A value not yet complete starts within the last max_len - 1 bytes.
                    let keep = (this.values.max_len() - 1).min(this.held.len());
                    let out = this.held.split_to(this.held.len() - keep);
                    if out.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Same-length masking: what the upstream declared is what the agent gets.
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: &[&str]) -> Values {
        Values::new(v.iter().map(|s| Zeroizing::new((*s).to_owned())))
    }

    #[test]
    fn masks_same_length_and_overlapping_values_whole() {
        let v = values(&["sk-123456", "Bearer sk-123456"]);
        let mut b = b"auth: Bearer sk-123456, again sk-123456!".to_vec();
        assert!(v.mask_in_place(&mut b));
        assert_eq!(&b[..], b"auth: ****************, again *********!");
        let h = hyper::header::HeaderValue::from_static("x sk-123456 y");
        assert_eq!(v.mask_header(&h).unwrap(), "x ********* y");
        assert!(v.mask_header(&hyper::header::HeaderValue::from_static("clean")).is_none());
    }

    #[test]
    fn a_value_split_across_chunks_is_masked() {
        // The streaming rule on its own: feed pieces, emit all but max_len - 1.
        let v = values(&["secretvalue"]);
        let input = b"aaaa secretvalue bbbb secretvalue".to_vec();
        for split in 1..input.len() {
            let mut held = BytesMut::new();
            let mut out = Vec::new();
            for piece in [&input[..split], &input[split..]] {
                held.extend_from_slice(piece);
                v.mask_in_place(&mut held);
                let keep = (v.max_len() - 1).min(held.len());
                out.extend_from_slice(&held.split_to(held.len() - keep));
            }
            v.mask_in_place(&mut held);
            out.extend_from_slice(&held);
            assert_eq!(out, b"aaaa *********** bbbb ***********", "split at {split}");
        }
    }
}
