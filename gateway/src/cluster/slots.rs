//! Redis Cluster's hash slots.

/// Hash slots of a Redis Cluster.
pub(crate) const COUNT: usize = 16384;

/// The slot of a key or shard channel: CRC16 (XMODEM) of the key, or of its hash tag (the
/// part between the first `{` and the next `}`, when not empty), modulo 16384.
pub(crate) fn of(key: &[u8]) -> u16 {
    let key = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16::State::<crc16::XMODEM>::calculate(key) % COUNT as u16
}
