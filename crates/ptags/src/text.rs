//! The text of a write, from arguments or standard input.

use std::io::Read;

use anyhow::{Context, Result};

/// The lines given as arguments, each ended by a newline; or, with none,
/// standard input as it is.
pub fn write_text(lines: &[String]) -> Result<Vec<u8>> {
    if lines.is_empty() {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the write from standard input")?;
        return Ok(buf);
    }
    Ok(lines
        .iter()
        .flat_map(|l| [l.as_bytes(), b"\n"])
        .flatten()
        .copied()
        .collect())
}

/// Splits a write into the longest prefix of whole lines that is valid
/// UTF-8 (what can be sent) and, when the text has invalid UTF-8, the
/// 1-based number of the line holding it (which fails with EINVAL once
/// the lines before it are applied, as the kernel interface would).
pub fn utf8_prefix(text: &[u8]) -> (&str, Option<usize>) {
    match std::str::from_utf8(text) {
        Ok(s) => (s, None),
        Err(e) => {
            let valid = &text[..e.valid_up_to()];
            let cut = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let line = valid[..cut].iter().filter(|&&b| b == b'\n').count() + 1;
            let prefix = std::str::from_utf8(&text[..cut]).expect("a prefix of valid UTF-8");
            (prefix, Some(line))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_cuts_at_its_line() {
        assert_eq!(utf8_prefix(b"+a\n+b\n"), ("+a\n+b\n", None));
        assert_eq!(utf8_prefix(b"+a\n+\xff\n+c\n"), ("+a\n", Some(2)));
        assert_eq!(utf8_prefix(b"\xff"), ("", Some(1)));
        assert_eq!(utf8_prefix(b"+a\n+b\n+\xc3"), ("+a\n+b\n", Some(3)));
    }
}
