//! The hook's client: blocking, since the hook is a short-lived process.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::HookError;
use super::protocol::{
    Ack, FRAME_HEADER, HeadInfo, MAX_REQUEST, MAX_RESPONSE, Request, Response, frame, frame_len,
};

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: std::os::unix::net::UnixStream,
}

impl Client {
    /// Connect to the daemon at `socket`; every read and write on the
    /// connection times out after `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, HookError> {
        let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
            HookError::Connect {
                path: socket.to_owned(),
                source,
            }
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client { stream })
    }

    /// Send one request and read its response.
    pub fn call(&mut self, request: &Request) -> Result<Response, HookError> {
        let body = request.encode();
        if body.len() > MAX_REQUEST {
            return Err(HookError::Protocol(format!(
                "request of {} bytes is over the daemon's limit of {MAX_REQUEST}",
                body.len()
            )));
        }
        let frame = frame(&body).ok_or_else(|| HookError::Protocol("too long".into()))?;
        // The daemon may refuse a connection (a uid it does not serve)
        // with an answer and close it before reading the request; writing
        // then fails, but the answer says why, so read it all the same.
        let written = self.stream.write_all(&frame);
        match (self.read_response(), written) {
            (Ok(response), _) => Ok(response),
            (Err(_), Err(write)) => Err(write.into()),
            (Err(read), Ok(())) => Err(read),
        }
    }

    fn read_response(&mut self) -> Result<Response, HookError> {
        let mut header = [0u8; FRAME_HEADER];
        self.stream.read_exact(&mut header)?;
        let len = frame_len(header);
        if len > MAX_RESPONSE {
            return Err(HookError::Protocol(format!("a response of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Response::decode(&body).map_err(HookError::Protocol)
    }

    /// Log the outputs of a build; returns once they are durable.
    pub fn submit(&mut self, drv: Option<&str>, outs: &[String]) -> Result<Ack, HookError> {
        let request = Request::Submit {
            drv: drv.map(str::to_owned),
            outs: outs.to_vec(),
        };
        match self.call(&request)? {
            Response::Ack(ack) if ack.indices.len() == outs.len() => Ok(ack),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The bundle of the newest statement about `store_path`.
    pub fn export(&mut self, store_path: &str) -> Result<Vec<u8>, HookError> {
        match self.call(&Request::Export {
            path: store_path.to_owned(),
        })? {
            Response::Bundle(b) => Ok(b),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The consistency proof from the current log's tree of `size1` leaves
    /// to that of `size2` (RFC 9162 section 2.1.4).
    pub fn consistency(&mut self, size1: u64, size2: u64) -> Result<Vec<[u8; 32]>, HookError> {
        match self.call(&Request::Consistency { size1, size2 })? {
            Response::Proof(p) => Ok(p),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The current log's head.
    pub fn head(&mut self) -> Result<HeadInfo, HookError> {
        match self.call(&Request::Head)? {
            Response::Head(h) => Ok(h),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }
}
