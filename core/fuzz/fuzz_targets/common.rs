//! Helpers shared by the fuzz targets: reading parameters from the front of the input and
//! cutting the rest into pieces.
#![allow(dead_code)]

/// Reads parameters from the front of a fuzz input; missing bytes read as zero.
pub struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    pub fn new(data: &'a [u8]) -> Params<'a> {
        Params { rest: data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `max` bytes, the first one saying how many follow.
    pub fn sizes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()) % (max + 1);
        self.take(n)
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Cuts `data` into consecutive pieces whose lengths cycle through `sizes` (a size byte `s` is a
/// piece of `s` bytes; zero-length pieces are kept, they are empty reads). With no non-zero size,
/// pieces of one byte.
pub fn pieces<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let cycle: Vec<usize> = if sizes.iter().any(|&s| s != 0) {
        sizes.iter().map(|&s| usize::from(s)).collect()
    } else {
        vec![1]
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let len = cycle[i % cycle.len()].min(data.len() - at);
        out.push(&data[at..at + len]);
        at += len;
        i += 1;
    }
    out
}
