use std::io::{BufReader, BufWriter};

use crate::error::{CommandError, Result};

/// `cutover agent`: serves one session on stdin/stdout (see cutover_pipeline::agent).
pub fn agent() -> Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    cutover_pipeline::agent::serve(&mut input, &mut output)
        .map_err(|e| CommandError::failed(format!("agent: {e}")))
}
