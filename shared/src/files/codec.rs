//! The transfer protocol's wire format.
//!
//! - `/jantar/file/1.1.0` (preferred): requests are CBOR; a response is one tag byte,
//!   then for a chunk its length (u32, little endian) and its bytes as they are, for a
//!   manifest its CBOR encoding, for "not found" nothing. A chunk is read straight into
//!   a buffer of its announced length and written straight from the one read off disk.
//! - `/jantar/file/1.0.0`: requests and responses are CBOR (libp2p's CBOR codec),
//!   spoken with peers that do not know 1.1.0.
//!
//! CBOR around a 1 MiB chunk cost a copy on each side and, on the receiving side, a
//! buffer grown (and zeroed) step by step to its size; `docs/benchmarks.md` has the
//! profile.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

use super::{
    id::CHUNK_SIZE,
    protocol::{Request, Response},
};

/// The framed protocol, preferred.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/jantar/file/1.1.0");
/// The all-CBOR protocol of earlier versions.
pub const PROTOCOL_CBOR: StreamProtocol = StreamProtocol::new("/jantar/file/1.0.0");

/// Largest request: a file ID and an index.
const MAX_REQUEST: u64 = 1024;
/// Largest response: a chunk, or a manifest of up to 65536 chunks (files up to 64 GiB).
const MAX_RESPONSE: u64 = 2 * 1024 * 1024 + 4096;

const TAG_CHUNK: u8 = 0;
const TAG_MANIFEST: u8 = 1;
const TAG_NOT_FOUND: u8 = 2;
const TAG_BUSY: u8 = 3;

/// Speaks both protocols, by the one negotiated.
#[derive(Clone, Default)]
pub struct Codec {
    cbor: request_response::cbor::codec::Codec<Request, Response>,
}

