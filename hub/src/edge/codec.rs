//! Framing of MQTT packets on a byte stream; the packets themselves are `mqttrs`'s.
//!
//! `mqttrs` decodes MQTT 3.1 (`MQIsdp`) and 3.1.1, which rumqttd's own codec does not
//! (it refuses 3.1, which OwnTracks on Android speaks). Two defects of `mqttrs` 0.4
//! are worked around here: it indexes past the end of some truncated packets (so a
//! decode runs under `catch_unwind`, and a panic counts as a malformed packet), and
//! it encodes a 3.1 CONNECT wrongly (so the edge only ever encodes 3.1.1 CONNECTs).

use bytes::{Buf, Bytes, BytesMut};
use mqttrs::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("unsupported protocol {0:?} level {1}")]
    UnsupportedProtocol(String, u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads whole packets from one side of a connection.
pub struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
    max_packet: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub fn new(inner: R, max_packet: usize) -> Self {
        PacketReader {
            inner,
            buf: BytesMut::with_capacity(4096),
            max_packet,
        }
    }

    /// The next whole packet's bytes, or `None` at a clean end of stream.
    ///
    /// Cancel-safe: the only await is a read into the buffer kept in `self`.
    pub async fn next(&mut self) -> Result<Option<Bytes>, CodecError> {
        loop {
            if let Some(len) = frame_len(&self.buf)? {
                if len > self.max_packet {
                    return Err(CodecError::TooLarge(len));
                }
                if self.buf.len() >= len {
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
                self.buf.reserve(len - self.buf.len());
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(CodecError::Malformed("stream ended inside a packet".into()))
                };
            }
        }
    }
}

/// Length of the first packet in `buf` (fixed header included), once its header is complete.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(2 + i + remaining));
        }
    }
    Err(CodecError::Malformed(
        "remaining length longer than four bytes".into(),
    ))
}

/// Decodes one whole packet.
pub fn decode(frame: &[u8]) -> Result<Packet<'_>, CodecError> {
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mqttrs::decode_slice(frame)));
    match decoded {
        Ok(Ok(Some(packet))) => Ok(packet),
        Ok(Ok(None)) => Err(CodecError::Malformed("truncated packet".into())),
        Ok(Err(mqttrs::Error::InvalidProtocol(name, level))) => {
            Err(CodecError::UnsupportedProtocol(name, level))
        }
        Ok(Err(e)) => Err(CodecError::Malformed(format!("{e:?}"))),
        Err(_) => Err(CodecError::Malformed(
            "packet fields run past its end".into(),
        )),
    }
}

/// Encodes one packet at the end of `out`, so that several go out in one write.
pub fn encode_into(packet: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut size = match packet {
        Packet::Publish(p) => p.topic_name.len() + p.payload.len() + 16,
        Packet::Subscribe(s) => {
            s.topics
                .iter()
                .map(|t| t.topic_path.len() + 3)
                .sum::<usize>()
                + 16
        }
        Packet::Unsubscribe(u) => u.topics.iter().map(|t| t.len() + 2).sum::<usize>() + 16,
        Packet::Suback(s) => s.return_codes.len() + 16,
        Packet::Connect(c) => {
            c.client_id.len()
                + c.username.map_or(0, str::len)
                + c.password.map_or(0, <[u8]>::len)
                + c.last_will
                    .as_ref()
                    .map_or(0, |w| w.topic.len() + w.message.len())
                + 64
        }
        _ => 16,
    };
    let start = out.len();
    loop {
        out.resize(start + size, 0);
        match mqttrs::encode_slice(packet, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(mqttrs::Error::WriteZero) if size < 1 << 28 => size *= 2,
            Err(e) => {
                out.truncate(start);
                return Err(CodecError::Malformed(format!("cannot encode: {e:?}")));
            }
        }
    }
}

/// Encodes one packet.
pub fn encode(packet: &Packet<'_>) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(packet, &mut out)?;
    Ok(out)
}

/// Encodes and writes one packet.
pub async fn write_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    packet: &Packet<'_>,
) -> Result<(), CodecError> {
    let bytes = encode(packet)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// Writes an already encoded packet unchanged.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Bytes,
) -> Result<(), CodecError> {
    w.write_all(frame.chunk()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqttrs::{Pid, Publish, QosPid};

    #[test]
    fn frames_are_delimited_by_the_remaining_length() -> Result<(), CodecError> {
        assert_eq!(frame_len(&[0x30])?, None);
        assert_eq!(frame_len(&[0x30, 0x05])?, Some(7));
        assert_eq!(frame_len(&[0x30, 0x80, 0x01])?, Some(131));
        assert!(frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        Ok(())
    }

    #[test]
    fn a_publish_round_trips() -> Result<(), CodecError> {
        let pid = Pid::try_from(7).map_err(|e| CodecError::Malformed(format!("{e:?}")))?;
        let p = Packet::Publish(Publish {
            dup: false,
            qospid: QosPid::AtLeastOnce(pid),
            retain: false,
            topic_name: "watch/v1/d/motion",
            payload: br#"{"motion":true}"#,
        });
        let bytes = encode(&p)?;
        assert_eq!(frame_len(&bytes)?, Some(bytes.len()));
        assert_eq!(decode(&bytes)?, p);
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let samples: [&[u8]; 5] = [
            &[0x10, 0x02, 0x00, 0x04],
            &[0x10, 0x03, 0x00, 0x04, b'M'],
            &[0x82, 0x03, 0x00, 0x01, 0x00],
            &[0xf0, 0x00],
            &[0x30, 0x01, 0x00],
        ];
        for s in samples {
            assert!(decode(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn mqtt_3_1_connect_is_understood() -> Result<(), CodecError> {
        // CONNECT, protocol "MQIsdp" level 3, clean session, keepalive 60, client id "c".
        let frame = [
            0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c,
            0x00, 0x01, b'c',
        ];
        match decode(&frame)? {
            Packet::Connect(c) => {
                assert_eq!(c.protocol, mqttrs::Protocol::MQIsdp);
                assert_eq!(c.client_id, "c");
                assert_eq!(c.keep_alive, 60);
            }
            other => panic!("decoded {other:?}"),
        }
        Ok(())
    }
}
