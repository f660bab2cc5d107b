//! Just enough WebSocket (RFC 6455) framing to follow the Kubernetes
//! streaming protocols (`v4.channel.k8s.io`, `v5.channel.k8s.io`) as they
//! pass through: where each frame starts and ends (so the connector can add
//! a frame of its own between two, never inside one), and the payloads
//! unmasked, with the channel byte each message starts with (for the
//! session recorder). Bytes are passed on unchanged; this only watches.

/// A piece of one message's payload, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The message's opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong);
    /// continuation frames carry their message's.
    pub opcode: u8,
    /// This piece starts the message (the channel byte comes first).
    pub first: bool,
    /// This piece ends the message.
    pub last: bool,
    pub data: &'a [u8],
}

/// Follows the frames of one direction of a WebSocket connection.
#[derive(Debug, Default)]
pub struct FrameReader {
    header: Vec<u8>,
    /// Payload bytes left in the current frame.
    left: u64,
    /// Payload bytes of the current frame seen so far (for the mask).
    offset: u64,
    mask: Option<[u8; 4]>,
    opcode: u8,
    /// The opcode of a fragmented message in progress.
    message_opcode: u8,
    /// The next payload byte starts a message.
    first: bool,
    /// The current frame ends its message (FIN).
    fin: bool,
    /// The stream is not WebSocket after all (a frame too long to be real).
    broken: bool,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Between two frames: a frame of the connector's own may go here.
    pub fn at_boundary(&self) -> bool {
        !self.broken && self.header.is_empty() && self.left == 0
    }

    /// How long the header being read is, once enough of it is known.
    fn header_len(&self) -> Option<usize> {
        if self.header.len() < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Some(2 + ext + if masked { 4 } else { 0 })
    }

    /// Feeds the bytes that passed; `on` sees each payload piece.
    pub fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Piece<'_>)) {
        let mut scratch = Vec::new();
        while !bytes.is_empty() && !self.broken {
            if self.left == 0 {
                // Reading a header.
                let want = self.header_len().unwrap_or(2);
                let take = (want - self.header.len().min(want)).min(bytes.len()).max(1);
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                let Some(len) = self.header_len() else {
                    continue;
                };
                if self.header.len() < len {
                    continue;
                }
                self.start_frame();
                if self.left == 0 {
                    // An empty frame still starts (and ends) a message.
                    on(Piece {
                        opcode: self.current_opcode(),
                        first: self.first,
                        last: self.fin,
                        data: &[],
                    });
                    self.end_frame();
                }
                continue;
            }
            let n = (self.left.min(bytes.len() as u64)) as usize;
            let (chunk, rest) = bytes.split_at(n);
            bytes = rest;
            let data: &[u8] = match self.mask {
                Some(m) => {
                    scratch.clear();
                    scratch.extend(
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ m[((self.offset + i as u64) % 4) as usize]),
                    );
                    &scratch
                }
                None => chunk,
            };
            on(Piece {
                opcode: self.current_opcode(),
                first: self.first,
                last: self.fin && self.left == n as u64,
                data,
            });
            self.first = false;
            self.offset += n as u64;
            self.left -= n as u64;
            if self.left == 0 {
                self.end_frame();
            }
        }
    }

    fn current_opcode(&self) -> u8 {
        if self.opcode == 0 {
            self.message_opcode
        } else {
            self.opcode
        }
    }

    fn start_frame(&mut self) {
        let h = std::mem::take(&mut self.header);
        self.fin = h[0] & 0x80 != 0;
        self.opcode = h[0] & 0x0f;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()),
                10,
            ),
            n => (u64::from(n), 2),
        };
        // Kubernetes frames are far smaller; a length like this means the
        // bytes are not WebSocket frames, and no frame is ever added.
        if len > 1 << 40 {
            self.broken = true;
            return;
        }
        self.mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        self.left = len;
        self.offset = 0;
        let control = self.opcode >= 8;
        if !control {
            if self.opcode != 0 {
                self.message_opcode = self.opcode;
                self.first = true;
            }
        } else {
            self.first = true;
        }
    }

    fn end_frame(&mut self) {
        self.first = false;
        self.mask = None;
    }
}

/// A server-to-client binary frame (unmasked), FIN set.
pub fn binary_frame(payload: &[u8]) -> Vec<u8> {
    frame(0x2, payload)
}

/// A server-to-client close frame with status 1000 (normal closure).
pub fn close_frame() -> Vec<u8> {
    frame(0x8, &1000u16.to_be_bytes())
}

fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        assert!(payload.len() < 126);
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn collect(r: &mut FrameReader, bytes: &[u8]) -> Vec<(u8, bool, bool, Vec<u8>)> {
        let mut out = Vec::new();
        r.feed(bytes, |p| {
            out.push((p.opcode, p.first, p.last, p.data.to_vec()))
        });
        out
    }

    #[test]
    fn frames_split_anywhere_are_followed() {
        let mut stream = binary_frame(b"\x01hello");
        stream.extend(masked(2, true, b"\x00typed", [1, 2, 3, 4]));
        stream.extend(binary_frame(&vec![7u8; 300]));
        // Byte by byte: every boundary is found, payloads unmasked.
        let mut r = FrameReader::new();
        let mut data = Vec::new();
        let mut boundaries = 0;
        for b in &stream {
            r.feed(std::slice::from_ref(b), |p| {
                if p.first {
                    data.push(Vec::new());
                }
                data.last_mut().unwrap().extend_from_slice(p.data);
            });
            if r.at_boundary() {
                boundaries += 1;
            }
        }
        assert_eq!(boundaries, 3);
        assert_eq!(data[0], b"\x01hello");
        assert_eq!(data[1], b"\x00typed");
        assert_eq!(data[2], vec![7u8; 300]);
        // All at once: the same.
        let mut r = FrameReader::new();
        let pieces = collect(&mut r, &stream);
        assert_eq!(pieces.len(), 3);
        assert!(r.at_boundary());
    }

    #[test]
    fn a_fragmented_message_keeps_its_opcode() {
        let mut stream = masked(2, false, b"\x01ab", [9, 9, 9, 9]);
        stream.extend(masked(0, true, b"cd", [5, 6, 7, 8]));
        let mut r = FrameReader::new();
        let pieces = collect(&mut r, &stream);
        assert_eq!(
            pieces,
            vec![
                (2, true, false, b"\x01ab".to_vec()),
                (2, false, true, b"cd".to_vec())
            ]
        );
    }

    #[test]
    fn the_middle_of_a_frame_is_no_boundary() {
        let f = binary_frame(b"\x01hello");
        let mut r = FrameReader::new();
        r.feed(&f[..4], |_| {});
        assert!(!r.at_boundary());
        r.feed(&f[4..], |_| {});
        assert!(r.at_boundary());
        r.feed(&[0x82], |_| {});
        assert!(!r.at_boundary(), "half a header");
    }
}
