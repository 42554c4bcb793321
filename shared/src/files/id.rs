//! Content addressing: a file's ID is the BLAKE3 root of its chunk hashes.
//!
//! A file is cut into [`CHUNK_SIZE`] chunks; each chunk's BLAKE3 hash is a leaf, and
//! the ID is the BLAKE3 hash of a domain tag, the file size, the chunk size and the
//! leaves in order: a Merkle tree of depth one. A fetcher first gets the leaves (the
//! manifest), checks they hash to the ID, then checks every chunk against its leaf
//! before writing it.

use std::{fmt, fs::File, io::Read, path::Path, str::FromStr};

use serde::{Deserialize, Serialize};

/// Chunk size of the `jantar-file-v1` scheme.
pub const CHUNK_SIZE: u32 = 1 << 20;
const DOMAIN: &[u8] = b"jantar-file-v1";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId(#[serde(with = "hex_bytes")] pub [u8; 32]);

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<super::FileId>()
            .map(|id| id.0)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({self})")
    }
}

impl FromStr for FileId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(format!(
                "{s:?} is not a file ID: expected 64 hex characters, got {}",
                s.len()
            ));
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|e| format!("{s:?} is not a file ID: {e}"))?;
        Ok(FileId(b))
    }
}

impl FileId {
    /// The DHT key under which providers of this file are announced.
    pub fn dht_key(&self) -> libp2p::kad::RecordKey {
        let mut k = b"/jantar/file/".to_vec();
        k.extend_from_slice(&self.0);
        libp2p::kad::RecordKey::new(&k)
    }
}

/// Size, chunk size and chunk hashes of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub size: u64,
    pub chunk_size: u32,
    #[serde(with = "leaves")]
    pub leaves: Vec<[u8; 32]>,
}

mod leaves {
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&v.concat(), s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        if !b.len().is_multiple_of(32) {
            return Err(de::Error::custom(
                "chunk hashes are not a multiple of 32 bytes",
            ));
        }
        Ok(b.chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect())
    }
}

impl Manifest {
    pub fn root(&self) -> FileId {
        let mut h = blake3::Hasher::new();
        h.update(DOMAIN);
        h.update(&self.size.to_le_bytes());
        h.update(&self.chunk_size.to_le_bytes());
        for l in &self.leaves {
            h.update(l);
        }
        FileId(*h.finalize().as_bytes())
    }

    pub fn chunks(&self) -> u32 {
        self.leaves.len() as u32
    }

    /// Byte length of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        (self.size - start).min(u64::from(self.chunk_size))
    }

    /// Whether the manifest is internally consistent (size matches the chunk count).
    pub fn is_consistent(&self) -> bool {
        self.chunk_size > 0
            && self.leaves.len() as u64 == self.size.div_ceil(u64::from(self.chunk_size)).max(1)
    }

    /// True when `data` is chunk `index` of this file.
    pub fn verify_chunk(&self, index: u32, data: &[u8]) -> bool {
        self.leaves
            .get(index as usize)
            .is_some_and(|leaf| chunk_matches(data, self.chunk_len(index), leaf))
    }
}

/// True when `data` is the chunk `len` bytes long whose hash is `leaf`.
pub fn chunk_matches(data: &[u8], len: u64, leaf: &[u8; 32]) -> bool {
    data.len() as u64 == len && blake3::hash(data).as_bytes() == leaf
}

/// Hashes a file in chunks; memory stays at one chunk whatever the file size.
pub fn hash_file(path: &Path) -> std::io::Result<Manifest> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    let mut leaves = Vec::with_capacity(size.div_ceil(u64::from(CHUNK_SIZE)) as usize);
    let mut total = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 && !leaves.is_empty() {
            break;
        }
        leaves.push(*blake3::hash(&buf[..n]).as_bytes());
        total += n as u64;
        if n < buf.len() {
            break;
        }
    }
    if total != size {
        return Err(std::io::Error::other(format!(
            "{} changed while it was read ({size} bytes, then {total})",
            path.display()
        )));
    }
    Ok(Manifest {
        size,
        chunk_size: CHUNK_SIZE,
        leaves,
    })
}

/// Reads until `buf` is full or the file ends.
pub fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_roundtrip_and_errors() {
        let id = FileId([7; 32]);
        assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
        assert!(
            "abc"
                .parse::<FileId>()
                .unwrap_err()
                .contains("64 hex characters")
        );
        let bad = "z".repeat(64);
        assert!(bad.parse::<FileId>().unwrap_err().contains("not a file ID"));
    }

    #[test]
    fn manifest_of_file_verifies_chunks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..(CHUNK_SIZE as usize * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        let m = hash_file(&p).unwrap();
        assert_eq!(m.chunks(), 3);
        assert!(m.is_consistent());
        assert_eq!(m.chunk_len(2), 123);
        let c = CHUNK_SIZE as usize;
        assert!(m.verify_chunk(1, &data[c..2 * c]));
        assert!(!m.verify_chunk(0, &data[c..2 * c]));
        let mut bad = data[2 * c..].to_vec();
        bad[0] ^= 1;
        assert!(!m.verify_chunk(2, &bad));
        // The root commits to every leaf and the size.
        let mut other = m.clone();
        other.size -= 1;
        assert_ne!(other.root(), m.root());
        // Serde round trip (CBOR on the wire, JSON in the index).
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }

    #[test]
    fn empty_file_has_one_empty_chunk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e");
        std::fs::write(&p, b"").unwrap();
        let m = hash_file(&p).unwrap();
        assert_eq!(m.chunks(), 1);
        assert!(m.is_consistent());
        assert!(m.verify_chunk(0, b""));
    }
}
