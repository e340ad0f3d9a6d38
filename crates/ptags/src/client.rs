//! A connection to ptagsd.

use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ptags_proto::{
    limits, read_frame, write_frame, Failure, Request, RequestFrame, Response, ResponseFrame,
};

pub struct Client {
    stream: UnixStream,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client> {
        let stream = UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot reach ptagsd at {} (is it running? --socket or PTAGS_SOCKET name another socket)",
                socket.display()
            )
        })?;
        Ok(Client { stream })
    }

    /// Sends one request. The outer error is a broken exchange; the inner
    /// one is the daemon's refusal.
    pub fn request(&mut self, req: Request) -> Result<Result<Response, Failure>> {
        write_frame(&mut self.stream, &RequestFrame::new(req).encode())
            .context("sending the request to ptagsd")?;
        let (body, ()) = read_frame(&mut self.stream, limits::MAX_RESPONSE, |_| Ok(()))
            .context("reading ptagsd's answer")?;
        ResponseFrame::decode(&body).map_err(|e| anyhow!("ptagsd answered oddly: {e}"))
    }
}
