//! Length-prefixed frames.

use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("the frame announces {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the frame ended after {got} of {len} bytes")]
    Truncated { got: usize, len: usize },
    #[error("the daemon holds too much request data now; try again")]
    Busy,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame's length. `Closed` when the peer closed cleanly
/// between frames.
fn read_len(r: &mut impl Read) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated { got, len: 4 }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(u32::from_be_bytes(len) as usize)
}

/// Reads one frame of at most `max` bytes. `reserve` is asked for the
/// frame's size before anything is allocated, so that a caller can refuse
/// a large frame (for example when too much data is in flight) without
/// reading it; its error is returned as is.
pub fn read_frame<R: Read, G>(
    r: &mut R,
    max: usize,
    reserve: impl FnOnce(usize) -> Result<G, FrameError>,
) -> Result<(Vec<u8>, G), FrameError> {
    let len = read_len(r)?;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let guard = reserve(len)?;
    let mut body = Vec::new();
    body.try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let got = r.take(len as u64).read_to_end(&mut body)?;
    if got < len {
        return Err(FrameError::Truncated { got, len });
    }
    Ok((body, guard))
}

pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
        read_frame(&mut &bytes[..], max, |_| Ok(())).map(|(b, ())| b)
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 10, |_| Ok(())).unwrap().0, b"hello");
        assert_eq!(read_frame(&mut r, 10, |_| Ok(())).unwrap().0, b"");
        assert!(matches!(
            read_frame(&mut r, 10, |_| Ok(())),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn bad_frames() {
        assert!(matches!(
            read(&[0, 0], 10),
            Err(FrameError::Truncated { got: 2, len: 4 })
        ));
        assert!(matches!(
            read(&[0, 0, 0, 5, b'a'], 10),
            Err(FrameError::Truncated { got: 1, len: 5 })
        ));
        assert!(matches!(
            read(&[0, 0, 0, 11], 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        // A huge announced length is refused before any allocation.
        assert!(matches!(
            read(&[0xff, 0xff, 0xff, 0xff], 10),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn reserve_can_refuse_before_reading() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").unwrap();
        let err = read_frame(&mut &buf[..], 10, |len| {
            assert_eq!(len, 3);
            Err::<(), _>(FrameError::TooLarge { len, max: 0 })
        });
        assert!(matches!(err, Err(FrameError::TooLarge { len: 3, max: 0 })));
    }
}
