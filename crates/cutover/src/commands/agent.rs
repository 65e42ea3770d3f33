use crate::error::{CommandError, Result};

/// `cutover agent`: serves one session on stdin/stdout (see cutover_pipeline::agent).
pub fn agent() -> Result<()> {
    cutover_pipeline::agent::serve_stdio().map_err(|e| CommandError::failed(format!("agent: {e}")))
}
