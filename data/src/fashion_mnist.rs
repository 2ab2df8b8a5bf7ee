//! Fashion-MNIST (Debian `dataset-fashion-mnist`): 60,000 + 10,000 grey 28x28 images of
//! clothing in 10 classes, stored as gzipped IDX files.

use std::io::Read;
use std::path::Path;

use image::{GrayImage, RgbImage};

use crate::easy_vqa::Split;
use crate::error::{DataError, Result};

/// Class names, indexed by label.
pub(crate) const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGES_MAGIC: u32 = 0x0803;
const LABELS_MAGIC: u32 = 0x0801;

/// One split, all pixels in memory (47 MB for the training split).
#[derive(Clone, Debug)]
pub struct FashionMnist {
    pub rows: usize,
    pub cols: usize,
    /// `len() * rows * cols` grey values, image after image, row-major.
    pub pixels: Vec<u8>,
    /// Class index per image, into [`CLASSES`].
    pub labels: Vec<u8>,
}

impl FashionMnist {
    /// Loads a split from the folder holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`.
    pub fn load(root: &Path, split: Split) -> Result<Self> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = root.join(format!("{prefix}-images-idx3-ubyte.gz"));
        let labels_path = root.join(format!("{prefix}-labels-idx1-ubyte.gz"));
        if !images_path.is_file() || !labels_path.is_file() {
            return Err(DataError::MissingDataset {
                what: "Fashion-MNIST",
                path: root.to_path_buf(),
            });
        }
        let with_path = |path: &Path| {
            let name = path.display().to_string();
            move |e: DataError| match e {
                DataError::Idx { message, .. } => DataError::Idx {
                    source_name: name.clone(),
                    message,
                },
                other => other,
            }
        };
        let (n, rows, cols, pixels) =
            parse_idx_images(&read_gz(&images_path)?).map_err(with_path(&images_path))?;
        let labels = parse_idx_labels(&read_gz(&labels_path)?).map_err(with_path(&labels_path))?;
        if labels.len() != n {
            return Err(DataError::Invalid {
                path: labels_path,
                message: format!("{} labels for {n} images", labels.len()),
            });
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| usize::from(**l) >= CLASSES.len())
        {
            return Err(DataError::Invalid {
                path: labels_path,
                message: format!(
                    "label {l} of image {i} is not a class (0..{})",
                    CLASSES.len()
                ),
            });
        }
        Ok(FashionMnist {
            rows,
            cols,
            pixels,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<GrayImage> {
        let size = self.rows * self.cols;
        let px = self
            .pixels
            .get(i.checked_mul(size)?..i.checked_add(1)?.checked_mul(size)?)?;
        GrayImage::from_raw(self.cols as u32, self.rows as u32, px.to_vec())
    }

    /// Image `i`. Panics if `i >= len()`, like slice indexing; use [`FashionMnist::get`]
    /// for indices that come from a user.
    pub fn image(&self, i: usize) -> GrayImage {
        match self.get(i) {
            Some(img) => img,
            None => panic!("Fashion-MNIST index {i} out of range (len {})", self.len()),
        }
    }

    /// Image `i` with the grey value replicated to three channels. Panics like
    /// [`FashionMnist::image`].
    pub fn rgb(&self, i: usize) -> RgbImage {
        let grey = self.image(i);
        RgbImage::from_fn(grey.width(), grey.height(), |x, y| {
            let v = grey.get_pixel(x, y)[0];
            image::Rgb([v, v, v])
        })
    }

    /// The class name of image `i`.
    #[cfg(test)]
    pub(crate) fn class_name(&self, i: usize) -> Option<&'static str> {
        CLASSES.get(usize::from(*self.labels.get(i)?)).copied()
    }
}

fn read_gz(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}

fn idx_err(message: String) -> DataError {
    DataError::Idx {
        source_name: "<memory>".into(),
        message,
    }
}

/// Reads the big-endian u32 at word `k` of an IDX header.
fn header_u32(bytes: &[u8], k: usize) -> Result<u32> {
    bytes
        .get(4 * k..4 * k + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| idx_err(format!("truncated header: {} bytes", bytes.len())))
}

fn check_magic(bytes: &[u8], want: u32) -> Result<()> {
    let magic = header_u32(bytes, 0)?;
    if magic != want {
        return Err(idx_err(format!(
            "magic number {magic:#06x}, expected {want:#06x}"
        )));
    }
    Ok(())
}

/// Parses an uncompressed IDX3 image file: `(count, rows, cols, pixels)`.
pub(crate) fn parse_idx_images(bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    check_magic(bytes, IMAGES_MAGIC)?;
    let n = header_u32(bytes, 1)? as usize;
    let rows = header_u32(bytes, 2)? as usize;
    let cols = header_u32(bytes, 3)? as usize;
    let body = &bytes[16..];
    let want = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| idx_err(format!("absurd size {n}x{rows}x{cols}")))?;
    if body.len() != want {
        return Err(idx_err(format!(
            "{n} images of {rows}x{cols} need {want} bytes of pixels, found {}",
            body.len()
        )));
    }
    Ok((n, rows, cols, body.to_vec()))
}

