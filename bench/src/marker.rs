//! The marker every synthetic output line starts with: `@@<sent_us>:<team>:<agent>:<seq>@@`,
//! then padding to the line's size. The send time is wall-clock microseconds since the Unix
//! epoch: agents and viewers run on the same machine, so one clock serves both ends.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub sent_us: u64,
    pub team: u32,
    pub agent: u32,
    pub seq: u64,
}

/// One output line of `bytes` bytes (at least the marker), stamped now. Plain ASCII, so it
/// travels unescaped in JSON.
pub fn line(team: u32, agent: u32, seq: u64, bytes: usize) -> String {
    let mut line = format!("@@{}:{team}:{agent}:{seq}@@ ", now_us());
    if line.len() < bytes {
        line.extend(std::iter::repeat_n('x', bytes - line.len()));
    }
    line
}

/// The first marker in `buf`.
pub fn find(buf: &[u8]) -> Option<Marker> {
    let at = memchr::memmem::find(buf, b"@@")?;
    let mut rest = &buf[at + 2..];
    let mut field = || -> Option<u64> {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        let value = rest[..digits]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        rest = &rest[digits..];
        match rest.first() {
            Some(b':') => rest = &rest[1..],
            Some(b'@') if rest.get(1) == Some(&b'@') => rest = &rest[2..],
            _ => return None,
        }
        Some(value)
    };
    Some(Marker {
        sent_us: field()?,
        team: u32::try_from(field()?).ok()?,
        agent: u32::try_from(field()?).ok()?,
        seq: field()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_have_their_size() {
        let line = line(3, 4, 5, 512);
        assert_eq!(line.len(), 512);
        let framed = format!(r#"42["agent_output",{{"agentId":"a","data":"{line}","seq":5}}]"#);
        let marker = find(framed.as_bytes()).unwrap();
        assert_eq!((marker.team, marker.agent, marker.seq), (3, 4, 5));
        assert!(marker.sent_us > 1_600_000_000_000_000);
        assert!(find(b"no marker here").is_none());
        assert!(find(b"@@12:3@@").is_none());
    }
}
