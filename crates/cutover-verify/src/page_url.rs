//! The page under load, and which of the URLs it references are its own.

use url::Url;

use crate::Error;

/// An `http://` URL with a host. The scheme is matched in any case (`HTTP://` is
/// `http://`, as RFC 3986 has it); `https://` is refused: verify requests the app where it
/// runs, not through TLS.
#[derive(Debug, Clone)]
pub struct PageUrl {
    /// As written: the verdict reports it so.
    given: String,
    url: Url,
}

impl PageUrl {
    pub fn parse(text: &str) -> Result<PageUrl, Error> {
        let Some(after_scheme) = text
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &text[7..])
        else {
            return Err(Error::NotHttp { url: text.into() });
        };
        // URL parsing as browsers do it skips extra slashes: `http:///index.php` would name
        // the host `index.php`.
        if after_scheme.starts_with(['/', '\\']) {
            return Err(Error::NoHost { url: text.into() });
        }
        let url = Url::parse(text).map_err(|source| match source {
            url::ParseError::EmptyHost => Error::NoHost { url: text.into() },
            source => Error::BadUrl {
                url: text.into(),
                source,
            },
        })?;
        Ok(PageUrl {
            given: text.to_string(),
            url,
        })
    }

    /// Whether anything listens at the page's host and port, checked before anything is
    /// switched: with nothing there the run would only measure failures while flipping the
    /// live site. A connection and no request: a request would compile the page into
    /// OPcache before the first switch and change what is measured.
    pub fn reachable(&self, timeout: std::time::Duration) -> Result<(), String> {
        let addrs = self
            .url
            .socket_addrs(|| Some(80))
            .map_err(|e| format!("cannot resolve the host: {e}"))?;
        let mut last = String::from("the host has no address");
        for addr in addrs {
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    }

    pub fn as_given(&self) -> &str {
        &self.given
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The absolute URL of a reference in the page; `None` for another origin (scheme, host
    /// or port), a scheme without one (`data:`, `javascript:`…), an empty reference or a
    /// bare fragment. The query stays, the fragment goes, `.` and `..` segments are resolved.
    pub(crate) fn resolve(&self, reference: &str) -> Option<Url> {
        let reference = reference.trim_matches(|c: char| c.is_ascii_whitespace());
        // Both would resolve to the page itself, which is not an asset.
        if reference.is_empty() || reference.starts_with('#') {
            return None;
        }
        let mut url = self.url.join(reference).ok()?;
        if url.origin() != self.url.origin() {
            return None;
        }
        url.set_fragment(None);
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::PageUrl;
    use crate::Error;

    fn resolve(page: &str, reference: &str) -> Option<String> {
        PageUrl::parse(page)
            .unwrap()
            .resolve(reference)
            .map(String::from)
    }

    #[test]
    fn only_http_urls_with_a_host_are_pages() {
        for url in [
            "http://127.0.0.1/index.php",
            "http://h",
            "http://[::1]:8080/",
            "http://h:8080/shop/?page=1#top",
        ] {
            assert_eq!(PageUrl::parse(url).unwrap().as_given(), url);
        }
        for url in [
            "https://h/",
            "ftp://h/",
            "h/index.php",
            "http:h/index.php",
            " http://h/",
            "",
        ] {
            assert!(
                matches!(PageUrl::parse(url), Err(Error::NotHttp { .. })),
                "{url}"
            );
        }
        for url in [
            "http://",
            "http:///index.php",
            "http://\\h/",
            "http://?q",
            "http://#f",
        ] {
            assert!(
                matches!(PageUrl::parse(url), Err(Error::NoHost { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn a_malformed_url_is_refused_with_the_reason() {
        for url in ["http://[::1", "http://h:99999/", "http://a b/"] {
            let error = PageUrl::parse(url).unwrap_err();
            assert!(matches!(error, Error::BadUrl { .. }), "{url}: {error:?}");
        }
        assert_eq!(
            PageUrl::parse("http://[::1").unwrap_err().to_string(),
            "`http://[::1` is not a valid URL: invalid IPv6 address"
        );
    }

    #[test]
    fn the_scheme_and_host_match_in_any_case() {
        let page = PageUrl::parse("HTTP://Example.COM:8080/a/").unwrap();
        assert_eq!(page.as_given(), "HTTP://Example.COM:8080/a/");
        assert_eq!(page.url().as_str(), "http://example.com:8080/a/");
        assert_eq!(
            resolve(
                "HTTP://Example.COM:8080/a/",
                "Http://EXAMPLE.com:8080/x.css"
            ),
            Some("http://example.com:8080/x.css".into())
        );
    }

    #[test]
    fn the_default_port_is_the_same_origin_written_or_not() {
        assert_eq!(
            resolve("http://h:80/", "http://h/x.css"),
            Some("http://h/x.css".into())
        );
        assert_eq!(
            resolve("http://h/", "//h:80/x.css"),
            Some("http://h/x.css".into())
        );
        assert_eq!(resolve("http://h/", "http://h:8080/x.css"), None);
    }

    #[test]
    fn references_resolve_as_a_browser_resolves_them() {
        let page = "http://h/shop/index.php?page=1";
        assert_eq!(
            resolve(page, " img/../css/a.css?v=1#x "),
            Some("http://h/shop/css/a.css?v=1".into())
        );
        assert_eq!(resolve(page, "/a/./b/../c"), Some("http://h/a/c".into()));
        assert_eq!(resolve(page, "../.."), Some("http://h/".into()));
        assert_eq!(
            resolve(page, "?q=2"),
            Some("http://h/shop/index.php?q=2".into())
        );
        for elsewhere in [
            "",
            "  ",
            "#top",
            "https://h/a.css",
            "//cdn.example.com/a.css",
            "data:text/css,body{}",
            "javascript:void(0)",
            "mailto:a@h",
            "http://[::1/a.css",
        ] {
            assert_eq!(resolve(page, elsewhere), None, "{elsewhere}");
        }
    }
}
