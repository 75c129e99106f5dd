//! Inputs written as `key value` lines, so that seeds are readable and libFuzzer's mutations
//! (and its dictionary of compared strings) work on the values: the key runs to the first space,
//! the value is the rest of the line, as raw bytes.

/// The `(key, value)` pairs of `data`; a line without a space is a key with an empty value.
pub fn pairs(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    data.split(|b| *b == b'\n')
        .map(|line| match line.iter().position(|b| *b == b' ') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &b""[..]),
        })
}