impl Codec {
    pub fn new() -> Self {
        Codec {
            cbor: request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_REQUEST)
                .set_response_size_maximum(MAX_RESPONSE),
        }
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        // Requests are CBOR in both versions.
        self.cbor.read_request(p, io).await
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        if *p != PROTOCOL {
            return self.cbor.read_response(p, io).await;
        }
        let mut tag = [0u8; 1];
        io.read_exact(&mut tag).await?;
        match tag[0] {
            TAG_CHUNK => {
                let mut len = [0u8; 4];
                io.read_exact(&mut len).await?;
                let len = u32::from_le_bytes(len);
                if len > CHUNK_SIZE {
                    return Err(invalid(format!(
                        "chunk of {len} bytes announced, above the {CHUNK_SIZE}-byte chunk size"
                    )));
                }
                let mut data = vec![0u8; len as usize];
                io.read_exact(&mut data).await?;
                Ok(Response::Chunk(serde_bytes::ByteBuf::from(data)))
            }
            TAG_MANIFEST => {
                let mut body = Vec::new();
                io.take(MAX_RESPONSE).read_to_end(&mut body).await?;
                let manifest = cbor4ii::serde::from_slice(&body)
                    .map_err(|e| invalid(format!("malformed manifest: {e}")))?;
                Ok(Response::Manifest(manifest))
            }
            TAG_NOT_FOUND => Ok(Response::NotFound),
            TAG_BUSY => Ok(Response::Busy),
            other => Err(invalid(format!("unknown response tag {other}"))),
        }
    }

    async fn write_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.cbor.write_request(p, io, req).await
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if *p != PROTOCOL {
            let res = match res {
                Response::Busy => Response::NotFound,
                other => other,
            };
            return self.cbor.write_response(p, io, res).await;
        }
        match res {
            Response::Chunk(data) => {
                let len = u32::try_from(data.len())
                    .ok()
                    .filter(|l| *l <= CHUNK_SIZE)
                    .ok_or_else(|| invalid(format!("chunk of {} bytes", data.len())))?;
                let mut head = [TAG_CHUNK, 0, 0, 0, 0];
                head[1..].copy_from_slice(&len.to_le_bytes());
                io.write_all(&head).await?;
                io.write_all(&data).await?;
            }
            Response::Manifest(m) => {
                let body = cbor4ii::serde::to_vec(vec![TAG_MANIFEST], &m)
                    .map_err(|e| invalid(format!("cannot encode a manifest: {e}")))?;
                io.write_all(&body).await?;
            }
            Response::NotFound => io.write_all(&[TAG_NOT_FOUND]).await?,
            Response::Busy => io.write_all(&[TAG_BUSY]).await?,
        }
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use futures::{executor::block_on, io::Cursor};
    use request_response::Codec as _;

    use super::*;
    use crate::files::{FileId, id::Manifest};

    fn round_trip(p: &StreamProtocol, res: Response) -> io::Result<(Response, usize)> {
        block_on(async {
            let mut codec = Codec::new();
            let mut wire = Cursor::new(Vec::new());
            codec.write_response(p, &mut wire, res).await?;
            let bytes = wire.into_inner();
            let len = bytes.len();
            let back = codec.read_response(p, &mut Cursor::new(bytes)).await?;
            Ok((back, len))
        })
    }

    fn manifest() -> Manifest {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 * CHUNK_SIZE as usize / 2]).unwrap();
        crate::files::id::hash_file(&path).unwrap()
    }

    #[test]
    fn both_protocols_carry_every_response() {
        let chunk = vec![42u8; CHUNK_SIZE as usize];
        let m = manifest();
        for p in [PROTOCOL, PROTOCOL_CBOR] {
            match round_trip(&p, Response::Chunk(chunk.clone().into())).unwrap() {
                (Response::Chunk(d), len) => {
                    assert_eq!(d.as_slice(), chunk.as_slice());
                    if p == PROTOCOL {
                        assert_eq!(len, chunk.len() + 5, "tag, length, bytes");
                    }
                }
                other => panic!("{p}: {other:?}"),
            }
            match round_trip(&p, Response::Manifest(m.clone())).unwrap().0 {
                Response::Manifest(back) => assert_eq!(back, m),
                other => panic!("{p}: {other:?}"),
            }
            assert!(matches!(
                round_trip(&p, Response::NotFound).unwrap().0,
                Response::NotFound
            ));
            // "Busy" is the framed protocol's; the CBOR one says "not found".
            match (round_trip(&p, Response::Busy).unwrap().0, p == PROTOCOL) {
                (Response::Busy, true) | (Response::NotFound, false) => {}
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn requests_are_cbor_in_both() {
        let req = Request::Chunk {
            id: FileId([3; 32]),
            index: 9,
        };
        block_on(async {
            let mut codec = Codec::new();
            let mut a = Cursor::new(Vec::new());
            codec
                .write_request(&PROTOCOL, &mut a, req.clone())
                .await
                .unwrap();
            let mut b = Cursor::new(Vec::new());
            codec
                .write_request(&PROTOCOL_CBOR, &mut b, req)
                .await
                .unwrap();
            assert_eq!(a.get_ref(), b.get_ref());
            let back = codec
                .read_request(&PROTOCOL, &mut Cursor::new(a.into_inner()))
                .await
                .unwrap();
            assert!(matches!(back, Request::Chunk { index: 9, .. }));
        });
    }

    #[test]
    fn oversized_truncated_and_unknown_responses_are_refused() {
        let read = |bytes: Vec<u8>| {
            block_on(Codec::new().read_response(&PROTOCOL, &mut Cursor::new(bytes)))
        };
        let mut huge = vec![TAG_CHUNK];
        huge.extend_from_slice(&(CHUNK_SIZE + 1).to_le_bytes());
        let e = read(huge).unwrap_err();
        assert!(e.to_string().contains("above the"), "{e}");

        let mut short = vec![TAG_CHUNK];
        short.extend_from_slice(&10u32.to_le_bytes());
        short.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            read(short).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );

        let e = read(vec![9]).unwrap_err();
        assert!(e.to_string().contains("unknown response tag 9"), "{e}");
        let e = read(vec![TAG_MANIFEST, 0xff, 0x00]).unwrap_err();
        assert!(e.to_string().contains("malformed manifest"), "{e}");
    }
}
