//! The assets a browser fetches as soon as it has a page.

use url::Url;

use crate::page_url::PageUrl;

/// The same-origin assets a browser fetches as soon as it has `html`, in page order, each
/// once, at most `cap`: `<link href>` whose `rel` loads something (stylesheet, icon,
/// preload, modulepreload, manifest), `<script src>`, `<img src>`. A small tolerant
/// scanner, not an HTML parser: it skips comments and the insides of `<script>` and
/// `<style>`, and does not see `<base href>`, `srcset`, `<source>`, `url()` in CSS,
/// `@import`, or markup written by scripts; of character references it decodes `&amp;`.
pub(crate) fn page_assets(page: &PageUrl, html: &str, cap: usize) -> Vec<Url> {
    // ASCII lowercasing keeps every byte offset, so `lower` and `html` index alike.
    let lower = html.to_ascii_lowercase();
    let mut found: Vec<Url> = Vec::new();
    let mut at = 0;
    while found.len() < cap {
        let Some(open) = lower[at..].find('<').map(|offset| at + offset) else {
            break;
        };
        if lower[open..].starts_with("<!--") {
            at = lower[open..]
                .find("-->")
                .map_or(lower.len(), |end| open + end + 3);
            continue;
        }
        let name_end = lower[open + 1..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(lower.len(), |end| open + 1 + end);
        let name = &lower[open + 1..name_end];
        at = name_end;
        if !matches!(name, "link" | "script" | "img" | "style") {
            continue;
        }
        let (attributes, end) = attributes(html, name_end);
        at = end;
        let value = |wanted: &str| {
            attributes
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| *value)
        };
        let reference = match name {
            "link" => value("rel")
                .filter(|rel| {
                    rel.split_ascii_whitespace().any(|token| {
                        ["stylesheet", "icon", "preload", "modulepreload", "manifest"]
                            .iter()
                            .any(|loads| token.eq_ignore_ascii_case(loads))
                    })
                })
                .and(value("href")),
            "img" => value("src"),
            _ => {
                // Raw text: whatever looks like a tag in a script or a style is not one.
                let close = format!("</{name}");
                at = lower[at..].find(&close).map_or(lower.len(), |end| at + end);
                value("src").filter(|_| name == "script")
            }
        };
        let reference = reference.map(|value| value.replace("&amp;", "&").replace("&#38;", "&"));
        if let Some(url) = reference.and_then(|reference| page.resolve(&reference)) {
            if !found.contains(&url) {
                found.push(url);
            }
        }
    }
    found
}

/// A tag's attributes from just after its name to its `>`: names lowercased, values as
/// written (quoted or not); and where the tag ends.
fn attributes(html: &str, from: usize) -> (Vec<(String, &str)>, usize) {
    let bytes = html.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut found = Vec::new();
    let mut i = from;
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        match bytes.get(i) {
            None => return (found, bytes.len()),
            Some(b'>') => return (found, i + 1),
            Some(_) => {}
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        if i == start {
            // A stray `=`: step over it.
            i += 1;
            continue;
        }
        let name = html[start..i].to_ascii_lowercase();
        i = skip_space(i);
        let mut value = "";
        if bytes.get(i) == Some(&b'=') {
            i = skip_space(i + 1);
            match bytes.get(i) {
                Some(&quote) if quote == b'"' || quote == b'\'' => {
                    let start = i + 1;
                    let end = html[start..]
                        .find(quote as char)
                        .map_or(bytes.len(), |end| start + end);
                    value = &html[start..end];
                    i = (end + 1).min(bytes.len());
                }
                _ => {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = &html[start..i];
                }
            }
        }
        found.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::page_assets;
    use crate::page_url::PageUrl;

    fn assets(page: &str, html: &str) -> Vec<String> {
        page_assets(&PageUrl::parse(page).unwrap(), html, 16)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn assets_are_same_origin_references_resolved_against_the_page() {
        let html = r##"<!doctype html><html><head>
            <link rel="stylesheet" href="/css/app.1111.css?v=2&amp;x=1">
            <LINK REL='shortcut icon' HREF='favicon.ico'>
            <link rel="canonical" href="/shop/cart">
            <link rel=preload href=../fonts/a.woff2 as=font>
            <script src="js/app.js#main" defer></script>
            <script>document.write('<img src="/not/a/tag.png">')</script>
            <!-- <img src="/commented.png"> -->
            <img alt="x > y" src="./img/../img/logo.png"/>
            <img src="http://127.0.0.1:8080/abs/same.png">
            <img src="//127.0.0.1:8080/proto/relative.png">
            <img src="http://cdn.example.com/external.png">
            <img src="//cdn.example.com/external.png">
            <img src="https://127.0.0.1:8080/other-scheme.png">
            <img src="http://127.0.0.1:9090/other-port.png">
            <img src="data:image/png;base64,iVBORw0KGgo=">
            <img src="javascript:void(0)">
            <img src="#top">
            <img src="">
            <img src="/css/app.1111.css?v=2&x=1">
            </head></html>"##;
        assert_eq!(
            assets("http://127.0.0.1:8080/shop/index.php?page=1", html),
            [
                "http://127.0.0.1:8080/css/app.1111.css?v=2&x=1",
                "http://127.0.0.1:8080/shop/favicon.ico",
                "http://127.0.0.1:8080/fonts/a.woff2",
                "http://127.0.0.1:8080/shop/js/app.js",
                "http://127.0.0.1:8080/shop/img/logo.png",
                "http://127.0.0.1:8080/abs/same.png",
                "http://127.0.0.1:8080/proto/relative.png",
            ]
        );
    }

    #[test]
    fn assets_tolerate_odd_pages_and_stay_bounded() {
        assert_eq!(assets("http://h/", ""), Vec::<String>::new());
        assert_eq!(assets("http://h", "<img src=a.png"), ["http://h/a.png"]);
        assert_eq!(
            assets("http://h/p", "<img = src=\"x.png\"><script src='/s.js'"),
            ["http://h/x.png", "http://h/s.js"]
        );
        // Written as the request line carries it: the url crate percent-encodes the path.
        assert_eq!(
            assets("http://h/", "<img src=\"/ü/é.png\"> <"),
            ["http://h/%C3%BC/%C3%A9.png"]
        );
        assert_eq!(
            assets("http://h/a/b/", "<img src=\"../..\"><img src=\"?q=1\">"),
            ["http://h/", "http://h/a/b/?q=1"]
        );
        let many: String = (0..40).map(|n| format!("<img src=\"/{n}.png\">")).collect();
        let capped = assets("http://h/", &many);
        assert_eq!(capped.len(), 16);
        assert_eq!(capped[15], "http://h/15.png");
        assert!(PageUrl::parse("http:///index.php").is_err());
        assert!(PageUrl::parse("https://h/").is_err());
    }

    #[test]
    fn only_loading_links_and_script_sources_count() {
        let html = r#"<link rel="alternate" href="/feed.xml">
            <link href="/no-rel.css">
            <link rel="MODULEPRELOAD" href="/m.js"><link rel="manifest" href="/site.webmanifest">
            <style>img { background: url(/bg.png) } <img src="/in-style.png"></style>
            <script src="/s.js">var x = "</scr" + "ipt><img src='/in-script.png'>";</script>
            <img src="/after.png?a=1&#38;b=2">"#;
        assert_eq!(
            assets("http://h/", html),
            [
                "http://h/m.js",
                "http://h/site.webmanifest",
                "http://h/s.js",
                "http://h/after.png?a=1&b=2",
            ]
        );
    }
}
