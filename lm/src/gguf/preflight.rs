//! A bounded scan of a GGUF header before candle parses it.
//!
//! Why: candle's `gguf_file::Content::read` trusts the header's counts and lengths up to
//! generous caps (2^30 strings and array elements), and every metadata value it reads becomes a
//! `Value` of ~32 bytes: a crafted file of a few hundred MB could make it allocate tens of GB,
//! and a `general.alignment` of 0 makes it divide by zero. This scan walks the same layout
//! (GGUF v2/v3: little-endian, u64 lengths) without allocating anything the file declares,
//! checks every length against the bytes left in the file and against caps far above any real
//! model's, and only then lets candle parse. It also rejects what candle would accept silently
//! (a version it cannot read, duplicate keys or tensor names, an unknown tensor type).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek};

/// Most tensors a file may declare (a 405B LLaMA has ~1,100).
pub(crate) const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata entries a file may declare (real files have a few dozen).
pub(crate) const MAX_KV: u64 = 1 << 16;
/// Longest string (a chat template is a few KB, the longest merges a few hundred bytes).
pub(crate) const MAX_STRING: u64 = 16 << 20;
/// Most array elements over the whole header: vocabularies of 256k tokens with their scores,
/// types and merges stay near 1M; at this cap candle's `Value`s take at most ~256 MB.
pub(crate) const MAX_ARRAY_ELEMENTS: u64 = 1 << 23;
/// Deepest nesting of arrays (real files nest none).
const MAX_DEPTH: usize = 4;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Most elements of one tensor (keeps every size computation far from overflow).
pub(crate) const MAX_TENSOR_ELEMENTS: u64 = 1 << 40;

/// What the scan learned that the later checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) file_size: u64,
}

/// The ggml type ids candle's `GgmlDType::from_u32` knows.
fn known_ggml_type(id: u32) -> bool {
    matches!(id, 0..=3 | 6..=15 | 30)
}

/// The GGUF metadata value types with a fixed size on disk, by type id.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

struct Scanner<R> {
    r: R,
    pos: u64,
    size: u64,
    array_elements: u64,
}

impl<R: BufRead + Seek> Scanner<R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str) -> String {
        format!(
            "truncated: the file ({} bytes) ends inside {what} (at byte {})",
            self.size, self.pos
        )
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        if self.remaining() < N as u64 {
            return Err(self.truncated(what));
        }
        let mut buf = [0u8; N];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| format!("reading {what} at byte {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if n > self.remaining() {
            return Err(self.truncated(what));
        }
        let step = i64::try_from(n).map_err(|_| self.truncated(what))?;
        self.r
            .seek_relative(step)
            .map_err(|e| format!("skipping {what} at byte {}: {e}", self.pos))?;
        self.pos += n;
        Ok(())
    }

    /// A string's length, checked against the cap and the bytes left.
    fn string_len(&mut self, what: &str, cap: u64) -> Result<u64, String> {
        let len = self.u64(what)?;
        if len > cap {
            return Err(format!(
                "{what}: declared string length {len} exceeds the limit of {cap} bytes"
            ));
        }
        if len > self.remaining() {
            return Err(format!(
                "truncated or corrupt: {what}: declared string length {len} exceeds the {} bytes \
                 left in the file",
                self.remaining()
            ));
        }
        Ok(len)
    }

    /// A short string read in full (keys and tensor names).
    fn name(&mut self, what: &str) -> Result<String, String> {
        let len = self.string_len(what, 64 << 10)?;
        let mut buf = vec![0u8; len as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| format!("reading {what} at byte {}: {e}", self.pos))?;
        self.pos += len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Skips one value of type `ty` (bounded recursion through arrays).
    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<(), String> {
        let what = format!("the value of {key:?}");
        if let Some(n) = fixed_size(ty) {
            if ty == 7 {
                let [b] = self.bytes::<1>(&what)?;
                if b > 1 {
                    return Err(format!("{what}: a bool of value {b}"));
                }
                return Ok(());
            }
            return self.skip(n, &what);
        }
        match ty {
            STRING => {
                let len = self.string_len(&what, MAX_STRING)?;
                self.skip(len, &what)
            }
            ARRAY => self.array(depth, key),
            t => Err(format!("{what}: unknown metadata value type {t}")),
        }
    }

    fn array(&mut self, depth: usize, key: &str) -> Result<(), String> {
        let what = format!("the array {key:?}");
        if depth >= MAX_DEPTH {
            return Err(format!("{what}: nested deeper than {MAX_DEPTH} levels"));
        }
        let ty = self.u32(&what)?;
        let len = self.u64(&what)?;
        self.array_elements = self.array_elements.saturating_add(len);
        if self.array_elements > MAX_ARRAY_ELEMENTS {
            return Err(format!(
                "{what}: declared length {len} brings the header's array elements past the \
                 limit of {MAX_ARRAY_ELEMENTS}"
            ));
        }
        let min = match ty {
            STRING => 8,
            ARRAY => 12,
            t => fixed_size(t).ok_or_else(|| format!("{what}: unknown element type {t}"))?,
        };
        if len.saturating_mul(min) > self.remaining() {
            return Err(format!(
                "truncated or corrupt: {what}: declared length {len} needs at least {} bytes, \
                 only {} are left in the file",
                len.saturating_mul(min),
                self.remaining()
            ));
        }
        match fixed_size(ty) {
            Some(n) if ty != 7 => self.skip(len * n, &what),
            _ => (0..len).try_for_each(|_| self.value(ty, depth + 1, key)),
        }
    }

    /// `general.alignment`: candle divides by it, llama.cpp requires a power-of-two u32.
    fn alignment(&mut self, ty: u32) -> Result<(), String> {
        if ty != 4 {
            return Err(format!(
                "general.alignment has value type {ty}, not u32 (type 4)"
            ));
        }
        let a = self.u32("general.alignment")?;
        if a == 0 || !a.is_power_of_two() {
            return Err(format!(
                "general.alignment {a} is not a positive power of two"
            ));
        }
        Ok(())
    }

    fn tensor_info(&mut self, index: u64) -> Result<String, String> {
        let name = self.name(&format!("the name of tensor #{index}"))?;
        let what = format!("the info of tensor {name:?}");
        let n_dims = self.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {name:?} declares {n_dims} dimensions (at most {MAX_DIMS})"
            ));
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let d = self.u64(&what)?;
            elements = elements
                .checked_mul(d)
                .filter(|&e| e <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    format!("tensor {name:?} declares more than {MAX_TENSOR_ELEMENTS} elements")
                })?;
        }
        let ty = self.u32(&what)?;
        if !known_ggml_type(ty) {
            return Err(format!("tensor {name:?} has unknown ggml type {ty}"));
        }
        self.u64(&what)?; // offset, checked against the file once candle has parsed it
        Ok(name)
    }
}

