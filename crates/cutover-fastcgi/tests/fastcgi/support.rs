//! A private php-fpm pool per test (cutover-teststack), with a world-readable directory
//! for the test's scripts.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use cutover_fastcgi::{Address, Client};
use cutover_teststack::{make_readable_by_workers, FpmOptions, PhpFpm};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Two static workers, no OPcache check at start (these tests do not need it).
pub fn options() -> FpmOptions {
    FpmOptions {
        workers: 2,
        check_opcache: false,
        stop_timeout: Duration::from_secs(5),
        ..FpmOptions::default()
    }
}

pub struct Pool {
    pub fpm: PhpFpm,
    pub addr: Address,
    pub scripts: PathBuf,
}

impl Pool {
    pub fn start() -> Pool {
        Pool::start_with(options())
    }

    pub fn start_with(options: FpmOptions) -> Pool {
        let fpm = PhpFpm::start(options).unwrap();
        let addr = Address::parse(&fpm.fastcgi_target().to_string()).unwrap();
        let scripts = fpm.dir().join("scripts");
        fs::create_dir(&scripts).unwrap();
        make_readable_by_workers(&scripts).unwrap();
        Pool { fpm, addr, scripts }
    }

    /// Writes a script the workers (running as nobody when we are root) can read.
    pub fn script(&self, name: &str, php: &str) -> PathBuf {
        let path = self.scripts.join(name);
        fs::write(&path, php).unwrap();
        make_readable_by_workers(&path).unwrap();
        path
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr, TIMEOUT).unwrap()
    }
}
