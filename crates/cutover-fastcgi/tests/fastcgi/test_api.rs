//! Addresses, request building and error texts, without a server.

use std::io;
use std::path::PathBuf;

use cutover_fastcgi::{Address, Error, Request};

#[test]
fn addresses_parse_from_the_forms_people_copy() {
    let unix = |p: &str| Address::Unix(PathBuf::from(p));
    let tcp = |s: &str| Address::Tcp(s.to_owned());
    for (input, expected) in [
        (
            "unix:/run/php/php8.2-fpm.sock",
            unix("/run/php/php8.2-fpm.sock"),
        ),
        ("/run/php/php8.2-fpm.sock", unix("/run/php/php8.2-fpm.sock")),
        ("./php.sock", unix("./php.sock")),
        ("unix:relative.sock", unix("relative.sock")),
        ("127.0.0.1:9000", tcp("127.0.0.1:9000")),
        ("localhost:9000", tcp("localhost:9000")),
        ("[::1]:9000", tcp("[::1]:9000")),
        (" 127.0.0.1:9000 ", tcp("127.0.0.1:9000")),
        ("9000", tcp("127.0.0.1:9000")),
    ] {
        assert_eq!(Address::parse(input).unwrap(), expected, "{input}");
        let shown = expected.to_string();
        assert_eq!(shown.parse::<Address>().unwrap(), expected, "{shown}");
    }
}

#[test]
fn bad_addresses_say_what_is_wrong() {
    for (input, reason) in [
        ("", "empty"),
        ("unix:", "socket path"),
        ("php-fpm", "host:port"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:70000", "port"),
        ("127.0.0.1:http", "port"),
        (":9000", "host"),
        ("::1:9000", "brackets"),
        ("0", "port"),
    ] {
        let err = Address::parse(input).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::InvalidAddress { .. }), "{input}");
        assert!(message.contains(reason), "{input}: {message}");
    }
}

#[test]
fn get_sets_the_cgi_variables_a_web_server_would() {
    let request = Request::get("/srv/app/current/public/status.php", "a=1&b=2");
    let param = |name: &str| {
        request
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        param("SCRIPT_FILENAME"),
        Some("/srv/app/current/public/status.php")
    );
    assert_eq!(request.script_filename(), param("SCRIPT_FILENAME"));
    assert_eq!(param("REQUEST_METHOD"), Some("GET"));
    assert_eq!(param("QUERY_STRING"), Some("a=1&b=2"));
    assert_eq!(param("SCRIPT_NAME"), Some("/status.php"));
    assert_eq!(param("REQUEST_URI"), Some("/status.php?a=1&b=2"));
    assert_eq!(param("DOCUMENT_ROOT"), Some("/srv/app/current/public"));
    assert_eq!(param("CONTENT_LENGTH"), None);
    assert!(request.stdin.is_empty());
}

#[test]
fn param_replaces_header_maps_and_post_sets_the_length() {
    let request = Request::post("/srv/a.php", "application/json", b"{}".to_vec())
        .param("QUERY_STRING", "x=1")
        .header("X-Forwarded-For", "10.0.0.1");
    let count = |name: &str| request.params.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("QUERY_STRING"), 1);
    let get = |name: &str| {
        request
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("QUERY_STRING").as_deref(), Some("x=1"));
    assert_eq!(get("HTTP_X_FORWARDED_FOR").as_deref(), Some("10.0.0.1"));
    assert_eq!(get("REQUEST_METHOD").as_deref(), Some("POST"));
    assert_eq!(get("CONTENT_TYPE").as_deref(), Some("application/json"));
    assert_eq!(get("CONTENT_LENGTH").as_deref(), Some("2"));
    assert_eq!(request.stdin, b"{}");
}

#[test]
fn permission_denied_on_the_socket_points_at_listen_owner() {
    // Root connects whatever the socket's mode, so this case is checked on the error alone.
    let err = Error::Connect {
        addr: Address::Unix("/run/php/php8.2-fpm.sock".into()),
        source: io::Error::from(io::ErrorKind::PermissionDenied),
    };
    assert_eq!(
        err.to_string(),
        "cannot connect to unix:/run/php/php8.2-fpm.sock: permission denied"
    );
    let hint = err.hint().unwrap();
    assert!(hint.contains("listen.owner"), "{hint}");
    assert!(hint.contains("listen.mode"), "{hint}");
}