/// Parses an uncompressed IDX1 label file.
pub(crate) fn parse_idx_labels(bytes: &[u8]) -> Result<Vec<u8>> {
    check_magic(bytes, LABELS_MAGIC)?;
    let n = header_u32(bytes, 1)? as usize;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(idx_err(format!(
            "{n} labels declared, found {} bytes",
            body.len()
        )));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(n: u32, rows: u32, cols: u32, body_len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, n, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..body_len).map(|i| i as u8));
        b
    }

    #[test]
    fn parses_well_formed_idx() {
        let (n, r, c, px) = parse_idx_images(&idx_images(2, 3, 4, 24)).unwrap();
        assert_eq!((n, r, c), (2, 3, 4));
        assert_eq!(px, (0..24).collect::<Vec<u8>>());
        let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
        labels.extend_from_slice(&3u32.to_be_bytes());
        labels.extend_from_slice(&[9, 0, 4]);
        assert_eq!(parse_idx_labels(&labels).unwrap(), [9, 0, 4]);
    }

    #[test]
    fn malformed_idx_is_an_error() {
        let good = idx_images(2, 3, 4, 24);
        // Truncated anywhere: in the header or in the pixels.
        for cut in [0, 3, 10, 15, 16, 23, 39] {
            assert!(parse_idx_images(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Trailing bytes are as suspicious as missing ones.
        assert!(parse_idx_images(&idx_images(2, 3, 4, 25)).is_err());
        // Wrong magic: a label file given as images, and vice versa.
        let mut bad = good.clone();
        bad[3] = 0x01;
        let err = parse_idx_images(&bad).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
        assert!(parse_idx_labels(&good).is_err());
        // A header claiming more than fits in memory does not overflow or allocate.
        assert!(parse_idx_images(&idx_images(u32::MAX, u32::MAX, u32::MAX, 0)).is_err());
        let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
        labels.extend_from_slice(&5u32.to_be_bytes());
        labels.extend_from_slice(&[1, 2]);
        assert!(parse_idx_labels(&labels).is_err());
        assert!(parse_idx_labels(&labels[..6]).is_err());
    }

    #[test]
    fn load_reports_missing_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            FashionMnist::load(dir.path(), Split::Test),
            Err(DataError::MissingDataset { .. })
        ));
        // Not gzip at all.
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), b"plain").unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), b"plain").unwrap();
        let err = FashionMnist::load(dir.path(), Split::Test).unwrap_err();
        assert!(
            err.to_string().contains("t10k-images-idx3-ubyte.gz"),
            "{err}"
        );
        // Valid gzip, bad IDX: the error names the file.
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, bytes).unwrap();
            e.finish().unwrap()
        };
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte.gz"),
            gz(&idx_images(1, 2, 2, 3)),
        )
        .unwrap();
        let err = FashionMnist::load(dir.path(), Split::Test).unwrap_err();
        assert!(
            err.to_string()
                .contains("t10k-images-idx3-ubyte.gz: bad IDX"),
            "{err}"
        );
        // Counts that disagree.
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte.gz"),
            gz(&idx_images(1, 2, 2, 4)),
        )
        .unwrap();
        let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
        labels.extend_from_slice(&2u32.to_be_bytes());
        labels.extend_from_slice(&[1, 2]);
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gz(&labels)).unwrap();
        let err = FashionMnist::load(dir.path(), Split::Test).unwrap_err();
        assert!(err.to_string().contains("2 labels for 1 images"), "{err}");
    }

    #[test]
    fn real_data() {
        let root = crate::test_root().join("fashion-mnist");
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let ds = FashionMnist::load(&root, split).unwrap();
            assert_eq!(ds.len(), n);
            assert_eq!((ds.rows, ds.cols), (28, 28));
            assert_eq!(ds.pixels.len(), n * 28 * 28);
            // Balanced classes: n/10 each.
            let mut per_class = [0usize; 10];
            ds.labels.iter().for_each(|&l| per_class[l as usize] += 1);
            assert_eq!(per_class, [n / 10; 10]);
            let img = ds.image(n - 1);
            assert_eq!(img.dimensions(), (28, 28));
            assert_eq!(img.as_raw()[..], ds.pixels[(n - 1) * 784..]);
            let rgb = ds.rgb(0);
            assert!(rgb
                .pixels()
                .zip(ds.image(0).pixels())
                .all(|(c, g)| c.0 == [g[0]; 3]));
            assert!(ds.get(n).is_none() && ds.get(usize::MAX).is_none());
            assert!(ds.class_name(0).is_some());
        }
        // The first test image is an ankle boot, a well-known fact of the data set.
        let ds = FashionMnist::load(&root, Split::Test).unwrap();
        assert_eq!(ds.class_name(0), Some("Ankle boot"));
    }
}
