//! The masker `clavitor run` puts between a command's output and the terminal: every occurrence
//! of a resolved value is replaced by `<concealed by clavitor>`, also when the value arrives
//! split across several writes.
//!
//! It holds back at most `longest value - 1` bytes (a tail that could still become a value) until
//! more output arrives or the stream ends. Must never: pass on a byte of a value, or keep bytes
//! unwiped (the tail and the values are `Zeroizing`).

use std::io::{self, Write};
use std::sync::Arc;

use zeroize::Zeroizing;

/// What replaces a value.
pub const MASK: &[u8] = b"<concealed by clavitor>";

/// The values to mask, longest first (so a value that contains another is masked whole).
#[derive(Clone, Default)]
pub struct Secrets(Arc<Inner>);

#[derive(Default)]
struct Inner {
    values: Vec<Zeroizing<Vec<u8>>>,
    /// Which bytes start some value: output runs of other bytes are copied without a search.
    starts: Vec<bool>,
}

impl Secrets {
    /// Empty values are dropped (there is nothing to mask).
    pub fn new<I: IntoIterator<Item = Zeroizing<Vec<u8>>>>(values: I) -> Self {
        let mut v: Vec<Zeroizing<Vec<u8>>> = values.into_iter().filter(|s| !s.is_empty()).collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.as_slice().cmp(b.as_slice())));
        v.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let mut starts = vec![false; 256];
        for s in &v {
            starts[usize::from(s[0])] = true;
        }
        Self(Arc::new(Inner { values: v, starts }))
    }

    pub fn max_len(&self) -> usize {
        self.0.values.first().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }
}

/// Wraps a writer; `write` passes masked output on, `finish` flushes the held-back tail.
pub struct Masker<W: Write> {
    out: W,
    secrets: Secrets,
    pending: Zeroizing<Vec<u8>>,
}

impl<W: Write> Masker<W> {
    pub fn new(out: W, secrets: Secrets) -> Self {
        let cap = secrets.max_len() * 2 + 8192;
        Self { out, secrets, pending: Zeroizing::new(Vec::with_capacity(cap)) }
    }

    /// Masks and writes what can be decided now; keeps a possible start of a value.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        // Fed in pieces so `pending` never outgrows its capacity (a reallocation would free an
        // unwiped copy of what it held).
        for piece in data.chunks(8192) {
            self.pending.extend_from_slice(piece);
            self.drain(false)?;
        }
        self.out.flush()
    }

    /// Writes the held-back tail (the stream has ended) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain(true)?;
        self.out.flush()?;
        let Masker { out, .. } = self;
        Ok(out)
    }

    fn drain(&mut self, at_end: bool) -> io::Result<()> {
        let buf = &self.pending[..];
        let mut out: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(buf.len() + MASK.len() * 4));
        let mut i = 0;
        let mut keep_from = buf.len();
        let inner = &*self.secrets.0;
        'scan: while i < buf.len() {
            if !inner.starts[usize::from(buf[i])] {
                let run = buf[i..].iter().position(|b| inner.starts[usize::from(*b)]).unwrap_or(buf.len() - i);
                if out.len() + run > out.capacity() {
                    self.out.write_all(&out)?;
                    out.clear();
                }
                out.extend_from_slice(&buf[i..i + run]);
                i += run;
                continue;
            }
            let rest = &buf[i..];
            if !at_end {
                // A value that could still complete here: wait for more output.
                for s in inner.values.iter() {
                    if rest.len() < s.len() && s.starts_with(rest) {
                        keep_from = i;
                        break 'scan;
                    }
                }
            }
            for s in inner.values.iter() {
                if rest.starts_with(s) {
                    if out.len() + MASK.len() > out.capacity() {
                        self.out.write_all(&out)?;
                        out.clear();
                    }
                    out.extend_from_slice(MASK);
                    i += s.len();
                    continue 'scan;
                }
            }
            if out.len() == out.capacity() {
                self.out.write_all(&out)?;
                out.clear();
            }
            out.push(buf[i]);
            i += 1;
        }
        self.out.write_all(&out)?;
        let keep = keep_from.min(self.pending.len());
        // Moves the tail to the front in place; the bytes left behind are overwritten or wiped.
        let len = self.pending.len();
        self.pending.copy_within(keep..len, 0);
        let tail = len - keep;
        zeroize::Zeroize::zeroize(&mut self.pending[tail..]);
        self.pending.truncate(tail);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(values: &[&str], pieces: &[&str]) -> String {
        let secrets = Secrets::new(values.iter().map(|v| Zeroizing::new(v.as_bytes().to_vec())));
        let mut m = Masker::new(Vec::new(), secrets);
        for p in pieces {
            m.push(p.as_bytes()).unwrap();
        }
        String::from_utf8(m.finish().unwrap()).unwrap()
    }

    #[test]
    fn masks_whole_and_split_values() {
        assert_eq!(mask(&["s3cr3t"], &["a s3cr3t b"]), "a <concealed by clavitor> b");
        assert_eq!(mask(&["s3cr3t"], &["a s3c", "r3t b"]), "a <concealed by clavitor> b");
        assert_eq!(mask(&["s3cr3t"], &["s", "3", "c", "r", "3", "t"]), "<concealed by clavitor>");
        assert_eq!(mask(&["s3cr3t"], &["s3cr3", ""]), "s3cr3");
        assert_eq!(mask(&["ab", "abcd"], &["xabc", "dy ab"]), "x<concealed by clavitor>y <concealed by clavitor>");
        assert_eq!(mask(&["abcd", "bc"], &["abc"]), "a<concealed by clavitor>");
        assert_eq!(mask(&[""], &["plain"]), "plain");
        let long = "x".repeat(20000) + "s3cr3t" + &"y".repeat(20000);
        assert_eq!(mask(&["s3cr3t"], &[&long]).matches("<concealed by clavitor>").count(), 1);
    }
}
