//! All integration tests in one binary: real php-fpm pools (`test_fpm`), a scripted fake
//! server for what php-fpm never does (`test_fake_server`), and property tests of the
//! decoders (`test_properties`).

mod alloc;
mod fake;
mod support;

mod test_api;
mod test_fake_server;
mod test_fpm;
mod test_properties;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
