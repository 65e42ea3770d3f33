//! All integration tests in one binary (one link step instead of one per file). They run
//! the real `cutover` binary against real directories.

mod common;

mod test_deploy;