/// Scans the header of the GGUF at `reader` (positioned at its start, `size` bytes long).
pub(crate) fn scan<R: Read + Seek>(reader: R, size: u64) -> Result<Header, String> {
    let mut s = Scanner {
        r: BufReader::new(reader),
        pos: 0,
        size,
        array_elements: 0,
    };
    if size == 0 {
        return Err("not a GGUF file: the file is empty".into());
    }
    let magic = s
        .bytes::<4>("the magic number")
        .map_err(|_| format!("not a GGUF file: only {size} bytes"))?;
    if &magic != b"GGUF" {
        return Err(format!(
            "not a GGUF file: it starts with {magic:02x?}, not \"GGUF\""
        ));
    }
    let version = s.u32("the version")?;
    if version != 2 && version != 3 {
        let hint = if (1..=3).contains(&version.swap_bytes()) {
            " (a big-endian file?)"
        } else {
            ""
        };
        return Err(format!(
            "GGUF version {version} is not supported (only versions 2 and 3){hint}"
        ));
    }
    let tensors = s.u64("the tensor count")?;
    let kvs = s.u64("the metadata count")?;
    if tensors > MAX_TENSORS || kvs > MAX_KV {
        return Err(format!(
            "the header declares {tensors} tensors and {kvs} metadata entries (limits \
             {MAX_TENSORS} and {MAX_KV})"
        ));
    }
    // every entry takes at least a length prefix, a type and a byte (metadata) or a length
    // prefix, a dimension count, a type and an offset (tensors)
    if kvs * 13 + tensors * 24 > s.remaining() {
        return Err(format!(
            "truncated: the header declares {tensors} tensors and {kvs} metadata entries, \
             more than the {size}-byte file can hold"
        ));
    }
    let mut keys = HashSet::new();
    for i in 0..kvs {
        let key = s.name(&format!("the key of metadata entry #{i}"))?;
        let ty = s.u32(&format!("the type of {key:?}"))?;
        if key == "general.alignment" {
            s.alignment(ty)?;
        } else {
            s.value(ty, 0, &key)?;
        }
        if !keys.insert(key.clone()) {
            return Err(format!("metadata key {key:?} appears twice"));
        }
    }
    let mut names = HashSet::new();
    for i in 0..tensors {
        let name = s.tensor_info(i)?;
        if !names.insert(name.clone()) {
            return Err(format!("tensor {name:?} appears twice"));
        }
    }
    Ok(Header {
        version,
        file_size: size,
    })
}
